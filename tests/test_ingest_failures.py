"""Failures of an ingest are the project's known errors with one line, and leave store and DB in agreement."""

import errno
import os
import sqlite3

import pytest
from ingest_helpers import jpeg, make_export, small_export, store_temporaries
from sqlalchemy.exc import OperationalError

from postergenre import db
from postergenre.config import Settings
from postergenre.snapshots import SourceError, ingest, list_snapshots, load_quarantine
from postergenre.steps.ingest import ingest_snapshot
from postergenre.storage import StoreError, open_store
from postergenre.validation import ExportError

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def store(tmp_path):
    return open_store((tmp_path / "store").as_uri())


def _db_snapshots(settings: Settings) -> set[str]:
    path = settings.db_url.removeprefix("sqlite:///")
    if not os.path.exists(path):
        return set()
    with sqlite3.connect(path) as connection:
        try:
            return {row[0] for row in connection.execute("SELECT id FROM snapshots")}
        except sqlite3.OperationalError:  # never migrated
            return set()


def test_a_header_only_csv_is_refused(store, tmp_path):
    export = make_export(tmp_path / "e", [], {"1.jpg": jpeg()})
    with pytest.raises(ExportError, match="header but no data rows"):
        ingest(str(export), store, snapshot_id="s")
    assert list_snapshots(store) == []


def test_an_export_without_one_usable_movie_is_refused(store, tmp_path):
    export = make_export(tmp_path / "e", ["1,Drama", "x,Drama"], {"1.jpg": b""})
    with pytest.raises(ExportError, match=r"no usable movie .*empty_poster 1.*invalid_id 1"):
        ingest(str(export), store, snapshot_id="s")
    assert list_snapshots(store) == []


def test_an_id_too_large_is_out_of_range_not_not_a_number(store, tmp_path):
    export = small_export(tmp_path / "e")
    (export / "genres.csv").write_text(f"id,genre\n1,Drama\n2,Comedy\n{2**70},War\n")
    ingest(str(export), store, snapshot_id="s")
    [item] = [i for i in load_quarantine(store, "s")["items"] if i["reason"] == "invalid_id"]
    assert "out of range" in item["detail"] and "not a number" not in item["detail"]


@pytest.mark.parametrize("make", ["dir", "empty", "fifo"])
def test_a_genres_csv_that_is_not_a_file_is_a_one_line_error(store, tmp_path, make):
    export = small_export(tmp_path / "e")
    (export / "genres.csv").unlink()
    if make == "dir":
        (export / "genres.csv").mkdir()
    elif make == "fifo":
        os.mkfifo(export / "genres.csv")
    else:
        (export / "genres.csv").write_bytes(b"")
    error = SourceError if make != "empty" else ExportError
    with pytest.raises(error) as info:
        ingest(str(export), store, snapshot_id="s")
    assert "\n" not in str(info.value)
    if make != "empty":
        assert "not a regular file" in str(info.value)


def test_a_full_store_disk_is_a_store_error_and_leaves_no_temporaries(store, tmp_path, monkeypatch):
    """ENOSPC injected into the file store's write path: one StoreError, no half-written files, and a re-run
    once there is room publishes."""
    export = small_export(tmp_path / "e")
    root = str(store.root)
    fsync = os.fsync

    def full(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").startswith(root):
            raise OSError(errno.ENOSPC, "No space left on device")
        fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StoreError, match="No space left on device") as info:
        ingest(str(export), store, snapshot_id="s")
    assert "\n" not in str(info.value)
    assert store_temporaries(store.root) == [] and list_snapshots(store) == []
    monkeypatch.setattr(os, "fsync", fsync)
    assert ingest(str(export), store, snapshot_id="s")["status"] == "published"


@pytest.mark.parametrize(
    "db_url",
    [
        "postgresql+psycopg://user:hunter2@[not-a-host",
        "not a url at all hunter2",
        "nosuchdialect://user:hunter2@host/db",
        "postgresql+psycopg://user:hunter2@127.0.0.1:1/db",  # nothing listens on port 1
    ],
)
def test_an_unusable_db_url_fails_before_anything_is_published(settings, tmp_path, db_url):
    settings.db_url = db_url
    export = small_export(tmp_path / "e")
    with pytest.raises(db.DBError) as info:
        ingest_snapshot(str(export), snapshot_id="s", settings=settings)
    message = str(info.value)
    assert "\n" not in message and "hunter2" not in message
    store = open_store(settings.store_url)
    assert list(store.list_keys("")) == []  # not a poster, not a snapshot file


def test_a_db_failure_after_publishing_is_recovered_by_a_rerun(settings, tmp_path, monkeypatch):
    export = small_export(tmp_path / "e")
    real = db.record_snapshot

    def down(*args, **kwargs):
        raise OperationalError("INSERT", {}, sqlite3.OperationalError("disk I/O error"))

    monkeypatch.setattr(db, "record_snapshot", down)
    with pytest.raises(db.DBError, match="published in the store but not recorded.*re-run"):
        ingest_snapshot(str(export), snapshot_id="s", settings=settings)
    store = open_store(settings.store_url)
    assert list_snapshots(store) == ["s"] and _db_snapshots(settings) == set()

    monkeypatch.setattr(db, "record_snapshot", real)
    again = ingest_snapshot(str(export), snapshot_id="s", settings=settings)
    assert again["status"] == "unchanged"
    assert set(list_snapshots(store)) == _db_snapshots(settings) == {"s"}


def test_db_errors_name_the_url_without_its_password():
    assert db.describe_url("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"
    assert "secret" not in db.describe_url("weird://u:secret@[h")
    with pytest.raises(db.DBError, match="POSTERGENRE_DB_URL"):
        db.make_engine("::::")
