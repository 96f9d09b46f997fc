"""Archives: damaged, clashing, duplicated and over-cap members are reported in one line each, never a traceback,
and a member over a cap is never extracted (its declared size is recorded instead of its bytes)."""

import errno
import io
import tarfile
import zipfile
from pathlib import Path

import pytest
from ingest_helpers import jpeg, small_export, zip_export

from postergenre import archives
from postergenre.archives import extract_archive, member_problem, safe_name
from postergenre.limits import Limits
from postergenre.snapshots import SourceError, ingest, load_quarantine
from postergenre.storage import open_store

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def store(tmp_path):
    return open_store((tmp_path / "store").as_uri())


@pytest.fixture
def export(tmp_path):
    e = small_export(tmp_path / "e")
    (e / "genres.csv").write_text("id,genre\n1,Drama\n2,Comedy\n3,War\n")
    (e / "posters" / "3.jpg").write_bytes(jpeg((5, 5, 5)))
    return e


def _items(store, reason):
    return [i for i in load_quarantine(store, "s")["items"] if i["reason"] == reason]


def _stored_zip_with_bad_crc(archive: Path, export: Path, damaged: str) -> Path:
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
        for path in sorted(export.rglob("*")):
            if path.is_file():
                zf.write(path, f"e/{path.relative_to(export).as_posix()}")
    data = bytearray(archive.read_bytes())
    content = (export / damaged).read_bytes()
    at = bytes(data).index(content) + len(content) // 2
    data[at] ^= 0xFF  # same length, other bytes: only the CRC tells
    archive.write_bytes(bytes(data))
    return archive


def test_a_poster_with_a_bad_crc_is_quarantined(store, export, tmp_path):
    archive = _stored_zip_with_bad_crc(tmp_path / "x.zip", export, "posters/3.jpg")
    result = ingest(str(archive), store, snapshot_id="s")
    assert result["movies"] == 2
    [item] = _items(store, "corrupt_archive_member")
    assert item["name"] == "e/posters/3.jpg" and "CRC" in item["detail"]


def test_genres_csv_with_a_bad_crc_is_a_one_line_error_naming_it(store, export, tmp_path):
    archive = _stored_zip_with_bad_crc(tmp_path / "x.zip", export, "genres.csv")
    with pytest.raises(SourceError, match="genres.csv was rejected: corrupt_archive_member") as info:
        ingest(str(archive), store, snapshot_id="s")
    assert "\n" not in str(info.value)
    assert not list(store.list_keys(""))


def test_tar_entries_that_clash_as_file_and_folder_are_quarantined(store, export, tmp_path):
    archive = tmp_path / "x.tar"
    with tarfile.open(archive, "w") as tf:
        for path in sorted(export.rglob("*")):
            tf.add(path, f"e/{path.relative_to(export).as_posix()}", recursive=False)
        data = jpeg((9, 9, 9))
        clash = tarfile.TarInfo("e/posters/3.jpg/4.jpg")  # 3.jpg is a file already
        clash.size = len(data)
        tf.addfile(clash, io.BytesIO(data))
    result = ingest(str(archive), store, snapshot_id="s")
    assert result["quarantine"]["archive_path_clash"] == 1 and result["movies"] == 3


def test_a_folder_then_a_file_of_the_same_name_clash(tmp_path):
    archive = tmp_path / "x.tar"
    with tarfile.open(archive, "w") as tf:
        for name in ("e/posters/3.jpg/4.jpg", "e/posters/3.jpg"):
            info = tarfile.TarInfo(name)
            info.size = 3
            tf.addfile(info, io.BytesIO(b"abc"))
    (tmp_path / "out").mkdir()
    rejected = extract_archive(archive, tmp_path / "out", Limits())
    assert [r.reason for r in rejected] == ["archive_path_clash"]


def test_a_duplicated_member_keeps_the_first_and_reports_the_second(store, export, tmp_path):
    archive = zip_export(tmp_path / "x.zip", export, prefix="e/")
    with zipfile.ZipFile(archive, "a") as zf, pytest.warns(UserWarning, match="Duplicate name"):
        zf.writestr("e/posters/1.jpg", b"not the first one")
    result = ingest(str(archive), store, snapshot_id="s")
    assert result["quarantine"]["duplicate_archive_member"] == 1 and result["movies"] == 3


def test_a_1gib_like_member_named_as_a_poster_is_never_extracted(store, export, tmp_path, monkeypatch):
    """The declared size decides before one byte is written; the quarantine keeps the size, not the bytes."""
    archive = zip_export(tmp_path / "bomb.zip", export, prefix="e/")
    with zipfile.ZipFile(archive, "a", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("e/posters/9.jpg", bytes(64 * 2**20))
    written: list[str] = []
    copy = archives._copy_capped
    monkeypatch.setattr(
        archives,
        "_copy_capped",
        lambda src, out, cap, name: (written.append(name), copy(src, out, cap, name)),
    )
    result = ingest(str(archive), store, snapshot_id="s")
    assert result["movies"] == 3
    [item] = _items(store, "poster_too_large")
    assert item["size"] == 64 * 2**20 and "sha256" not in item
    assert "e/posters/9.jpg" not in written
    assert all(store.head(k).size < 2**20 for k in store.list_keys("quarantine/"))


def test_a_highly_compressed_member_under_the_size_cap_is_refused_by_ratio(store, export, tmp_path):
    archive = zip_export(tmp_path / "ratio.zip", export, prefix="e/")
    with zipfile.ZipFile(archive, "a", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("e/posters/9.jpg", bytes(4 * 2**20))
    result = ingest(str(archive), store, snapshot_id="s", limits=Limits(poster_bytes=8 * 2**20))
    assert result["quarantine"]["compression_ratio"] == 1


def test_an_archive_expanding_past_the_total_cap_is_refused_before_extraction(store, export, tmp_path):
    archive = zip_export(tmp_path / "x.zip", export, prefix="e/")
    with pytest.raises(SourceError, match="expands to more than 1000 bytes"):
        ingest(str(archive), store, snapshot_id="s", limits=Limits(archive_bytes=1000))
    assert not list(store.list_keys(""))


def test_many_small_compressible_members_are_refused_as_a_bomb(tmp_path):
    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i in range(40):
            zf.writestr(f"e/posters/{i}.jpg", bytes(200_000))  # each under the ratio floor
    (tmp_path / "out").mkdir()
    with pytest.raises(SourceError, match="compression bomb"):
        extract_archive(archive, tmp_path / "out", Limits())


@pytest.mark.parametrize(
    "make",
    [
        lambda p: p.write_bytes(b"PK\x03\x04 definitely not a zip"),
        lambda p: p.write_bytes(b"\x1f\x8b\x08" + bytes(50)),
    ],
    ids=["garbage", "broken-gzip"],
)
def test_unreadable_archives_are_one_line_errors(store, tmp_path, make):
    archive = tmp_path / "x.tar.gz"
    make(archive)
    with pytest.raises(SourceError, match="not a readable") as info:
        ingest(str(archive), store, snapshot_id="s")
    assert "\n" not in str(info.value)


def test_a_truncated_tar_gz_is_a_one_line_error(store, export, tmp_path):
    archive = tmp_path / "x.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(export, "e")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(SourceError):
        ingest(str(archive), store, snapshot_id="s")


def test_a_full_temp_disk_while_extracting_is_a_one_line_error(store, export, tmp_path, monkeypatch):
    def full(src, out, cap, name):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(archives, "_copy_capped", full)
    with pytest.raises(SourceError, match="No space left on device"):
        ingest(str(zip_export(tmp_path / "x.zip", export)), store, snapshot_id="s")


@pytest.mark.parametrize(
    "name,safe",
    [
        ("e/genres.csv", "e/genres.csv"),
        ("./e/./posters/1.jpg", "e/posters/1.jpg"),
        ("../../evil", None),
        ("/etc/passwd", None),
        ("C:\\evil", None),
        ("a\\..\\..\\b", None),
        ("a/\x00b", None),
        ("", None),
    ],
)
def test_safe_member_names(name, safe):
    assert safe_name(name) == safe


def test_member_problems_are_judged_from_the_index_alone():
    limits = Limits(poster_bytes=100, csv_bytes=1000)

    def problem(name, size, compressed=None, kind="file"):
        member = archives.Member(name, kind, size, compressed, lambda: pytest.fail("opened"))
        found = member_problem(member, safe_name(name), limits)
        return found.reason if found else None

    assert problem("e/posters/1.jpg", 100) is None
    assert problem("e/posters/1.jpg", 101) == "poster_too_large"
    assert problem("e/genres.csv", 1001) == "file_too_large"
    assert problem("e/posters/1.jpg", 0, kind="symlink") == "archive_link"
    assert problem("e/posters/1.jpg", 0, kind="special") == "not_a_regular_file"
    assert problem("e/README", 10**12) is None  # not part of an export: skipped, not extracted
    big = Limits(poster_bytes=2**30)
    member = archives.Member("e/posters/1.jpg", "file", 2**25, 2**10, lambda: None)
    assert member_problem(member, "e/posters/1.jpg", big).reason == "compression_ratio"
