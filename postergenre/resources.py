"""The one place that opens what settings point at: the data store, the registry store and the metadata DB.

Every step, the CLI, the DAGs and the UI go through these, so concurrency and pooling follow one policy.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from postergenre.config import Settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from postergenre.storage import ObjectStore


def data_store(settings: Settings) -> ObjectStore:
    from postergenre.storage import open_store

    return open_store(settings.store_url, concurrency=settings.transfer_concurrency)


def registry_store(settings: Settings) -> ObjectStore:
    from postergenre.storage import open_store

    return open_store(settings.registry_url, concurrency=settings.transfer_concurrency)


@lru_cache(maxsize=8)
def _migrated_engine(db_url: str) -> Engine:
    from postergenre import db

    engine = db.make_engine(db_url)
    db.upgrade(engine)
    return engine


@lru_cache(maxsize=8)
def _reader_engine(db_url: str) -> Engine:
    from postergenre import db

    return db.make_engine(db_url)


def db_engine(settings: Settings, *, migrate: bool = True) -> Engine:
    """One engine (connection pool) per DB URL per process. Writers get the schema migrated once first; the
    read-only UI (``migrate=False``) never writes, a fresh install just shows as empty."""
    return (_migrated_engine if migrate else _reader_engine)(settings.db_url)
