"""The prepared dataset of a snapshot: labels, splits and one-vs-all sets, stored byte-reproducibly.

Written under ``datasets/<snapshot>/seed-<seed>/``: ``labels.parquet`` (movie_id, genre, split),
``ova/<genre-slug>.parquet`` (movie_id, label, split) and ``dataset.json`` (class order, counts, seed, input hash).
No timestamps go into these files, so the same snapshot and seed give byte-identical outputs.
"""

from __future__ import annotations

import io
import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from postergenre.genres import genre_slug
from postergenre.labels import PreparedLabels
from postergenre.storage import NotFound, ObjectStore


def dataset_prefix(snapshot_id: str, seed: int) -> str:
    return f"datasets/{snapshot_id}/seed-{seed}"


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    """Parquet with no wall-clock metadata, so equal frames give equal bytes."""
    table = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", write_statistics=False)
    return buf.getvalue()


def read_parquet(store: ObjectStore, key: str) -> pd.DataFrame:
    return pq.read_table(io.BytesIO(store.get_bytes(key))).to_pandas()


def write_dataset(store: ObjectStore, snapshot_id: str, prepared: PreparedLabels, *, input_hash: str) -> dict:
    """Store ``prepared``; ``dataset.json`` is written last and marks the dataset complete."""
    prefix = dataset_prefix(snapshot_id, prepared.seed)
    labels = prepared.labels[["movie_id", "genre", "split"]].astype({"genre": "string", "split": "string"})
    store.put_bytes(f"{prefix}/labels.parquet", parquet_bytes(labels))
    ova_files = {}
    for genre, frame in sorted(prepared.ova.items()):
        key = f"{prefix}/ova/{genre_slug(genre)}.parquet"
        store.put_bytes(key, parquet_bytes(frame[["movie_id", "label", "split"]].astype({"split": "string"})))
        ova_files[genre] = key.removeprefix(prefix + "/")
    description = {
        "snapshot_id": snapshot_id,
        "seed": prepared.seed,
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
        "input_hash": input_hash,
        "files": {"labels": "labels.parquet", "ova": ova_files},
    }
    store.put_bytes(
        f"{prefix}/dataset.json", (json.dumps(description, indent=2, sort_keys=True) + "\n").encode()
    )
    return {**description, "uri": f"{store.url.rstrip('/')}/{prefix}"}


def load_dataset_description(store: ObjectStore, snapshot_id: str, seed: int) -> dict:
    try:
        return store.get_json(f"{dataset_prefix(snapshot_id, seed)}/dataset.json")
    except NotFound:
        raise NotFound(
            f"dataset for snapshot {snapshot_id} seed {seed} is not prepared in {store.url}"
        ) from None


def load_labels(store: ObjectStore, snapshot_id: str, seed: int) -> pd.DataFrame:
    load_dataset_description(store, snapshot_id, seed)
    return read_parquet(store, f"{dataset_prefix(snapshot_id, seed)}/labels.parquet")


def load_ova(store: ObjectStore, snapshot_id: str, seed: int, genre: str) -> pd.DataFrame:
    load_dataset_description(store, snapshot_id, seed)
    return read_parquet(store, f"{dataset_prefix(snapshot_id, seed)}/ova/{genre_slug(genre)}.parquet")
