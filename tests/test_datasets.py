"""Stored datasets: byte-reproducible files per (snapshot, seed, balance), loaders, and the prepare step."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pandas.testing import assert_frame_equal
from typer.testing import CliRunner

from postergenre.cli import app
from postergenre.config import get_settings
from postergenre.datasets import (
    dataset_prefix,
    load_dataset_description,
    load_labels,
    load_movies,
    load_multilabel_eval,
    load_ova,
    write_dataset,
)
from postergenre.genres import GENRES, genre_slug
from postergenre.labels import prepare_labels
from postergenre.multilabel import multilabel_eval_set
from postergenre.snapshots import load_manifest
from postergenre.steps.ingest import ingest_snapshot
from postergenre.steps.prepare import prepare_dataset
from postergenre.storage import NotFound, open_store
from postergenre.synth import generate_snapshot


def skewed_rows(movies: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    weights = 1 / np.arange(1, len(GENRES) + 1)
    weights /= weights.sum()
    picked = [(i, g) for i in range(movies) for g in set(rng.choice(GENRES, rng.integers(1, 4), p=weights))]
    return pd.DataFrame(picked, columns=["movie_id", "genre"])


def stored_files(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return skewed_rows(3000, seed=8)


@pytest.fixture(scope="module")
def store(tmp_path_factory, rows):
    """One store holding both balances of the same snapshot and seed."""
    store = open_store(tmp_path_factory.mktemp("store").as_uri())
    for balance in ("undersample", "weighted"):
        write_dataset(store, "snap", prepare_labels(rows, 3, balance), input_hash="sha256:x")
    return store


def test_same_inputs_give_byte_identical_files(tmp_path, rows):
    roots = [tmp_path / "a", tmp_path / "b"]
    for root, order in zip(roots, (rows, rows.iloc[::-1]), strict=True):
        store = open_store(root.as_uri())
        for balance in ("undersample", "weighted"):
            write_dataset(store, "snap", prepare_labels(order, 3, balance), input_hash="sha256:x")
    first, second = stored_files(roots[0]), stored_files(roots[1])
    assert first == second
    assert (
        "datasets/snap/seed-3/labels.parquet" in first
        and "datasets/snap/seed-3-weighted/labels.parquet" in first
    )


def stored_columns(store, key: str) -> list[str]:
    return pq.read_schema(pa.BufferReader(store.get_bytes(key))).names


def test_undersample_files_keep_their_columns_and_loaders_add_weight_one(store):
    prefix = dataset_prefix("snap", 3)
    # The files as written before weights existed (their rows are pinned in test_labels).
    assert stored_columns(store, f"{prefix}/labels.parquet") == ["movie_id", "genre", "split"]
    assert stored_columns(store, f"{prefix}/ova/drama.parquet") == ["movie_id", "label", "split"]
    assert stored_columns(store, f"{prefix}-weighted/labels.parquet") == [
        "movie_id",
        "genre",
        "split",
        "weight",
    ]
    labels = load_labels(store, "snap", 3)
    assert (
        list(labels.columns) == ["movie_id", "genre", "split", "weight"] and (labels["weight"] == 1.0).all()
    )
    ova = load_ova(store, "snap", 3, "Drama")
    assert list(ova.columns) == ["movie_id", "label", "split", "weight"] and (ova["weight"] == 1.0).all()
    description = load_dataset_description(store, "snap", 3)
    assert description["balance"] == "undersample" and description["files"]["movies"] == "movies.parquet"


def test_weighted_files_store_weights_under_their_own_prefix(store):
    assert dataset_prefix("snap", 3, "weighted") == "datasets/snap/seed-3-weighted"
    description = load_dataset_description(store, "snap", 3, "weighted")
    assert description["balance"] == "weighted"
    labels = load_labels(store, "snap", 3, "weighted")
    train = labels[labels["split"] == "train"]
    totals = train.groupby("genre")["weight"].sum()
    assert totals.to_numpy() == pytest.approx(np.full(len(totals), len(train) / len(totals)))
    assert description["class_weights"] == pytest.approx(train.groupby("genre")["weight"].first().to_dict())
    assert description["labelled_movies"] == description["movies"] == len(labels)
    with pytest.raises(ValueError, match="unknown balance"):
        dataset_prefix("snap", 3, "oversample")


def test_weighted_val_and_test_are_the_undersampled_ones(store):
    def held_out(frame):
        return frame[frame["split"] != "train"].reset_index(drop=True)

    under, weighted = load_labels(store, "snap", 3), load_labels(store, "snap", 3, "weighted")
    assert_frame_equal(held_out(weighted), held_out(under))
    for genre in load_dataset_description(store, "snap", 3)["classes"]:
        assert_frame_equal(
            held_out(load_ova(store, "snap", 3, genre, "weighted")),
            held_out(load_ova(store, "snap", 3, genre)),
        )


def test_genre_lists_round_trip_through_the_store(store, rows):
    movies = load_movies(store, "snap", 3)
    assert (
        list(movies.columns) == ["movie_id", "genre", "genres"] and len(movies) == rows["movie_id"].nunique()
    )
    stored = {m: set(g.split("|")) for m, g in zip(movies["movie_id"], movies["genres"], strict=True)}
    assert stored == rows.groupby("movie_id")["genre"].agg(set).to_dict()
    assert_frame_equal(load_movies(store, "snap", 3, "weighted"), movies)


@pytest.mark.parametrize("balance", ["undersample", "weighted"])
def test_the_multilabel_loader_matches_the_pure_function(store, balance):
    loaded = load_multilabel_eval(store, "snap", 3, balance)
    classes = load_dataset_description(store, "snap", 3, balance)["classes"]
    direct = multilabel_eval_set(
        load_movies(store, "snap", 3, balance), load_labels(store, "snap", 3, balance), classes
    )
    assert_frame_equal(loaded.test, direct.test)
    assert (loaded.y_val == direct.y_val).all()
    seen = load_labels(store, "snap", 3, balance).query("split != 'test'")["movie_id"]
    assert not set(loaded.test["movie_id"]) & set(seen)


def test_a_dataset_from_before_balances_and_genre_lists_still_loads(tmp_path, rows):
    store = open_store((tmp_path / "old").as_uri())
    write_dataset(store, "snap", prepare_labels(rows, 3), input_hash="sha256:x")
    key = f"{dataset_prefix('snap', 3)}/dataset.json"
    old = json.loads(store.get_bytes(key))
    del old["balance"], old["files"]["movies"]
    store.put_bytes(key, json.dumps(old).encode())
    assert load_dataset_description(store, "snap", 3)["balance"] == "undersample"
    assert len(load_labels(store, "snap", 3)) == old["movies"]
    with pytest.raises(NotFound, match="run prepare again"):
        load_movies(store, "snap", 3)
    with pytest.raises(NotFound, match="weighted dataset"):
        load_labels(store, "snap", 3, "weighted")


# ---- the prepare step and command --------------------------------------------------------------------------


@pytest.fixture
def snapshots(settings, tmp_path):
    """Two ingested synthetic snapshots: 'small' (300 movies: 2 Westerns) and 'ok' (600 movies)."""
    for snapshot_id, movies, seed in (("small", 300, 0), ("ok", 600, 1)):
        export = generate_snapshot(tmp_path / snapshot_id, movies=movies, seed=seed)
        ingest_snapshot(str(export.out), snapshot_id=snapshot_id, settings=settings)
    return settings


def test_prepare_refuses_a_snapshot_too_small_to_split_and_writes_nothing(snapshots):
    with pytest.raises(ValueError, match=r"Western has 2 \(4 short\)"):
        prepare_dataset("small", settings=snapshots)
    assert not list(open_store(snapshots.store_url).list_keys("datasets/"))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["prepare", "small", "--balance", "weighted", "--json"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 3 and "Western has 2 (4 short)" in json.loads(result.stdout)["error"]


def test_prepare_writes_both_balances_side_by_side(snapshots):
    under = prepare_dataset("ok", settings=snapshots)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["prepare", "ok", "--balance", "weighted", "--json"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    weighted = json.loads(result.stdout)
    assert (under["balance"], weighted["balance"]) == ("undersample", "weighted")
    assert weighted["prefix"] == under["prefix"] + "-weighted"
    assert weighted["movies"] == weighted["labelled_movies"] == under["labelled_movies"] > under["movies"]
    assert weighted["per_class"]["val"] == under["per_class"]["val"] >= 1
    store = open_store(snapshots.store_url)
    descriptions = [
        load_dataset_description(store, "ok", snapshots.seed, b) for b in ("undersample", "weighted")
    ]
    assert (
        descriptions[0]["input_hash"]
        == descriptions[1]["input_hash"]
        == load_manifest(store, "ok")["content_hash"]
    )
    assert store.exists(f"{weighted['prefix']}/ova/{genre_slug('Western')}.parquet")
