"""A head task's work in a fresh process (tests/test_airflow_preload.py): prints the backend head_backend() chose
and, last, whether Keras imported TensorFlow behind it while training, saving and loading models."""

import sys
import tempfile
from pathlib import Path

from postergenre.task_guards import head_backend


def main() -> None:
    print(head_backend())  # before Keras is imported, as a task does
    import keras
    import numpy as np

    from postergenre.models import build_backbone, build_classifier, build_head
    from postergenre.training import HeadData, train_ova_member
    from postergenre.tuning import fit_kwargs, with_defaults

    rng = np.random.default_rng(0)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        return rng.normal(size=(n, 32)).astype("float32"), (rng.random((n, 1)) > 0.7).astype("float32")

    data = HeadData(*split(300), *split(70), *split(70))
    hp = fit_kwargs(with_defaults({"units": 128, "dropout": True}), 128)
    head, _ = train_ova_member("Drama", data, **hp, max_epochs=2, seed=0)
    backbone = build_backbone("tiny", weights=None, image_size=32, seed=0)
    model = build_classifier(backbone, build_head(backbone.output_shape[-1], units=64, dropout=True, n_outputs=1))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        model.save(path)
        keras.models.load_model(path, compile=False).predict(np.zeros((2, 32, 32, 3), "float32"), verbose=0)
    head.predict(data.x_test, verbose=0)
    print(f"tf imported: {'tensorflow' in sys.modules}")


if __name__ == "__main__":
    main()
