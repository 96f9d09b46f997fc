"""Head quality against the linear probe, side by side on one synthetic snapshot.

Prints test macro-F1 with bootstrap 95% CIs (and each contender's paired difference to the probe) for:
the linear probe (``probe.fit_probe``), the tuned genre-cnn head of the report's search space
(``tuning.search_space("report")``: units, dropout), the tuned head of the regularised space
(``search_space()``), and the one-vs-all ensemble as argmax (members as a retrain trains them: ``members``' bags
of the report's 70/30 set), uncalibrated, Platt-calibrated per member and vector-scaled (all members jointly) on
val (``calibration.py``), with the report's single-draw member beside it, plus seconds per tuning trial. Synthetic posters are easier than real ones, so a head is
judged against its own probe, not by its raw score.

Data: ``synth.generate_snapshot`` -> ``labels.prepare_labels`` -> pooled ``lite0`` features (ImageNet weights
from ``lite0.ensure_lite0_weights``, offline). Features are cached under ``--cache`` (keyed by movies, seed and
image size), so a rerun skips the snapshot and the embed pass.

Run: ``python -m benchmarks.bench_quality [--movies 20000 --image-size 96 --trials 12 --old-trials 4]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

SEED = 42


def _cache_path(cache: Path, movies: int, snapshot_seed: int, image_size: int) -> Path:
    return cache / f"lite0-{movies}m-s{snapshot_seed}-{image_size}px.npz"


def embedded_snapshot(movies: int, snapshot_seed: int, image_size: int, cache: Path) -> dict:
    """``{"rows": DataFrame(movie_id, genre), "ids": int64[n], "features": float16[n, d]}`` for every movie
    with a decodable poster; computed once per (movies, seed, image size) and kept in ``cache``."""
    import pandas as pd

    path = _cache_path(cache, movies, snapshot_seed, image_size)
    if path.is_file():
        with np.load(path, allow_pickle=False) as npz:
            rows = pd.DataFrame({"movie_id": npz["row_ids"], "genre": npz["row_genres"].astype(str)})
            return {"rows": rows, "ids": npz["ids"], "features": npz["features"]}
    from postergenre.features import embed_with
    from postergenre.lite0 import ensure_lite0_weights
    from postergenre.models import build_backbone
    from postergenre.synth import generate_snapshot

    with tempfile.TemporaryDirectory(prefix="pg-bench-quality-") as tmp:
        export = generate_snapshot(Path(tmp) / "export", movies=movies, seed=snapshot_seed)
        rows = pd.read_csv(export.out / "genres.csv", dtype={"id": "int64", "genre": "string"})
        rows = rows.rename(columns={"id": "movie_id"})
        # Every movie: the weighted balance trains on the movies undersampling drops, too.
        wanted = np.unique(rows["movie_id"].to_numpy(np.int64))
        backbone = build_backbone("lite0", weights=ensure_lite0_weights(), image_size=image_size)
        paths = [export.out / "posters" / f"{i}.jpg" for i in wanted]
        started = time.perf_counter()
        features, kept, _ = embed_with(backbone, paths, image_size=image_size, batch_size=64)
        print(f"embedded {kept.sum()} posters at {image_size}px in {time.perf_counter() - started:.0f} s")
    cache.mkdir(parents=True, exist_ok=True)
    tmp_path = path.with_suffix(".tmp.npz")
    np.savez(
        tmp_path,
        row_ids=rows["movie_id"].to_numpy(np.int64),
        row_genres=np.asarray(rows["genre"].astype(str), dtype=str),  # not object: loads without pickle
        ids=wanted[kept],
        features=features,
    )
    os.replace(tmp_path, path)
    return {"rows": rows, "ids": wanted[kept], "features": features}


def _features_by_split(data: dict, labels) -> dict:
    """Each split's (movie_ids, features) from the cached matrix, for ``training.multiclass_data``."""
    index = {int(m): i for i, m in enumerate(data["ids"])}
    out = {}
    for split in ("train", "val", "test"):
        ids = labels.loc[labels["split"].astype(str) == split, "movie_id"].to_numpy(np.int64)
        ids = np.array([m for m in ids if int(m) in index], dtype=np.int64)
        out[split] = (ids, data["features"][[index[int(m)] for m in ids]])
    return out


def _tune(head_data, space: str, n: int, max_epochs: int, batch_size: int) -> dict:
    """Random search as a retrain runs it (``plan_trials`` + ``fit_head`` per trial, ``select_best``), keeping the
    winner's head (the trained candidate equals it: same hyperparameters, seed and epochs)."""
    from postergenre.training import fit_head
    from postergenre.tuning import fit_kwargs, plan_trials, select_best

    results, heads, seconds, cpu = [], {}, [], []
    for trial in plan_trials(n, SEED, max_epochs=max_epochs, space=space):
        started, cpu_started = time.perf_counter(), time.process_time()
        head, summary = fit_head(
            head_data,
            kind="multiclass",
            max_epochs=trial["epochs"],
            seed=SEED,
            **fit_kwargs(trial["hp"], batch_size),
        )
        seconds.append(time.perf_counter() - started)
        cpu.append(
            time.process_time() - cpu_started
        )  # all threads: steadier than wall time on a busy machine
        results.append({"trial_id": trial["trial_id"], "hp": trial["hp"], **summary})
        heads[trial["trial_id"]] = head
    best = select_best(results)
    return {"best": best, "head": heads[best["trial_id"]], "seconds": seconds, "cpu": cpu, "results": results}


def _ova(features, prepared, hp: dict, max_epochs: int, batch_size: int, multiclass) -> dict:
    """Every genre's member as a retrain trains it (``members``: ``MEMBER_BAGS`` heads on draws of the report's
    70/30 set, label smoothing off); its scores, and bag 0's alone (the report's single member), on the
    multi-class val and test rows."""
    from postergenre.members import MEMBER_BAGS, bag_data, bag_sets, member_hp, train_bagged_member
    from postergenre.tuning import fit_kwargs

    def predict(model, x):
        return model.predict(x, verbose=0, batch_size=1024)[:, 0]

    out: dict = {"val": [], "test": [], "val_bag0": [], "test_bag0": [], "own_val": []}
    started = time.perf_counter()
    for genre in prepared.classes:
        sets = bag_sets(prepared.labels, prepared.ova[genre], genre, SEED, prepared.balance, MEMBER_BAGS)
        bags = bag_data(features, sets)
        head, _ = train_bagged_member(
            genre, bags, max_epochs=max_epochs, seed=SEED, **fit_kwargs(member_hp(hp), batch_size)
        )
        first = head.get_layer("bag_0") if MEMBER_BAGS > 1 else head
        out["val"].append(predict(head, multiclass.x_val))
        out["test"].append(predict(head, multiclass.x_test))
        out["val_bag0"].append(predict(first, multiclass.x_val))
        out["test_bag0"].append(predict(first, multiclass.x_test))
        out["own_val"].append((predict(head, bags[0].x_val), bags[0].y_val[:, 0]))
    arrays = {k: np.column_stack(v) for k, v in out.items() if k != "own_val"}
    return {**arrays, "own_val": out["own_val"], "bags": MEMBER_BAGS, "seconds": time.perf_counter() - started}


def _val_cv_macro_f1(scores: np.ndarray, y: np.ndarray, fit, k: int) -> float:
    """Macro-F1 of the calibrated argmax on val, each fold calibrated on the other four (5-fold, stratified,
    seeded): an out-of-sample val figure for choosing a calibration."""
    from sklearn.metrics import f1_score
    from sklearn.model_selection import StratifiedKFold

    from postergenre.calibration import calibrate_matrix

    pred = np.zeros(len(y), dtype=int)
    for fit_rows, score_rows in StratifiedKFold(5, shuffle=True, random_state=0).split(scores, y):
        pred[score_rows] = calibrate_matrix(scores[score_rows], fit(scores[fit_rows], y[fit_rows])).argmax(1)
    return float(f1_score(y, pred, labels=np.arange(k), average="macro", zero_division=0))


def _row(
    name: str, y: np.ndarray, pred: np.ndarray, probe_pred: np.ndarray | None, k: int, note: str
) -> list:
    from postergenre.evaluation import bootstrap_macro_f1, paired_bootstrap_macro_f1

    one = bootstrap_macro_f1(y, pred, k, n_bootstrap=1000, seed=0)
    cells = [name, f"{one['macro_f1']:.4f}", f"[{one['ci_low']:.3f}, {one['ci_high']:.3f}]"]
    if probe_pred is None:
        cells.append("")
    else:
        d = paired_bootstrap_macro_f1(y, pred, probe_pred, k, n_bootstrap=1000, seed=0)
        cells.append(f"{d['delta']:+.4f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]")
    return [*cells, note]


def _print_table(title: str, rows: list[list]) -> None:
    header = ["model", "test macro-F1", "95% CI", "vs probe (paired 95% CI)", "notes"]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n== {title} ==")
    for r in [header, *rows]:
        print("  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))


def _hp_text(hp: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in hp.items())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--movies", type=int, default=20000, help="synthetic snapshot size (>= 3000)")
    parser.add_argument("--snapshot-seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--trials", type=int, default=24, help="trials of the regularised search space")
    parser.add_argument(
        "--old-trials", type=int, default=4, help="trials of the report's space (its default)"
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=20,
        help="epoch budget per model, early-stopped (a retrain's default max_epochs)",
    )
    parser.add_argument("--batch-size", type=int, default=128, help="the run's batch size")
    parser.add_argument("--no-ova", action="store_true", help="skip the 19 one-vs-all members")
    parser.add_argument("--no-weighted", action="store_true", help="skip the weighted-balance row")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "pg-bench-quality")
    parser.add_argument("--embed-only", action="store_true", help="build the feature cache and stop")
    args = parser.parse_args(argv)
    if args.movies < 3000:
        parser.error("--movies must be at least 3000")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    data = embedded_snapshot(args.movies, args.snapshot_seed, args.image_size, args.cache)
    if args.embed_only:
        print(f"{len(data['ids'])} movies with features, width {data['features'].shape[1]}")
        return {}

    from postergenre.labels import prepare_labels
    from postergenre.probe import fit_probe
    from postergenre.training import multiclass_data

    prepared = prepare_labels(data["rows"], SEED)
    features = _features_by_split(data, prepared.labels)
    mc = multiclass_data(features, prepared.labels, prepared.classes)
    k, y_test = len(prepared.classes), mc.y_test.argmax(axis=1)
    print(
        f"\n{args.movies} movies, lite0 at {args.image_size}px: {len(mc.x_train)} train / {len(mc.x_val)} val / "
        f"{len(mc.x_test)} test rows, {k} genres, {mc.input_dim} features"
    )
    started = time.perf_counter()
    probe = fit_probe(mc.x_train, mc.y_train, mc.x_val, mc.y_val, predict={"test": mc.x_test})
    probe_seconds = time.perf_counter() - started
    probe_pred = probe.proba["test"].argmax(axis=1)
    rows = [
        _row(
            "linear probe",
            y_test,
            probe_pred,
            None,
            k,
            f"C={probe.C:.2g}, {probe_seconds:.0f} s for the C grid",
        )
    ]
    figures: dict = {"probe": float(rows[0][1])}

    def predict(head, x):
        return head.predict(x, verbose=0, batch_size=1024)

    contenders = {}
    for label, space, n in (
        ("report space", "report", args.old_trials),
        ("regularised space", "regularised", args.trials),
    ):
        tuned = _tune(mc, space, n, args.epochs, args.batch_size)
        contenders[space] = tuned
        per_trial, per_trial_cpu = float(np.mean(tuned["seconds"])), float(np.mean(tuned["cpu"]))
        train_acc = float(np.mean(predict(tuned["head"], mc.x_train).argmax(1) == mc.y_train.argmax(1)))
        pred = predict(tuned["head"], mc.x_test).argmax(axis=1)
        epochs = np.mean([r["epochs_run"] for r in tuned["results"]])
        note = (
            f"{n} trials, {per_trial:.1f} s ({per_trial_cpu:.1f} CPU s) and {epochs:.0f} epochs per trial; "
            f"train acc {train_acc:.2f}, val acc {tuned['best']['val_accuracy']:.2f}"
        )
        rows.append(_row(f"genre-cnn, {label}", y_test, pred, probe_pred, k, note))
        figures[f"genre-cnn {space}"] = float(rows[-1][1])
        figures[f"seconds per trial {space}"] = per_trial
        figures[f"cpu seconds per trial {space}"] = per_trial_cpu
        figures[f"pred {space}"] = pred
        print(f"  best of the {label}: {_hp_text(tuned['best']['hp'])}")

    best_hp = contenders["regularised"]["best"]["hp"]
    if not args.no_ova:
        figures.update(_ova_rows(features, prepared, best_hp, args, mc, probe_pred, rows))

    if not args.no_weighted:
        figures.update(_weighted_row(data, prepared, mc, best_hp, args, probe_pred, rows))
    _print_table(f"test macro-F1, bootstrap 95% CIs ({len(y_test)} test rows)", rows)
    _print_targets(figures, y_test, probe_pred, k)
    return {name: value for name, value in figures.items() if not name.startswith("pred ")}


def _print_targets(figures: dict, y_test: np.ndarray, probe_pred: np.ndarray, k: int) -> None:
    """The issue's two targets, each as a paired difference on the test rows."""
    from postergenre.evaluation import paired_bootstrap_macro_f1

    cnn = figures["pred regularised"]
    pairs = [("genre-cnn (regularised) - probe", cnn, probe_pred)]
    if "pred ova calibrated" in figures:
        pairs.append((f"OvA argmax ({figures['ova served']}, served) - genre-cnn", figures["pred ova calibrated"], cnn))
        pairs.append(("OvA argmax (Platt on val) - genre-cnn", figures["pred ova Platt on val"], cnn))
    print("  targets (>= 0 holds; paired bootstrap 95% CI):")
    for name, a, b in pairs:
        d = paired_bootstrap_macro_f1(y_test, a, b, k, n_bootstrap=1000, seed=0)
        verdict = "holds" if d["delta"] >= 0 else "misses"
        print(f"    {name}: {d['delta']:+.4f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] {verdict}")


def _ova_rows(features, prepared, hp, args, mc, probe_pred, rows) -> dict:
    """The OvA ensemble as argmax: raw, Platt per member and vector scaling (joint) on the multi-class val rows,
    Platt on each member's own val set, and the report's single-draw member for comparison."""
    from postergenre.calibration import IDENTITY, calibrate_matrix, fit_members, fit_platt, fit_vector_scaling

    k, y_val, y_test = mc.n_outputs, mc.y_val.argmax(axis=1), mc.y_test.argmax(axis=1)
    ova = _ova(features, prepared, hp, args.epochs, args.batch_size, mc)
    auc = _mean_auc(y_test, ova["test"]), _mean_auc(y_test, ova["test_bag0"])
    calibrations = {
        "uncalibrated": lambda s, y: [IDENTITY] * k,
        "Platt on val": fit_members,
        "vector scaling on val": fit_vector_scaling,
    }
    figures: dict = {}
    for name, fit in calibrations.items():
        pred = calibrate_matrix(ova["test"], fit(ova["val"], y_val)).argmax(1)
        cv = _val_cv_macro_f1(ova["val"], y_val, fit, k) if name != "uncalibrated" else None
        note = f"{k} members x {ova['bags']} bags, regularised best hp, no label smoothing"
        note += f", {ova['seconds']:.0f} s, mean test AUC {auc[0]:.3f}" if name == "uncalibrated" else ""
        note += f"; val macro-F1 {cv:.4f} (5-fold CV of the calibration)" if cv is not None else ""
        rows.append(_row(f"OvA argmax, {name}", y_test, pred, probe_pred, k, note))
        figures[f"ova {name}"] = float(rows[-1][1])
        figures[f"pred ova {name}"] = pred
        if cv is not None:
            figures[f"val cv ova {name}"] = cv
    own = [fit_platt(s, y) for s, y in ova["own_val"]]
    rows.append(_row("OvA argmax, Platt on own val", y_test, calibrate_matrix(ova["test"], own).argmax(1),
                     probe_pred, k, "fit per member on its 70/30 val set"))
    single = calibrate_matrix(ova["test_bag0"], fit_members(ova["val_bag0"], y_val)).argmax(1)
    rows.append(_row("OvA argmax, 1 bag (report's member), Platt", y_test, single, probe_pred, k,
                     f"bag 0 of each member alone, mean test AUC {auc[1]:.3f}"))
    # What serving applies to one run's members (serving.argmax_calibrations) and the report shows beside Platt.
    figures["ova served"] = "vector scaling on val"
    figures["pred ova calibrated"] = figures["pred ova vector scaling on val"]
    figures["ova calibrated"] = figures["ova vector scaling on val"]
    return figures


def _mean_auc(y: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(np.mean([roc_auc_score(y == j, scores[:, j]) for j in range(scores.shape[1])]))


def _weighted_row(data, prepared, mc, hp, args, probe_pred, rows) -> dict:
    """genre-cnn with the regularised best hp trained on the ``weighted`` balance, scored on the same test rows."""
    from postergenre.labels import prepare_labels
    from postergenre.training import fit_head, multiclass_data
    from postergenre.tuning import fit_kwargs

    weighted = prepare_labels(data["rows"], SEED, balance="weighted")
    wmc = multiclass_data(_features_by_split(data, weighted.labels), weighted.labels, weighted.classes)
    if not np.array_equal(wmc.x_test, mc.x_test) or weighted.classes != prepared.classes:
        raise RuntimeError("the weighted dataset's test rows differ from the undersampled ones")
    fit = fit_kwargs(hp, args.batch_size)
    head_u, _ = fit_head(mc, kind="multiclass", max_epochs=args.epochs, seed=SEED, **fit)
    head_w, _ = fit_head(wmc, kind="multiclass", max_epochs=args.epochs, seed=SEED, **fit)
    y_test, k = mc.y_test.argmax(axis=1), mc.n_outputs
    for name, head, data_ in (("undersample", head_u, mc), ("weighted", head_w, wmc)):
        pred = head.predict(mc.x_test, verbose=0, batch_size=1024).argmax(1)
        rows.append(
            _row(
                f"genre-cnn, {name} balance",
                y_test,
                pred,
                probe_pred,
                k,
                f"{len(data_.x_train)} train rows, same hp",
            )
        )
    return {"weighted": float(rows[-1][1]), "undersample": float(rows[-2][1])}


if __name__ == "__main__":
    main()
