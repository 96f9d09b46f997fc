"""Label processing at letterboxd scale: CSV parse only, parse + ``prepare_labels``, a plain pandas baseline.

Run: ``make bench`` (all benchmarks) or ``python -m benchmarks.bench_labels [--movies N] [--repeats R]``.
The input is a synthetic ``genres.csv`` (``postergenre.synth``, 557,539 movies by default, ~1M rows). Each
contender runs in its own freshly spawned process and reports its peak memory as the rise of the process's
resident-set high-water mark (Linux ``VmHWM``, reset through ``/proc/self/clear_refs`` once the imports are
done) above the resident set at that moment. ``ru_maxrss`` is not used: a spawned child inherits its
parent's high-water mark across fork and exec, which hid the contenders' peaks. Times are the best of
``--repeats`` runs (the slow baseline runs once).
"""

from __future__ import annotations

import argparse
import multiprocessing
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
    """One run of ``contender``; returns (labelled movies, total OvA rows) to show the work was done."""
    rows = parse(path)
    if contender == "parse":
        return 0, 0
    if contender == "ours":
        prepared = prepare_labels(rows, SEED)
        return len(prepared.labels), sum(len(f) for f in prepared.ova.values())
    labels, ova = baseline_prepare(rows, SEED)
    return len(labels), sum(len(f) for f in ova.values())


def _status_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status (Linux), in KiB."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(f"{field}:"))
    return int(line.split()[1])


def _single_run(contender: str, path: Path) -> dict:
    """In a fresh process: one run's seconds, its peak-RSS rise (MB) and its output sizes."""
    import sklearn.model_selection  # noqa: F401  (import cost is not part of any contender's figures)

    Path("/proc/self/clear_refs").write_text("5")  # high-water mark := current resident set
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    movies, ova_rows = _run(contender, path)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_mb": (_status_kib("VmHWM") - before) / 1024, "movies": movies,
            "ova_rows": ova_rows}  # fmt: skip


def _best_times(path: Path, repeats: int) -> dict[str, float]:
    """In a fresh process: best-of-``repeats`` seconds of the parse, of prepare_labels (both balances) and of
    each step.

    Each round times the parse and then the steps on its result back to back, so a busy machine slows
    both sides of the ratio alike.
    """
    from postergenre.labels import collapse, ova_sets, stratified_split, undersample

    best: dict[str, float] = {}

    def timed(name, step, *args):
        start = time.perf_counter()
        out = step(*args)
        best[name] = min(best.get(name, float("inf")), time.perf_counter() - start)
        return out

    for _ in range(repeats):
        rows = timed("parse", parse, path)
        timed("prepare_labels", prepare_labels, rows, SEED)
        timed("weighted", prepare_labels, rows, SEED, "weighted")
        collapsed = timed("collapse", collapse, rows)
        balanced = timed("undersample", undersample, collapsed, SEED)
        labels = timed("split", stratified_split, balanced, SEED)
        timed("ova", ova_sets, labels, SEED)
    return best


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--movies", type=int, default=557_539)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--skip-baseline", action="store_true", help="the baseline takes about a minute")
    args = parser.parse_args(argv)

    spawn = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="pg-bench-labels-") as tmp:
        generate_snapshot(Path(tmp) / "export", movies=args.movies, seed=SEED, posters=False)
        path = Path(tmp) / "export" / "genres.csv"
        n_rows = sum(1 for _ in path.open()) - 1
        contenders = ["parse", "ours"] + ([] if args.skip_baseline else ["baseline"])
        runs = {}
        for name in contenders:
            with spawn.Pool(1) as pool:
                runs[name] = pool.apply(_single_run, (name, path))
        with spawn.Pool(1) as pool:
            best = pool.apply(_best_times, (path, args.repeats))

    seconds = {"parse": best["parse"], "ours": best["parse"] + best["prepare_labels"]}
    seconds["baseline"] = runs.get("baseline", {}).get("seconds", float("nan"))
    titles = {"parse": "CSV parse only (pd.read_csv, pyarrow)", "ours": "parse + prepare_labels",
              "baseline": "parse + straightforward pandas"}  # fmt: skip
    print(
        f"\nlabel processing: {args.movies:,} movies, {n_rows:,} rows; seconds: best of {args.repeats} "
        "(baseline: one run); peak MB: VmHWM rise in the contender's own process"
    )
    header = ("seconds", "x parse", "peak MB", "labelled", "OvA rows")
    print(f"{'contender':38s} " + " ".join(f"{h:>9s}" for h in header))
    for name, run in runs.items():
        print(f"{titles[name]:38s} {seconds[name]:9.3f} {seconds[name] / best['parse']:9.2f} "
              f"{run['peak_mb']:9.1f} {run['movies']:9,d} {run['ova_rows']:9,d}")  # fmt: skip
    prepare = best["prepare_labels"]
    steps = ", ".join(f"{k} {best[k] * 1e3:.0f} ms" for k in ("collapse", "undersample", "split", "ova"))
    print(f"prepare_labels alone: {prepare:.3f} s = {prepare / best['parse']:.2f} x parse ({steps})")
    print(f"prepare_labels with balance='weighted': {best['weighted']:.3f} s (every labelled movie in train)")
    if "baseline" in runs:
        print(
            f"ours vs baseline: {seconds['baseline'] / seconds['ours']:.1f}x faster end to end, "
            f"{(seconds['baseline'] - best['parse']) / prepare:.1f}x on label processing alone"
        )
    return {"movies": args.movies, "rows": n_rows, "seconds": seconds, "best": best, "runs": runs}


if __name__ == "__main__":
    main()
