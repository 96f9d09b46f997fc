"""Label processing at letterboxd scale: CSV parse only, parse + ``prepare_labels``, a plain pandas baseline.

Run: ``make bench`` (all benchmarks) or ``python -m benchmarks.bench_labels [--movies N] [--repeats R]``.
The input is a synthetic ``genres.csv`` (``postergenre.synth``, 557,539 movies by default, ~1M rows). Each
contender runs in its own freshly spawned process, so the peak memory it reports is its own: the rise of
``ru_maxrss`` (the process's high-water resident set) from just before the timed runs to just after them.
Times are the best of ``--repeats`` runs (the slow baseline runs once).
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path

import pandas as pd

from postergenre.genres import GENRES
from postergenre.labels import prepare_labels
from postergenre.synth import generate_snapshot

SEED = 0
NEGATIVE_RATIO = 0.7


def parse(path: Path) -> pd.DataFrame:
    """The CSV parse every contender starts with (``pd.read_csv``, pyarrow engine)."""
    return pd.read_csv(path, engine="pyarrow").rename(columns={"id": "movie_id"})


def baseline_prepare(rows: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """The report's steps written the straightforward pandas way, as a reference point for speed.

    Per-movie groupby + apply for the collapse, one ``sample`` per class, ``train_test_split`` twice with
    ``stratify``, and per-genre, per-split, per-negative-genre loops for the OvA sets.
    """
    from sklearn.model_selection import train_test_split

    counts = rows["genre"].value_counts()
    rarity = {g: (int(counts[g]), g) for g in counts.index}
    least_common = rows.groupby("movie_id")["genre"].apply(lambda gs: min(gs, key=rarity.__getitem__))
    collapsed = least_common.reset_index()

    smallest = collapsed["genre"].value_counts().min()
    samples = [part.sample(n=smallest, random_state=seed) for _, part in collapsed.groupby("genre")]
    balanced = pd.concat(samples, ignore_index=True)

    train, rest = train_test_split(balanced, train_size=0.7, stratify=balanced["genre"], random_state=seed)
    val, test = train_test_split(rest, train_size=0.5, stratify=rest["genre"], random_state=seed)
    labels = pd.concat([train.assign(split="train"), val.assign(split="val"), test.assign(split="test")])
    labels = labels.sort_values("movie_id", ignore_index=True)

    ova = {}
    for genre in sorted(labels["genre"].unique()):
        others = [g for g in GENRES if g != genre]
        parts = []
        for _, part in labels.groupby("split"):
            positives = part[part["genre"] == genre]
            n_neg = round(len(positives) * NEGATIVE_RATIO / (1 - NEGATIVE_RATIO))
            quota, extra = divmod(n_neg, len(others))
            parts.append(positives.assign(label=1))
            for i, other in enumerate(others):
                pool = part[part["genre"] == other]
                n = min(len(pool), quota + (i < extra))
                parts.append(pool.sample(n=n, random_state=seed).assign(label=0))
        ova[genre] = pd.concat(parts).sort_values(["split", "movie_id"])[["movie_id", "label", "split"]]
    return labels, ova


def _run(contender: str, path: Path) -> tuple[int, int]:
    """One run of ``contender``; returns (labelled movies, total OvA rows) to check the work was done."""
    rows = parse(path)
    if contender == "parse":
        return 0, 0
    if contender == "ours":
        prepared = prepare_labels(rows, SEED)
        return len(prepared.labels), sum(len(f) for f in prepared.ova.values())
    labels, ova = baseline_prepare(rows, SEED)
    return len(labels), sum(len(f) for f in ova.values())


def _measure(contender: str, path: Path, repeats: int) -> dict:
    """Runs in a fresh process: best time of ``repeats`` runs and the peak-RSS rise (MB) they caused."""
    import sklearn.model_selection  # noqa: F401  (import cost is not part of any contender's time)

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    best, out = float("inf"), (0, 0)
    for _ in range(repeats):
        start = time.perf_counter()
        out = _run(contender, path)
        best = min(best, time.perf_counter() - start)
    peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024  # Linux: KiB
    return {"seconds": best, "peak_mb": peak_mb, "movies": out[0], "ova_rows": out[1]}


def _stage_times(path: Path) -> dict[str, float]:
    """Per-step seconds of our pipeline on one parsed frame (best of three), for the breakdown line."""
    from postergenre.labels import balance, collapse, ova_sets, stratified_split

    times: dict[str, float] = {}

    def timed(name, step):
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            out = step()
            best = min(best, time.perf_counter() - start)
        times[name] = best
        return out

    rows = parse(path)
    collapsed = timed("collapse", lambda: collapse(rows))
    balanced = timed("balance", lambda: balance(collapsed, SEED))
    labels = timed("split", lambda: stratified_split(balanced, SEED))
    timed("ova", lambda: ova_sets(labels, SEED))
    return times


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--movies", type=int, default=557_539)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-baseline", action="store_true", help="the baseline takes tens of seconds")
    args = parser.parse_args(argv)

    spawn = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="pg-bench-labels-") as tmp:
        generate_snapshot(Path(tmp) / "export", movies=args.movies, seed=SEED, posters=False)
        path = Path(tmp) / "export" / "genres.csv"
        contenders = [("parse", args.repeats), ("ours", args.repeats)]
        contenders += [] if args.skip_baseline else [("baseline", 1)]
        results = {}
        for name, repeats in contenders:
            with spawn.Pool(1) as pool:
                results[name] = pool.apply(_measure, (name, path, repeats))
        with spawn.Pool(1) as pool:
            stages = pool.apply(_stage_times, (path,))
        n_rows = sum(1 for _ in path.open()) - 1

    parse_s = results["parse"]["seconds"]
    titles = {"parse": "CSV parse only (pd.read_csv, pyarrow)", "ours": "parse + prepare_labels",
              "baseline": "parse + straightforward pandas"}  # fmt: skip
    print(f"\nlabel processing: {args.movies:,} movies, {n_rows:,} rows (peak: ru_maxrss rise, own process)")
    header = ("seconds", "x parse", "peak MB", "labelled", "OvA rows")
    print(f"{'contender':38s} " + " ".join(f"{h:>9s}" for h in header))
    for name, r in results.items():
        print(f"{titles[name]:38s} {r['seconds']:9.3f} {r['seconds'] / parse_s:9.2f} {r['peak_mb']:9.1f} "
              f"{r['movies']:9,d} {r['ova_rows']:9,d}")  # fmt: skip
    ours = results["ours"]["seconds"]
    print(f"prepare_labels alone: {ours - parse_s:.3f} s = {(ours - parse_s) / parse_s:.2f} x parse; "
          + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in stages.items()))
    if "baseline" in results:
        base = results["baseline"]["seconds"]
        print(f"ours vs baseline: {base / ours:.1f}x faster end to end, "
              f"{(base - parse_s) / (ours - parse_s):.1f}x on label processing alone")
    return {"movies": args.movies, "rows": n_rows, **results, "stages": stages}


if __name__ == "__main__":
    main()
