"""Model-plane speed, side by side in one run.

1. Input pipeline: posters/s of ``images.make_dataset`` (tf.data, parallel decode + letterbox + prefetch) against a
   bare sequential PIL decode+resize loop, also per core.
2. Training work: the retrain's way (embed every poster once, then train each head on the cached features)
   against the report's way (train every model end to end from pixels with the frozen backbone), for the
   multi-class model and ``--members`` OvA members with the same hyperparameters and epochs, and their test
   macro-F1 side by side (the two ways train the same model: ``tests/test_features.py`` proves it).

Run: ``python -m benchmarks.bench_training [--movies N --backbone efficientnetv2b0 --image-size 96 --epochs 3]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def _macro_f1(y_true: np.ndarray, proba: np.ndarray) -> float:
    from postergenre.evaluation import multiclass_metrics

    k = proba.shape[1]
    if k == 1:
        proba = np.concatenate([1 - proba, proba], axis=1)
        k = 2
    return multiclass_metrics(y_true, proba, [str(i) for i in range(k)])["macro_f1"]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--movies", type=int, default=3000)
    parser.add_argument("--backbone", default="efficientnetv2b0")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--members", type=int, default=2, help="OvA members to train both ways")
    parser.add_argument("--pipeline-posters", type=int, default=400)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import keras
    import tensorflow as tf

    from postergenre.config import Settings
    from postergenre.datasets import load_labels, load_ova
    from postergenre.features import embed_with
    from postergenre.images import decode_resize_reference, make_dataset
    from postergenre.labels import one_hot
    from postergenre.models import build_backbone, build_classifier, build_head, compile_head
    from postergenre.pipeline import data_store, ingest_snapshot, prepare_dataset
    from postergenre.synth import generate_snapshot
    from postergenre.training import binary_data, fit_head, multiclass_data

    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="pg-bench-train-") as tmp:
        settings = Settings(home=Path(tmp) / "home")
        export = generate_snapshot(Path(tmp) / "export", movies=args.movies, seed=3)
        ingest_snapshot(str(export.out), snapshot_id="bench", settings=settings)
        prepare_dataset("bench", settings=settings)
        store = data_store(settings)
        labels = load_labels(store, "bench", settings.seed)
        poster_dir = export.out / "posters"
        path_of = {int(p.stem): p for p in poster_dir.glob("*.jpg")}

        # 1. input pipeline
        sample = [path_of[i] for i in labels["movie_id"][: args.pipeline_posters]]
        start = time.perf_counter()
        decode_resize_reference(sample, 224)
        t_ref = time.perf_counter() - start
        start = time.perf_counter()
        dataset, _ = make_dataset(sample, None, image_size=224, batch_size=settings.batch_size)
        for _ in dataset:
            pass
        t_tfdata = time.perf_counter() - start
        rate_ref, rate_tf = len(sample) / t_ref, len(sample) / t_tfdata
        print(f"\n== input pipeline, {len(sample)} posters at 224 px, {cores} cores ==")
        print(f"  bare PIL decode+resize loop (1 core)   {rate_ref:8.1f} posters/s")
        print(f"  make_dataset (tf.data)                  {rate_tf:8.1f} posters/s")
        print(f"  ratio per core                          {rate_tf / cores / rate_ref:8.2f}x  (target >= 0.9)")

        # 2. training work
        backbone = build_backbone(args.backbone, weights="none", image_size=args.image_size, seed=0)
        classes = sorted(set(labels["genre"].astype(str)))
        members = classes[: args.members]
        fit = dict(units=128, dropout=False, max_epochs=args.epochs, batch_size=64, seed=0, patience=args.epochs)

        start = time.perf_counter()
        features = {}
        for split in ("train", "val", "test"):
            ids = labels.loc[labels["split"].astype(str) == split, "movie_id"].to_numpy(np.int64)
            feats, kept, _ = embed_with(backbone, [path_of[int(i)] for i in ids], image_size=args.image_size,
                                        batch_size=settings.batch_size)
            features[split] = (ids[kept], feats)
        t_embed = time.perf_counter() - start
        cached_f1, start = {}, time.perf_counter()
        data = multiclass_data(features, labels, classes)
        head, _ = fit_head(data, kind="multiclass", **fit)
        cached_f1["genre-cnn"] = _macro_f1(np.argmax(data.y_test, 1), head.predict(data.x_test, verbose=0))
        for genre in members:
            bdata = binary_data(features, load_ova(store, "bench", settings.seed, genre))
            head, _ = fit_head(bdata, kind="binary", **fit)
            cached_f1[genre] = _macro_f1(bdata.y_test[:, 0].astype(int), head.predict(bdata.x_test, verbose=0))
        t_heads = time.perf_counter() - start

        def pixels(frame, targets):
            out = {}
            for split in ("train", "val", "test"):
                rows = np.flatnonzero(frame["split"].astype(str).to_numpy() == split)
                ds, _ = make_dataset([path_of[int(i)] for i in frame["movie_id"].to_numpy()[rows]],
                                     targets[rows].astype("float32"), image_size=args.image_size,
                                     batch_size=64, shuffle_seed=0 if split == "train" else None)
                out[split] = (ds, targets[rows])
            return out

        e2e_f1, start = {}, time.perf_counter()
        jobs = [("genre-cnn", labels, one_hot(labels["genre"].astype(str), classes), "multiclass")]
        for genre in members:
            ova = load_ova(store, "bench", settings.seed, genre)
            jobs.append((genre, ova, ova["label"].to_numpy().reshape(-1, 1), "binary"))
        for name, frame, targets, kind in jobs:
            keras.utils.set_random_seed(0)
            splits = pixels(frame, targets)
            model = build_classifier(backbone, build_head(backbone.output_shape[-1], units=128, dropout=False,
                                                          n_outputs=targets.shape[1], seed=0))
            compile_head(model, kind)
            model.fit(splits["train"][0], validation_data=splits["val"][0], epochs=args.epochs, verbose=0,
                      callbacks=[keras.callbacks.EarlyStopping(patience=args.epochs, restore_best_weights=True)])
            proba = model.predict(splits["test"][0], verbose=0)
            y = splits["test"][1]
            e2e_f1[name] = _macro_f1(np.argmax(y, 1) if y.shape[1] > 1 else y[:, 0].astype(int), proba)
        t_e2e = time.perf_counter() - start
        del tf

    n_models = 1 + len(members)
    print(f"\n== training work: {n_models} models ({args.backbone} frozen, {args.image_size} px, "
          f"{args.epochs} epochs, {len(labels)} movies) ==")
    print(f"  embed once (all splits)                 {t_embed:8.1f} s")
    print(f"  train {n_models} heads on cached features       {t_heads:8.1f} s")
    print(f"  cached total                            {t_embed + t_heads:8.1f} s")
    print(f"  end to end from pixels (report's way)   {t_e2e:8.1f} s")
    ratio = t_e2e / (t_embed + t_heads)
    print(f"  speed-up                                {ratio:8.1f}x  (target >= 10x for the 20 models of a retrain)")
    per_model_e2e = t_e2e / n_models
    full = (per_model_e2e * 20) / (t_embed + t_heads / n_models * 20)
    print(f"  projected to 20 models (1 CNN + 19 OvA) {full:8.1f}x")
    print("  test macro-F1 (cached vs end to end):")
    for name in cached_f1:
        print(f"    {name:<20} {cached_f1[name]:.3f}  vs  {e2e_f1[name]:.3f}")
    return {"pipeline_ratio_per_core": rate_tf / cores / rate_ref, "speedup": ratio, "projected_20": full}


if __name__ == "__main__":
    main()
