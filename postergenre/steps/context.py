"""One retrain run as a step sees it: its settings, stores and layout, with what a step needs loaded once.

A step builds one :class:`RunContext` with :func:`load_run` and reads labels, classes, features and staged
weights through its cached properties, so nothing is fetched twice within a step.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from postergenre import registry
from postergenre.config import Settings, get_settings
from postergenre.datasets import load_dataset_description, load_labels, load_multilabel_eval, load_ova
from postergenre.resources import data_store, registry_store
from postergenre.run_settings import RunSettings
from postergenre.snapshots import POSTER_PREFIX, blob_key, load_posters
from postergenre.steps.layout import RunLayout
from postergenre.storage import NotFound, ObjectStore, open_store


@dataclass
class RunContext:
    run_id: str
    config: RunSettings
    settings: Settings
    store: ObjectStore
    registry_store: ObjectStore

    @cached_property
    def layout(self) -> RunLayout:
        return RunLayout(self.run_id)

    @property
    def cache_dir(self) -> Path:
        return self.settings.home / "cache"

    def url(self, key: str) -> str:
        return f"{self.store.url.rstrip('/')}/{key}"

    # ------------------------------------------------------------------------------------- the dataset

    @property
    def _dataset(self) -> tuple[str, int, str]:
        return self.config.snapshot_id, self.config.seed, self.config.balance

    @cached_property
    def labels(self) -> pd.DataFrame:
        return load_labels(self.store, *self._dataset)

    @cached_property
    def classes(self) -> list[str]:
        return load_dataset_description(self.store, *self._dataset)["classes"]

    def ova(self, genre: str) -> pd.DataFrame:
        snapshot_id, seed, balance = self._dataset
        return load_ova(self.store, snapshot_id, seed, genre, balance)

    @cached_property
    def multilabel(self):
        """The movies that score the OvA ensemble on their true genre lists (``multilabel.MultilabelEval``)."""
        return load_multilabel_eval(self.store, *self._dataset)

    # ------------------------------------------------------------------------------ weights and features

    @cached_property
    def local_weights(self) -> str | Path | None:
        """``imagenet`` / ``none`` as they are; a path as is; a ``file://`` or ``s3://`` URI staged locally once."""
        weights, backbone = self.config.weights, self.config.backbone
        if backbone == "lite0" and weights.lower() == "imagenet":
            from postergenre.lite0 import ensure_lite0_weights

            return ensure_lite0_weights(self.cache_dir / "weights")  # converted from the package, offline
        if weights.lower() in ("imagenet", "none"):
            return None if weights.lower() == "none" else "imagenet"
        if "://" not in weights:
            return Path(weights)
        folder, _, name = weights.rpartition("/")
        local = self.cache_dir / "weights" / registry.run_version_id(folder) / name
        if not local.exists():
            open_store(folder).download_file(name, local)
        return local

    @cached_property
    def weights_id(self) -> str:
        """``imagenet``, ``none`` or the sha256 of the weights file: what identifies the backbone's weights."""
        from postergenre.feature_cache import weights_id

        return weights_id(self.local_weights)

    @cached_property
    def feature_key(self) -> str:
        from postergenre.feature_cache import feature_cache_key

        cfg = self.config
        return feature_cache_key(cfg.snapshot_id, cfg.backbone, self.weights_id, cfg.image_size)

    @cached_property
    def features(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """(movie ids, features) per split, from the cache the embed step filled."""
        from postergenre.feature_cache import load_features

        index = self.store.get_json(self.layout.features)
        return {
            split: load_features(self.store, index["feature_key"], obj) for split, obj in index["splits"].items()
        }

    @property
    def backbone_weights_key(self) -> str:
        """The weights of the backbone that computed the cached features, stored beside them."""
        return f"{self.feature_key}/backbone.weights.h5"

    def build_backbone(self):
        """The backbone, with exactly the weights that computed the cached features once they exist: a random
        init (``weights=none``) differs between Keras backends and seeds, and the registered model must be the
        one whose features the heads were trained on."""
        import tempfile

        from postergenre.models import build_backbone

        cfg = self.config
        backbone = build_backbone(cfg.backbone, weights=self.local_weights, image_size=cfg.image_size, seed=cfg.seed)
        if self.store.exists(self.backbone_weights_key):
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "backbone.weights.h5"
                self.store.download_file(self.backbone_weights_key, path)
                backbone.load_weights(path)
        return backbone

    def keep_backbone_weights(self, backbone) -> None:
        """Store the embedding backbone's weights beside its features (once)."""
        import tempfile

        if self.store.exists(self.backbone_weights_key):
            return
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "backbone.weights.h5"
            backbone.save_weights(path)
            self.store.upload_files([(path, self.backbone_weights_key)])

    def multiclass_data(self):
        from postergenre.training import multiclass_data

        return multiclass_data(self.features, self.labels, self.classes)

    def binary_data(self, genre: str):
        from postergenre.training import binary_data

        return binary_data(self.features, self.ova(genre))

    # ---------------------------------------------------------------------------------------- posters

    @cached_property
    def _poster_digests(self) -> pd.Series:
        # checked against the manifest's hash: a tampered index would train on other posters
        return load_posters(self.store, self.config.snapshot_id).set_index("movie_id")["sha256"]

    def poster_paths(self, movie_ids: np.ndarray) -> dict[int, Path]:
        """Local copies of the posters of ``movie_ids``, fetched once per worker (content-addressed)."""
        cache = self.cache_dir / "posters"
        paths, missing = {}, []
        for movie_id in movie_ids:
            digest = self._poster_digests[int(movie_id)]
            path = cache / digest[:2] / digest
            paths[int(movie_id)] = path
            if not path.exists():
                missing.append((blob_key(POSTER_PREFIX, digest), path))
        if missing:
            self.store.download_files(missing)
        return paths


def open_run_stores(settings: Settings) -> tuple[ObjectStore, ObjectStore]:
    return data_store(settings), registry_store(settings)


def load_run(run_id: str, settings: Settings | None = None) -> RunContext:
    """The context of a started run (``start_run`` wrote its settings)."""
    settings = settings or get_settings()
    run_id = registry.run_version_id(run_id)
    store, registry_store_ = open_run_stores(settings)
    key = RunLayout(run_id).config
    try:
        config = RunSettings.from_stored(store.get_json(key))
    except NotFound:
        raise NotFound(f"run {run_id} was never started (no {key})") from None
    return RunContext(run_id, config, settings, store, registry_store_)


def store_npz(store: ObjectStore, key: str, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    store.put_bytes(key, buf.getvalue())


def load_npz(store: ObjectStore, key: str) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(store.get_bytes(key)), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def save_keras(model, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
