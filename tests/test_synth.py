"""The synthetic letterboxd snapshot: shape, determinism, distribution, poster signal and faults."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.neighbors import NearestCentroid

from postergenre import labels
from postergenre.genres import GENRES, normalise_genre
from postergenre.synth import (
    FIRST_ID,
    SynthSummary,
    collapse,
    generate_snapshot,
    genre_weights,
    sample_genres,
)


def read_genres(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "genres.csv", dtype={"id": "int64", "genre": "str"})


def collapse_with_pandas(df: pd.DataFrame) -> pd.Series:
    """Each movie's least common genre (fewest movies carrying it), computed independently of synth.py."""
    movies_per_genre = df.groupby("genre")["id"].nunique()
    ranked = df.assign(n=df["genre"].map(movies_per_genre)).sort_values(["n", "genre"])
    return ranked.groupby("id")["genre"].first()


def poster_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "posters").iterdir())}


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> tuple[SynthSummary, list[int]]:
    calls: list[int] = []
    summary = generate_snapshot(
        tmp_path_factory.mktemp("clean") / "snap", movies=1500, seed=11, progress=calls.append
    )
    return summary, calls


@pytest.fixture(scope="module")
def posters(clean) -> pd.DataFrame:
    """Every poster of the clean snapshot decoded once: size, format and an 8x8 colour thumbnail."""
    out = clean[0].out
    rows = []
    for path in sorted((out / "posters").iterdir()):
        with Image.open(path) as im:
            fmt, size = im.format, im.size
            im.draft("RGB", (32, 32))
            thumb = np.asarray(im.convert("RGB").resize((8, 8), Image.Resampling.BOX), np.float32) / 255
        rows.append(
            {"id": int(path.stem), "format": fmt, "width": size[0], "height": size[1], "thumb": thumb.ravel()}
        )
    return pd.DataFrame(rows).set_index("id")


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path, Path]:
    """Two clean runs with the same seed, and a faulty run with that seed too."""
    root = tmp_path_factory.mktemp("pair")
    a = generate_snapshot(root / "a", movies=200, seed=5).out
    b = generate_snapshot(root / "b", movies=200, seed=5).out
    faulty = generate_snapshot(root / "faulty", movies=200, seed=5, faults=True).out
    return a, b, faulty


def test_csv_has_header_canonical_genres_and_increasing_ids(clean):
    summary, _ = clean
    raw = (summary.out / "genres.csv").read_bytes()
    assert raw.startswith(b"id,genre\n") and b"\r" not in raw
    df = read_genres(summary.out)
    assert len(df) == summary.rows and not df.duplicated().any()
    assert set(df["genre"]) <= set(GENRES)
    ids = df["id"].drop_duplicates()
    assert len(ids) == summary.movies and ids.is_monotonic_increasing and ids.iloc[0] >= FIRST_ID
    assert ids.iloc[-1] - ids.iloc[0] + 1 > len(ids)  # not contiguous
    assert not (summary.out / "faults.json").exists()


def test_summary_is_json_able_and_progress_adds_up(clean):
    summary, calls = clean
    doc = json.loads(json.dumps(summary.to_dict()))
    assert doc == {
        "out": str(summary.out),
        "movies": 1500,
        "rows": summary.rows,
        "posters": 1500,
        "faults": {},
    }
    assert sum(calls) == summary.movies and len(calls) > 1


def test_every_movie_has_a_jpeg_poster_of_varied_size(clean, posters):
    df = read_genres(clean[0].out)
    assert set(posters.index) == set(df["id"])
    assert (posters["format"] == "JPEG").all()
    aspect = posters["height"] / posters["width"]
    portrait = posters[aspect > 1]
    assert portrait["width"].between(180, 300).all() and aspect[aspect > 1].between(1.29, 1.61).all()
    assert portrait["width"].nunique() > 50 and posters["height"].nunique() > 50
    assert 0 < (aspect < 1).sum() < 0.1 * len(posters)  # a few landscape ones


def test_genre_weights_are_heavy_tailed_shares():
    w = genre_weights()
    assert list(w) == list(GENRES) and sum(w.values()) == pytest.approx(1.0)
    ranked = sorted(w, key=w.get, reverse=True)
    assert ranked[:2] == ["Drama", "Comedy"] and ranked[-1] == "Western"
    assert w["Drama"] > 20 * w["Western"]


@pytest.fixture(scope="module")
def mid(tmp_path_factory) -> pd.DataFrame:
    """The genre table of a 50,000-movie snapshot: enough movies for stable distribution checks."""
    return read_genres(
        generate_snapshot(tmp_path_factory.mktemp("mid") / "s", movies=50_000, seed=2, posters=False).out
    )


def test_distribution_is_letterboxd_like(mid):
    df = mid
    raw = df["genre"].value_counts()
    assert list(raw.index[:2]) == ["Drama", "Comedy"]
    collapsed = collapse_with_pandas(df).value_counts()
    assert len(collapsed) == len(GENRES) and collapsed.idxmin() == "Western"
    assert collapsed.min() < 0.8 * collapsed.drop("Western").min()  # a clear margin, not a coin flip
    per_movie = df.groupby("id").size()
    assert 0.35 <= (per_movie > 1).mean() <= 0.55 and per_movie.max() == 5
    # Raw counts follow the published weights in rank.
    assert raw.rank().corr(pd.Series(genre_weights()).rank(), method="spearman") > 0.9


def test_posters_are_drawn_for_the_genre_the_label_processing_collapses_to(mid):
    # synth.collapse is labels' rule itself; the pandas re-implementation above checks that rule independently.
    table = sample_genres(3000, np.random.default_rng(4))
    rows = pd.DataFrame({"movie_id": table.row_id, "genre": np.array(GENRES)[table.row_genre]})
    expected = labels.collapse(rows)
    assert table.ids.tolist() == expected["movie_id"].tolist()
    assert [GENRES[g] for g in collapse(table)] == expected["genre"].astype(str).tolist()
    ours = labels.collapse(mid.rename(columns={"id": "movie_id"}))
    independent = collapse_with_pandas(mid)  # sorted by id, like ours
    assert ours["genre"].astype(str).tolist() == independent.tolist()


@pytest.mark.parametrize("a,b", [("Crime", "Thriller"), ("Animation", "Family"), ("Comedy", "Romance")])
def test_co_occurrence_is_not_uniform(mid, a, b):
    movies = mid["id"].nunique()
    carriers = mid.groupby("genre")["id"].agg(set)

    def lift(x: str, y: str) -> float:
        """P(x and y) / (P(x) P(y)): 1 when genres co-occur at random."""
        return len(carriers[x] & carriers[y]) * movies / (len(carriers[x]) * len(carriers[y]))

    assert lift(a, b) > 1.5 and lift(a, b) > 3 * lift("Documentary", "Horror")


def test_poster_signal_is_learnable_but_noisy(clean, posters):
    labels = collapse_with_pandas(read_genres(clean[0].out))
    x = np.stack(posters.loc[labels.index, "thumb"].to_list())
    y = labels.to_numpy(dtype=str)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    model = NearestCentroid().fit(x_tr, y_tr)
    predicted = model.predict(x_te)
    chance = 1 / len(GENRES)
    majority = pd.Series(y_te).value_counts(normalize=True).iloc[0]
    assert balanced_accuracy_score(y_te, predicted) > 2.5 * chance
    assert majority < accuracy_score(y_te, predicted) < 0.8


def test_same_seed_gives_byte_identical_output_and_another_seed_does_not(pair, tmp_path):
    a, b, _ = pair
    assert (a / "genres.csv").read_bytes() == (b / "genres.csv").read_bytes()
    assert poster_bytes(a) == poster_bytes(b)
    other = generate_snapshot(tmp_path / "c", movies=200, seed=6, posters=False).out
    assert (other / "genres.csv").read_bytes() != (a / "genres.csv").read_bytes()


def test_faults_are_present_and_listed(pair):
    _, _, out = pair
    doc = json.loads((out / "faults.json").read_text())
    listed = doc["faults"]
    raw = (out / "genres.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbfid,genre\r\n") and listed["bom"] and listed["crlf"]
    assert raw.count(b"\n") == raw.count(b"\r\n")
    lines = raw.decode("utf-8").removeprefix("\ufeff").split("\r\n")
    line_faults = [
        "malformed_rows",
        "blank_lines",
        "non_numeric_ids",
        "hostile_ids",
        "duplicate_rows",
        "noncanonical_genres",
        "unknown_genres",
    ]
    for name in line_faults:
        assert len(listed[name]) >= 3, name
        for record in listed[name]:
            assert lines[record["line"] - 1] == record["text"], name
    for r in listed["duplicate_rows"]:  # the copy comes after the original
        assert lines.index(r["text"]) < r["line"] - 1
    assert {r["id"] for r in listed["hostile_ids"]} >= {"../../x", "/etc/passwd", "..\\x"}
    assert any(r["text"].count(",") != 1 for r in listed["malformed_rows"])
    assert any(r["text"].count('"') % 2 for r in listed["malformed_rows"])
    for r in listed["noncanonical_genres"]:
        assert r["genre"] != r["canonical"] and normalise_genre(r["genre"]) == r["canonical"]
    assert all(normalise_genre(r["genre"]) is None for r in listed["unknown_genres"])
    assert all(not r["id"].isdigit() for r in listed["non_numeric_ids"])


def test_poster_faults_are_what_they_claim(pair):
    a, _, out = pair
    listed = json.loads((out / "faults.json").read_text())["faults"]
    folder = out / "posters"
    assert all(not (folder / f"{i}.jpg").exists() for i in listed["missing_posters"])
    assert all((folder / f"{i}.jpg").stat().st_size == 0 for i in listed["empty_posters"])
    for name in ("corrupt_posters", "truncated_posters", "text_posters"):
        for i in listed[name]:
            with pytest.raises(OSError):
                Image.open(folder / f"{i}.jpg").load()
    for i in listed["truncated_posters"]:  # really the first half of a good JPEG
        good = (a / "posters" / f"{i}.jpg").read_bytes()
        assert good.startswith((folder / f"{i}.jpg").read_bytes())
    for i in listed["png_posters"]:
        with Image.open(folder / f"{i}.jpg") as im:
            assert im.format == "PNG" and im.size == Image.open(a / "posters" / f"{i}.jpg").size
    csv_ids = set(read_genres(a)["id"])
    for i in listed["orphan_posters"]:
        assert i not in csv_ids
        Image.open(folder / f"{i}.jpg").load()
    ids = [
        i for name in listed if name.endswith("_posters") and name != "orphan_posters" for i in listed[name]
    ]
    assert len(ids) == len(set(ids))  # each faulty poster has one fault


def test_dropping_listed_lines_recovers_the_clean_snapshot(pair):
    """Faults are added on top of the same clean data, so an ingest can be checked against it exactly."""
    clean, _, out = pair
    listed = json.loads((out / "faults.json").read_text())["faults"]
    lines = (out / "genres.csv").read_bytes().decode("utf-8-sig").split("\r\n")
    dropped = (
        "malformed_rows",
        "blank_lines",
        "non_numeric_ids",
        "hostile_ids",
        "duplicate_rows",
        "unknown_genres",
    )
    drop = {r["line"] for name in dropped for r in listed[name]}
    fixed = {r["line"]: f"{r['id']},{r['canonical']}" for r in listed["noncanonical_genres"]}
    recovered = [fixed.get(n, line) for n, line in enumerate(lines, start=1) if n not in drop]
    assert recovered == (clean / "genres.csv").read_text(encoding="utf-8").split("\n")
    bad = {f"{i}.jpg" for name, ids in listed.items() if name.endswith("_posters") for i in ids}
    good = {k: v for k, v in poster_bytes(out).items() if k not in bad}
    assert good == {k: v for k, v in poster_bytes(clean).items() if k not in bad}


def test_letterboxd_scale_csv_without_posters(tmp_path):
    calls: list[int] = []
    summary = generate_snapshot(
        tmp_path / "big", movies=200_000, seed=1, posters=False, progress=calls.append
    )
    assert summary.posters == 0 and not (summary.out / "posters").exists()
    assert sum(calls) == 200_000
    df = read_genres(summary.out)
    assert len(df) == summary.rows and df["id"].nunique() == 200_000
    assert 1.5 < summary.rows / summary.movies < 2.1  # letterboxd: ~1M rows for 557,539 movies


def test_refuses_a_non_empty_destination_and_leaves_nothing_behind(tmp_path):
    out = tmp_path / "snap"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        generate_snapshot(out, movies=10, posters=False)
    with pytest.raises(ValueError):
        generate_snapshot(tmp_path / "tiny", movies=50, faults=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snap"]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_an_existing_empty_destination_is_used(tmp_path):
    out = tmp_path / "snap"
    out.mkdir()
    summary = generate_snapshot(out, movies=20, seed=4)
    assert summary.out == out and summary.posters == 20
    assert sorted(p.name for p in out.iterdir()) == ["genres.csv", "posters"]
    assert out.stat().st_mode & 0o777 == 0o755  # readable by others once published
    assert (out / "genres.csv").read_bytes().startswith(b"id,genre\n")
