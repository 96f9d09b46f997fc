"""Model-plane speed, side by side in one run.

1. Input pipeline: posters/s of ``images.make_dataset`` (tf.data, parallel decode + letterbox + prefetch) against a
   bare sequential PIL decode+resize loop, per core. ``make_dataset`` first scans every poster once
   (``scan_decodable``: exact skip counts before training), then decodes per epoch: the one-time scan, the
   steady per-epoch rate and a single pass including the scan are printed apart. CPU seconds per poster
   (all threads) are printed too: on a shared machine the wall-clock rate of a 2-thread pipeline depends on
   what else runs, its CPU cost per poster does not. TF's one-off function building is warmed up first.
2. Training work of a real retrain: ``--trials`` multi-class tuning trials (hyperparameters from
   ``tuning.plan_trials``), the multi-class model ``genre-cnn`` and ``--members`` one-vs-all members (both with
   the best trial's hyperparameters), trained both ways and timed, not projected: the retrain's way (embed
   every poster once, then ``training.fit_head`` on the cached features) and the report's way (every model end
   to end from pixels through the frozen backbone, each with its own ``make_dataset`` pipelines). Same
   hyperparameters, epochs and early stopping both ways; each model's test macro-F1 is printed side by side
   (the two ways train the same model: ``tests/test_features.py`` proves it). Every model is a fresh Keras
   model both ways, as in a retrain, where each head trains in its own Airflow task.

Run: ``python -m benchmarks.bench_training [--movies N --image-size 64 --epochs 3 --trials 4 --members 19]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

PATIENCE = 3  # the report's early-stopping patience, both ways
BATCH = 64


def _macro_f1(y_true: np.ndarray, proba: np.ndarray) -> float:
    from postergenre.evaluation import multiclass_metrics

    k = proba.shape[1]
    if k == 1:
        proba = np.concatenate([1 - proba, proba], axis=1)
        k = 2
    return multiclass_metrics(y_true, proba, [str(i) for i in range(k)])["macro_f1"]


def _classes_of(y: np.ndarray) -> np.ndarray:
    return np.argmax(y, 1) if y.shape[1] > 1 else y[:, 0].astype(int)


class _Clock:
    """Wall and process CPU seconds (every thread) of one block."""

    def __enter__(self) -> _Clock:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


def bench_pipeline(paths: list[Path], batch_size: int, cores: int) -> dict:
    """Posters/s and CPU ms/poster of the bare loop, the scan, a steady epoch and a scan + one epoch."""
    from postergenre.images import decode_resize_reference, make_dataset, scan_decodable

    n = len(paths)
    # Warm up (TF builds each pipeline's functions once per process; negligible over a real snapshot).
    for _ in make_dataset(paths[:8], None, image_size=224, batch_size=batch_size)[0]:
        pass
    with _Clock() as bare:
        decode_resize_reference(paths, 224)
    with _Clock() as scan:
        scan_decodable(paths)
    with _Clock() as first:
        dataset, _ = make_dataset(paths, None, image_size=224, batch_size=batch_size)
        for _ in dataset:
            pass
    with _Clock() as epochs:  # steady state: two more epochs of the same dataset
        for _ in range(2):
            for _ in dataset:
                pass
    rate_bare = n / bare.wall
    rates = {"scan": n / scan.wall, "epoch": 2 * n / epochs.wall, "first": n / first.wall}
    cpu_ms = {
        "bare": 1e3 * bare.cpu / n,
        "scan": 1e3 * scan.cpu / n,
        "epoch": 1e3 * epochs.cpu / (2 * n),
        "first": 1e3 * first.cpu / n,
    }
    load = os.getloadavg()[0]
    print(f"\n== input pipeline, {n} posters at 224 px, {cores} cores, load average {load:.2f} ==")
    print(f"  {'':44s} {'posters/s':>10s} {'CPU ms/poster':>14s} {'per core vs bare':>17s}")
    print(f"  {'bare PIL decode+resize loop (1 core)':44s} {rate_bare:10.1f} {cpu_ms['bare']:14.2f}")
    rows = (
        ("scan", "one-time decodability scan (per dataset)"),
        ("epoch", "make_dataset, per epoch (steady state)"),
        ("first", "make_dataset, scan + first epoch"),
    )
    for key, label in rows:
        ratio = rates[key] / cores / rate_bare
        print(f"  {label:44s} {rates[key]:10.1f} {cpu_ms[key]:14.2f} {ratio:16.2f}x")
    print(
        f"  per-epoch target >= 0.9x per core; CPU cost per poster: bare / tf.data epoch = "
        f"{cpu_ms['bare'] / cpu_ms['epoch']:.2f}x"
    )
    return {
        "pipeline_epoch_ratio_per_core": rates["epoch"] / cores / rate_bare,
        "pipeline_first_pass_ratio_per_core": rates["first"] / cores / rate_bare,
        "pipeline_cpu_ratio": cpu_ms["bare"] / cpu_ms["epoch"],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--movies", type=int, default=1500, help="synthetic snapshot size (before labelling)")
    parser.add_argument("--backbone", default="efficientnetv2b0")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--trials", type=int, default=4, help="multi-class tuning trials (a retrain's n_trials)"
    )
    parser.add_argument("--members", type=int, default=19, help="one-vs-all members (19 in a retrain)")
    parser.add_argument("--pipeline-posters", type=int, default=1000)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import keras

    from postergenre.config import Settings
    from postergenre.datasets import load_labels, load_ova
    from postergenre.features import embed_with
    from postergenre.images import make_dataset
    from postergenre.labels import one_hot
    from postergenre.models import build_backbone, build_classifier, build_head, compile_head
    from postergenre.resources import data_store
    from postergenre.steps.ingest import ingest_snapshot
    from postergenre.steps.prepare import prepare_dataset
    from postergenre.synth import generate_snapshot
    from postergenre.training import binary_data, fit_head, multiclass_data
    from postergenre.tuning import plan_trials

    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="pg-bench-train-") as tmp:
        settings = Settings(home=Path(tmp) / "home")
        export = generate_snapshot(
            Path(tmp) / "export", movies=max(args.movies, args.pipeline_posters), seed=3
        )
        ingest_snapshot(str(export.out), snapshot_id="bench", settings=settings)
        prepare_dataset("bench", settings=settings)
        store = data_store(settings)
        labels = load_labels(store, "bench", settings.seed)
        path_of = {int(p.stem): p for p in (export.out / "posters").glob("*.jpg")}

        result = bench_pipeline(
            [path_of[i] for i in sorted(path_of)[: args.pipeline_posters]], settings.batch_size, cores
        )

        # 2. training work: the same models, hyperparameters and epochs both ways
        backbone = build_backbone(args.backbone, weights="none", image_size=args.image_size, seed=0)
        classes = sorted(set(labels["genre"].astype(str)))
        members = classes[: args.members]
        multiclass_targets = one_hot(labels["genre"].astype(str), classes)
        ova = {genre: load_ova(store, "bench", settings.seed, genre) for genre in members}
        trials = plan_trials(args.trials, settings.seed, max_epochs=args.epochs)

        def fit_cached(data, kind, hp):
            head, summary = fit_head(
                data,
                kind=kind,
                units=hp["units"],
                dropout=hp["dropout"],
                max_epochs=args.epochs,
                batch_size=BATCH,
                seed=0,
                patience=PATIENCE,
            )
            return _macro_f1(_classes_of(data.y_test), head.predict(data.x_test, verbose=0)), summary

        cached_f1: dict[str, float] = {}
        with _Clock() as embed_clock:
            features = {}
            for split in ("train", "val", "test"):
                ids = labels.loc[labels["split"].astype(str) == split, "movie_id"].to_numpy(np.int64)
                feats, kept, _ = embed_with(
                    backbone,
                    [path_of[int(i)] for i in ids],
                    image_size=args.image_size,
                    batch_size=settings.batch_size,
                )
                features[split] = (ids[kept], feats)
        with _Clock() as heads_clock:
            data = multiclass_data(features, labels, classes)
            val_loss = {}
            for trial in trials:
                name = f"trial {trial['trial_id']} {trial['hp']['units']}u{'+do' if trial['hp']['dropout'] else ''}"
                cached_f1[name], summary = fit_cached(data, "multiclass", trial["hp"])
                val_loss[name] = (summary["val_loss"], trial["hp"])
            best = min(val_loss.values(), key=lambda v: v[0])[1]
            cached_f1["genre-cnn"], _ = fit_cached(data, "multiclass", best)
            for genre in members:
                cached_f1[genre], _ = fit_cached(binary_data(features, ova[genre]), "binary", best)

        def fit_end_to_end(frame, targets, kind, hp):
            keras.utils.set_random_seed(0)
            datasets = {}
            for split in ("train", "val", "test"):
                rows = np.flatnonzero(frame["split"].astype(str).to_numpy() == split)
                datasets[split], _ = make_dataset(
                    [path_of[int(i)] for i in frame["movie_id"].to_numpy()[rows]],
                    targets[rows].astype("float32"),
                    image_size=args.image_size,
                    batch_size=BATCH,
                    shuffle_seed=0 if split == "train" else None,
                )
            head = build_head(
                backbone.output_shape[-1],
                units=hp["units"],
                dropout=hp["dropout"],
                n_outputs=targets.shape[1],
                seed=0,
            )
            model = compile_head(build_classifier(backbone, head), kind)
            model.fit(
                datasets["train"],
                validation_data=datasets["val"],
                epochs=args.epochs,
                verbose=0,
                callbacks=[keras.callbacks.EarlyStopping(patience=PATIENCE, restore_best_weights=True)],
            )
            y_test = targets[frame["split"].astype(str).to_numpy() == "test"]
            return _macro_f1(_classes_of(y_test), model.predict(datasets["test"], verbose=0))

        e2e_f1: dict[str, float] = {}
        with _Clock() as e2e_clock:
            for trial, name in zip(trials, list(cached_f1)[: len(trials)], strict=True):
                e2e_f1[name] = fit_end_to_end(labels, multiclass_targets, "multiclass", trial["hp"])
            e2e_f1["genre-cnn"] = fit_end_to_end(labels, multiclass_targets, "multiclass", best)
            for genre in members:
                frame = ova[genre]
                e2e_f1[genre] = fit_end_to_end(
                    frame, frame["label"].to_numpy().reshape(-1, 1), "binary", best
                )

    n_models = len(cached_f1)
    cached = embed_clock.wall + heads_clock.wall
    print(
        f"\n== training work of a retrain: {n_models} models = {len(trials)} trials + genre-cnn + "
        f"{len(members)} OvA members ({args.backbone} frozen, {args.image_size} px, {args.epochs} epochs, "
        f"{len(labels)} labelled movies, load average {os.getloadavg()[0]:.2f}) =="
    )
    print(f"  embed once (all splits)                 {embed_clock.wall:8.1f} s")
    print(
        f"  train {n_models} heads on cached features     {heads_clock.wall:8.1f} s"
        f"  ({heads_clock.wall / n_models:.2f} s per head)"
    )
    print(f"  cached total                            {cached:8.1f} s")
    print(
        f"  end to end from pixels (report's way)   {e2e_clock.wall:8.1f} s"
        f"  ({e2e_clock.wall / n_models:.2f} s per model)"
    )
    speedup = e2e_clock.wall / cached
    print(f"  speed-up, measured                      {speedup:8.1f}x  (target >= 10x)")
    print(f"  test macro-F1 (cached vs end to end; best trial's hyperparameters {best}):")
    for name in cached_f1:
        print(f"    {name:<24} {cached_f1[name]:.3f}  vs  {e2e_f1[name]:.3f}")
    gaps = [abs(cached_f1[k] - e2e_f1[k]) for k in cached_f1]
    print(f"  largest macro-F1 gap {max(gaps):.3f}, mean {np.mean(gaps):.3f}")
    return {**result, "speedup": speedup, "models": n_models, "max_f1_gap": max(gaps)}


if __name__ == "__main__":
    main()
