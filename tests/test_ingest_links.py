"""Nothing outside the export is ever opened: links in a folder export or an archive are reported, not read."""

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest
from ingest_helpers import jpeg, make_export, small_export

from postergenre.snapshots import SourceError, ingest, load_quarantine, load_rows
from postergenre.storage import open_store

pytestmark = pytest.mark.timeout(60)

SECRET = b"root:x:0:0:secret-line-that-must-never-be-stored\n"


@pytest.fixture
def store(tmp_path):
    return open_store((tmp_path / "store").as_uri())


@pytest.fixture
def secret(tmp_path) -> Path:
    path = tmp_path / "outside" / "passwd"
    path.parent.mkdir()
    path.write_bytes(SECRET)
    return path


def _stored_bytes(store) -> bytes:
    return b"".join(store.get_bytes(key) for key in store.list_keys(""))


def _reasons(store, snapshot_id="s") -> dict[str, str]:
    return {item.get("name"): item["reason"] for item in load_quarantine(store, snapshot_id)["items"]}


def test_a_poster_linked_to_a_file_outside_is_quarantined_unread(store, tmp_path, secret):
    export = small_export(tmp_path / "e")
    (export / "posters" / "9000201.jpg").symlink_to(secret)
    (export / "genres.csv").write_text("id,genre\n1,Drama\n2,Comedy\n9000201,War\n")
    result = ingest(str(export), store, snapshot_id="s")
    assert result["movies"] == 2
    assert _reasons(store)["9000201.jpg"] == "symlink"
    assert SECRET not in _stored_bytes(store)
    assert not list(store.list_keys("quarantine/"))


def test_a_poster_linked_to_a_valid_jpeg_outside_is_not_published(store, tmp_path):
    outside = tmp_path / "elsewhere.jpg"
    outside.write_bytes(jpeg((1, 2, 3)))
    export = small_export(tmp_path / "e")
    (export / "posters" / "3.jpg").symlink_to(outside)
    (export / "genres.csv").write_text("id,genre\n1,Drama\n2,Comedy\n3,War\n")
    ingest(str(export), store, snapshot_id="s")
    assert 3 not in set(load_rows(store, "s")["movie_id"])
    assert _reasons(store)["3.jpg"] == "symlink"
    assert outside.read_bytes() not in _stored_bytes(store)


def test_genres_csv_as_a_link_is_refused(store, tmp_path):
    outside = tmp_path / "other.csv"
    outside.write_text("id,genre\n1,Drama\n")
    export = make_export(tmp_path / "e", [], {"1.jpg": jpeg()})
    (export / "genres.csv").unlink()
    (export / "genres.csv").symlink_to(outside)
    with pytest.raises(SourceError, match="genres.csv is a symbolic link"):
        ingest(str(export), store, snapshot_id="s")
    assert not list(store.list_keys(""))


def test_a_linked_posters_folder_is_not_entered(store, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "1.jpg").write_bytes(jpeg())
    export = small_export(tmp_path / "e")
    for poster in (export / "posters").iterdir():
        poster.unlink()
    (export / "posters").rmdir()
    (export / "posters").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ValueError, match="no usable movie"):
        ingest(str(export), store, snapshot_id="s")
    assert not list(store.list_keys("posters/"))


def test_a_linked_folder_inside_posters_is_reported(store, tmp_path, secret):
    export = small_export(tmp_path / "e")
    (export / "posters" / "sub").symlink_to(secret.parent, target_is_directory=True)
    ingest(str(export), store, snapshot_id="s")
    assert _reasons(store)["sub"] == "symlink"
    assert SECRET not in _stored_bytes(store)


def test_genres_csv_found_only_through_a_linked_folder_is_not_found(store, tmp_path):
    real = small_export(tmp_path / "real")
    export = tmp_path / "e"
    export.mkdir()
    (export / "nested").symlink_to(real, target_is_directory=True)
    with pytest.raises(SourceError, match="no genres.csv"):
        ingest(str(export), store, snapshot_id="s")


def test_a_fifo_poster_is_quarantined_without_hanging(store, tmp_path):
    export = small_export(tmp_path / "e")
    os.mkfifo(export / "posters" / "3.jpg")
    (export / "genres.csv").write_text("id,genre\n1,Drama\n2,Comedy\n3,War\n")
    ingest(str(export), store, snapshot_id="s")
    assert _reasons(store)["3.jpg"] == "not_a_regular_file"


def test_a_poster_swapped_for_a_link_after_listing_is_not_read(store, tmp_path, secret, monkeypatch):
    """The check and the open are one system call (O_NOFOLLOW): a swap after the listing is caught."""
    from postergenre import poster_scan

    export = small_export(tmp_path / "e")
    listed = poster_scan.list_poster_files

    def list_then_swap(root, limits):
        files, rejected = listed(root, limits)
        (root / "posters" / "2.jpg").unlink()
        (root / "posters" / "2.jpg").symlink_to(secret)
        return files, rejected

    monkeypatch.setattr("postergenre.snapshots.list_poster_files", list_then_swap)
    ingest(str(export), store, snapshot_id="s")
    assert _reasons(store)["2.jpg"] == "symlink"
    assert SECRET not in _stored_bytes(store)


def _zip_with_link(archive: Path, export: Path, target: str) -> None:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(export.rglob("*")):
            if path.is_file():
                zf.write(path, f"e/{path.relative_to(export).as_posix()}")
        link = zipfile.ZipInfo("e/posters/3.jpg")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, target)


def test_a_zip_symlink_member_is_quarantined(store, tmp_path, secret):
    export = small_export(tmp_path / "e")
    (export / "genres.csv").write_text("id,genre\n1,Drama\n2,Comedy\n3,War\n")
    _zip_with_link(tmp_path / "x.zip", export, str(secret))
    result = ingest(str(tmp_path / "x.zip"), store, snapshot_id="s")
    assert result["quarantine"]["archive_link"] == 1 and result["movies"] == 2


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_tar_link_members_are_quarantined_never_followed(store, tmp_path, secret, kind):
    export = small_export(tmp_path / "e")
    (export / "genres.csv").write_text("id,genre\n1,Drama\n2,Comedy\n3,War\n")
    archive = tmp_path / "x.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for path in sorted(export.rglob("*")):
            tf.add(path, f"e/{path.relative_to(export).as_posix()}", recursive=False)
        link = tarfile.TarInfo("e/posters/3.jpg")
        link.type = kind
        link.linkname = str(secret) if kind == tarfile.SYMTYPE else "e/posters/1.jpg"
        tf.addfile(link)
        fifo = tarfile.TarInfo("e/posters/4.jpg")
        fifo.type = tarfile.FIFOTYPE
        tf.addfile(fifo, io.BytesIO())
    result = ingest(str(archive), store, snapshot_id="s")
    assert result["quarantine"]["archive_link"] == 1
    assert result["quarantine"]["not_a_regular_file"] == 1
    assert 3 not in set(load_rows(store, "s")["movie_id"])
    assert SECRET not in _stored_bytes(store)
