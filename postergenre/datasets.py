"""The prepared dataset of a snapshot: labels, splits and one-vs-all sets, stored byte-reproducibly.

Written under ``dataset_prefix``: ``datasets/<snapshot>/seed-<seed>/`` for the report's ``undersample``
balance, ``datasets/<snapshot>/seed-<seed>-weighted/`` for ``weighted``. Files:

- ``labels.parquet``: movie_id, genre, split (+ weight with ``weighted``);
- ``ova/<genre-slug>.parquet``: movie_id, label, split (+ weight with ``weighted``);
- ``movies.parquet``: movie_id, genre (collapsed), genres ('|'-joined full list) of every labelled movie of
  the snapshot, kept or not, for multi-label scoring;
- ``dataset.json`` (written last, the completion marker): balance, class order, counts, seed, input hash.

``undersample`` files carry no weight column, so its labels and OvA files are byte-identical to those
written before the ``weighted`` option existed; the loaders add ``weight`` = 1.0 (the report's unweighted
loss), so callers always get the column. No timestamps go into these files, so the same snapshot, seed
and balance give byte-identical outputs.
"""

from __future__ import annotations

import io
import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from postergenre.genres import genre_slug
from postergenre.labels import PreparedLabels, check_balance
from postergenre.multilabel import MultilabelEval, multilabel_eval_set
from postergenre.storage import NotFound, ObjectStore


def dataset_prefix(snapshot_id: str, seed: int, balance: str = "undersample") -> str:
    suffix = "" if check_balance(balance) == "undersample" else f"-{balance}"
    return f"datasets/{snapshot_id}/seed-{seed}{suffix}"


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    """Parquet with no wall-clock metadata, so equal frames give equal bytes."""
    table = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", write_statistics=False)
    return buf.getvalue()


def read_parquet(store: ObjectStore, key: str) -> pd.DataFrame:
    return pq.read_table(io.BytesIO(store.get_bytes(key))).to_pandas()


def _stored_columns(columns: list[str], balance: str) -> list[str]:
    return columns + (["weight"] if balance == "weighted" else [])


def write_dataset(store: ObjectStore, snapshot_id: str, prepared: PreparedLabels, *, input_hash: str) -> dict:
    """Store ``prepared``; ``dataset.json`` is written last and marks the dataset complete."""
    balance = prepared.balance
    prefix = dataset_prefix(snapshot_id, prepared.seed, balance)
    labels = prepared.labels[_stored_columns(["movie_id", "genre", "split"], balance)]
    labels = labels.astype({"genre": "string", "split": "string"})
    store.put_bytes(f"{prefix}/labels.parquet", parquet_bytes(labels))
    ova_files = {}
    for genre, frame in sorted(prepared.ova.items()):
        key = f"{prefix}/ova/{genre_slug(genre)}.parquet"
        columns = _stored_columns(["movie_id", "label", "split"], balance)
        store.put_bytes(key, parquet_bytes(frame[columns].astype({"split": "string"})))
        ova_files[genre] = key.removeprefix(prefix + "/")
    movies = prepared.movies[["movie_id", "genre", "genres"]].astype({"genre": "string", "genres": "string"})
    store.put_bytes(f"{prefix}/movies.parquet", parquet_bytes(movies))
    description = {
        "snapshot_id": snapshot_id,
        "seed": prepared.seed,
        "balance": balance,
        "classes": list(prepared.classes),
        "counts": prepared.counts,
        "ova_counts": {
            genre: {
                split: {
                    "positive": int((part["label"] == 1).sum()),
                    "negative": int((part["label"] == 0).sum()),
                }
                for split, part in frame.groupby("split", sort=True)
            }
            for genre, frame in sorted(prepared.ova.items())
        },
        "movies": len(labels),
        "labelled_movies": len(movies),
        "input_hash": input_hash,
        "files": {"labels": "labels.parquet", "ova": ova_files, "movies": "movies.parquet"},
    }
    if balance == "weighted":
        train = prepared.labels[prepared.labels["split"] == "train"]
        weights = train.groupby("genre", observed=True)["weight"].first()
        description["class_weights"] = {g: float(weights[g]) for g in prepared.classes}
    store.put_bytes(
        f"{prefix}/dataset.json", (json.dumps(description, indent=2, sort_keys=True) + "\n").encode()
    )
    return {**description, "uri": f"{store.url.rstrip('/')}/{prefix}"}


def load_dataset_description(
    store: ObjectStore, snapshot_id: str, seed: int, balance: str = "undersample"
) -> dict:
    """``dataset.json``; ``balance`` is filled in for datasets written before it was recorded."""
    try:
        description = store.get_json(f"{dataset_prefix(snapshot_id, seed, balance)}/dataset.json")
    except NotFound:
        raise NotFound(
            f"{balance} dataset for snapshot {snapshot_id} seed {seed} is not prepared in {store.url}"
        ) from None
    return {"balance": "undersample", **description}


def _with_weight(frame: pd.DataFrame) -> pd.DataFrame:
    return frame if "weight" in frame else frame.assign(weight=1.0)


def load_labels(
    store: ObjectStore, snapshot_id: str, seed: int, balance: str = "undersample"
) -> pd.DataFrame:
    """movie_id, genre, split, weight (1.0 everywhere for ``undersample``), sorted by movie_id."""
    load_dataset_description(store, snapshot_id, seed, balance)
    return _with_weight(read_parquet(store, f"{dataset_prefix(snapshot_id, seed, balance)}/labels.parquet"))


def load_ova(
    store: ObjectStore, snapshot_id: str, seed: int, genre: str, balance: str = "undersample"
) -> pd.DataFrame:
    """One genre's OvA set: movie_id, label, split, weight (1.0 everywhere for ``undersample``)."""
    load_dataset_description(store, snapshot_id, seed, balance)
    prefix = dataset_prefix(snapshot_id, seed, balance)
    return _with_weight(read_parquet(store, f"{prefix}/ova/{genre_slug(genre)}.parquet"))


def load_movies(
    store: ObjectStore, snapshot_id: str, seed: int, balance: str = "undersample"
) -> pd.DataFrame:
    """movie_id, genre (collapsed), genres ('|'-joined full list) of every labelled movie of the snapshot."""
    description = load_dataset_description(store, snapshot_id, seed, balance)
    if "movies" not in description["files"]:
        raise NotFound(
            f"dataset for snapshot {snapshot_id} seed {seed} predates stored genre lists: run prepare again"
        )
    prefix = dataset_prefix(snapshot_id, seed, balance)
    return read_parquet(store, f"{prefix}/{description['files']['movies']}")


def load_multilabel_eval(
    store: ObjectStore, snapshot_id: str, seed: int, balance: str = "undersample"
) -> MultilabelEval:
    """The dataset's multi-label evaluation movies and val genre lists (``multilabel.multilabel_eval_set``)."""
    classes = load_dataset_description(store, snapshot_id, seed, balance)["classes"]
    movies = load_movies(store, snapshot_id, seed, balance)
    return multilabel_eval_set(movies, load_labels(store, snapshot_id, seed, balance), classes)
