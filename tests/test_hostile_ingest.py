"""A table of hostile and faulty inputs, each run through ``postergenre ingest --json`` like a user would.

For every row: the exit code (0 where the bad input is quarantined and the rest published; refused inputs are
known failures, neither 0 nor 1, which would be a crash), one line on stderr and no traceback, one JSON
document on stdout, the inputs untouched, nothing written outside the store and the DB (the working directory
and TMPDIR stay empty), no half-written temporaries, no byte of a file outside the export in the store, and
the store and the DB in agreement (a snapshot is in one iff it is in the other).
"""

from __future__ import annotations

import errno
import io
import json
import os
import sqlite3
import stat
import tarfile
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from ingest_helpers import jpeg, make_export, tree_fingerprint, zip_export
from PIL import Image
from typer.testing import CliRunner

from postergenre.cli import app
from postergenre.config import get_settings

pytestmark = pytest.mark.timeout(120)

SECRET = b"root:x:0:0:a-line-from-outside-the-export-that-must-never-be-stored\n"
ROWS = ["1,Drama", "2,Comedy", "3,Horror"]
ALLOWED_IN_HOME = {"store", "postergenre.db", "postergenre.db-wal", "postergenre.db-shm"}


@dataclass
class Case:
    args: list[str]  # after `ingest`
    env: dict[str, str] = field(default_factory=dict)
    setup: Callable[[Callable[[list[str]], object]], None] | None = None  # gets a CLI runner, before the run
    verify: Callable[[Path], None] | None = None  # gets the home folder, after the generic checks


def _export(inputs: Path, rows=ROWS, posters: dict[str, bytes] | None = None, name="export") -> Path:
    base = {"1.jpg": jpeg((200, 0, 0)), "2.jpg": jpeg((0, 200, 0)), "3.jpg": jpeg((0, 0, 200))}
    return make_export(inputs / name, list(rows), base if posters is None else posters)


def _secret(inputs: Path) -> Path:
    path = inputs / "outside" / "passwd"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(SECRET)
    return path


def _with_rows(inputs: Path, extra: list[str], **posters: bytes) -> Path:
    export = _export(inputs, ROWS + extra)
    for name, data in posters.items():
        (export / "posters" / name.replace("_", ".")).write_bytes(data)
    return export


def _source(path: Path, snapshot: str = "s") -> Case:
    return Case([str(path), "--snapshot", snapshot])


def _zip(
    inputs: Path, export: Path, extra: dict[str, bytes] | None = None, level=zipfile.ZIP_DEFLATED
) -> Path:
    archive = zip_export(inputs / "export.zip", export, prefix="e/")
    with zipfile.ZipFile(archive, "a", compression=level) as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name": the point of one row
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return archive


def _bad_crc_zip(inputs: Path, damaged: str) -> Path:
    export = _export(inputs)
    archive = inputs / "crc.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
        for path in sorted(export.rglob("*")):
            if path.is_file():
                zf.write(path, f"e/{path.relative_to(export).as_posix()}")
    data = bytearray(archive.read_bytes())
    content = (export / damaged).read_bytes()
    data[bytes(data).index(content) + len(content) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    return archive


def _tar(
    inputs: Path, extra: Callable[[tarfile.TarFile], None], mode: str = "w:gz", name="export.tar.gz"
) -> Path:
    export = _export(inputs)
    archive = inputs / name
    with tarfile.open(archive, mode) as tf:
        for path in sorted(export.rglob("*")):
            tf.add(path, f"e/{path.relative_to(export).as_posix()}", recursive=False)
        extra(tf)
    return archive


def _add_file(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def _add_link(tf: tarfile.TarFile, name: str, kind: bytes, target: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    tf.addfile(info)


def _zip_symlink(inputs: Path) -> Path:
    archive = _zip(_mkdir(inputs), _export(inputs))
    with zipfile.ZipFile(archive, "a") as zf:
        link = zipfile.ZipInfo("e/posters/4.jpg")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, str(_secret(inputs)))
    return archive


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("L", size).save(buf, "PNG")
    return buf.getvalue()


def _link_poster(inputs: Path, target: Path) -> Case:
    export = _with_rows(inputs, ["9000201,War"])
    (export / "posters" / "9000201.jpg").symlink_to(target)
    return _source(export)


def _outside_jpeg(inputs: Path) -> Path:
    path = inputs / "outside.jpg"
    path.write_bytes(jpeg((1, 2, 3)))
    return path


def _genres(inputs: Path, make: Callable[[Path], None]) -> Case:
    export = _export(inputs)
    (export / "genres.csv").unlink()
    make(export / "genres.csv")
    return _source(export)


def _linked_posters_dir(inputs: Path) -> Case:
    export = _export(inputs, posters={})
    (export / "posters").rmdir()
    elsewhere = _mkdir(inputs / "elsewhere")
    (elsewhere / "1.jpg").write_bytes(jpeg())
    (export / "posters").symlink_to(elsewhere, target_is_directory=True)
    return _source(export)


def _conflict(inputs: Path) -> Case:
    export = _export(inputs)
    seen: dict[str, list[str]] = {}

    def setup(run) -> None:
        first = run([str(export), "--snapshot", "s"])
        assert first.exit_code == 0, first.output
        home = Path(os.environ["POSTERGENRE_HOME"])
        seen["blobs"] = sorted(p.name for p in (home / "store" / "posters").rglob("*") if p.is_file())
        (export / "genres.csv").write_text("id,genre\n" + "\n".join([*ROWS, "4,War"]) + "\n")
        (export / "posters" / "4.jpg").write_bytes(jpeg((4, 4, 4)))

    def verify(home: Path) -> None:  # refused before uploading: no orphan poster of the refused content
        assert sorted(p.name for p in (home / "store" / "posters").rglob("*") if p.is_file()) == seen["blobs"]

    return Case([str(export), "--snapshot", "s"], setup=setup, verify=verify)


def _full_disk(inputs: Path, monkeypatch: pytest.MonkeyPatch) -> Case:
    store_root = str(inputs.parent / "home" / "store")
    fsync = os.fsync

    def full(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").startswith(store_root):
            raise OSError(errno.ENOSPC, "No space left on device")
        fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    return _source(_export(inputs))


UNREACHABLE_S3 = {
    "POSTERGENRE_STORE_URL": "s3://bucket/prefix",
    "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9",  # nothing listens on the discard port
    "AWS_ACCESS_KEY_ID": "x",
    "AWS_SECRET_ACCESS_KEY": "y",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}

OK, REFUSED = "ok", "refused"
Build = Callable[[Path, pytest.MonkeyPatch], Case]

# (id, build(inputs, monkeypatch) -> Case, expected outcome, the quarantine reason (ok) or stderr words (refused))
TABLE: list[tuple[str, Build, str, str]] = [
    ("clean-export", lambda i, m: _source(_export(i)), OK, ""),
    (
        "malformed-rows",
        lambda i, m: _source(_with_rows(i, ["4,Drama,extra", '5,"Drama', "6;War"])),
        OK,
        "malformed_row",
    ),
    ("unknown-genre", lambda i, m: _source(_with_rows(i, ["1,Anime"])), OK, "unknown_genre"),
    ("duplicate-row", lambda i, m: _source(_with_rows(i, ["1, drama "])), OK, "duplicate_row"),
    (
        "traversal-id",
        lambda i, m: _source(_with_rows(i, ["../../x,Drama", "/etc/passwd,War"])),
        OK,
        "invalid_id",
    ),
    ("id-2**70", lambda i, m: _source(_with_rows(i, [f"{2**70},Drama"])), OK, "invalid_id"),
    ("unicode-digit-id", lambda i, m: _source(_with_rows(i, ["١٢٣,Drama"])), OK, "invalid_id"),
    (
        "bom-crlf-blank",
        lambda i, m: _genres(
            i, lambda p: p.write_bytes("\ufeffid,genre\r\n1,Drama\r\n\r\n2,War\r\n3,x\r\n".encode())
        ),
        OK,
        "unknown_genre",  # and the BOM, the CRLFs and the blank line are no errors: movies 1 and 2 are published
    ),
    (
        "zero-byte-poster",
        lambda i, m: _source(_with_rows(i, ["4,War"], **{"4_jpg": b""})),
        OK,
        "empty_poster",
    ),
    (
        "text-as-poster",
        lambda i, m: _source(_with_rows(i, ["4,War"], **{"4_jpg": b"<html>"})),
        OK,
        "not_an_image",
    ),
    (
        "truncated-jpeg",
        lambda i, m: _source(_with_rows(i, ["4,War"], **{"4_jpg": jpeg(size=(300, 400))[:300]})),
        OK,
        "corrupt_poster",
    ),
    (
        "bad-poster-names",
        lambda i, m: _source(_with_rows(i, [], **{"x_jpg": jpeg(), "1_gif": jpeg()})),
        OK,
        "bad_poster_name",
    ),
    ("poster-link-to-passwd", lambda i, m: _link_poster(i, _secret(i)), OK, "symlink"),
    ("poster-link-to-outside-jpeg", lambda i, m: _link_poster(i, _outside_jpeg(i)), OK, "symlink"),
    ("fifo-poster", lambda i, m: _source(_fifo_poster(i)), OK, "not_a_regular_file"),
    (
        "oversized-poster",
        lambda i, m: _env(
            _source(_with_rows(i, ["4,War"], **{"4_jpg": b"\xff\xd8\xff" + bytes(9000)})),
            POSTERGENRE_MAX_POSTER_BYTES="4096",
        ),
        OK,
        "poster_too_large",
    ),
    (
        "pixel-bomb-png",
        lambda i, m: _env(
            _source(_with_rows(i, ["4,War"], **{"4_png": _png((2000, 2000))})),
            POSTERGENRE_MAX_IMAGE_PIXELS="1000000",
        ),
        OK,
        "too_many_pixels",
    ),
    (
        "zip-traversal-members",
        lambda i, m: _source(_zip(i, _export(i), {"../../evil.txt": b"x", "/etc/evil": b"x"})),
        OK,
        "unsafe_archive_path",
    ),
    (
        "zip-bomb-poster",
        lambda i, m: _source(_zip(i, _export(i), {"e/posters/9000001.jpg": bytes(64 * 2**20)})),
        OK,
        "poster_too_large",
    ),
    (
        "zip-bad-crc-poster",
        lambda i, m: _source(_bad_crc_zip(i, "posters/2.jpg")),
        OK,
        "corrupt_archive_member",
    ),
    ("zip-symlink-member", lambda i, m: _source(_zip_symlink(i)), OK, "archive_link"),
    (
        "zip-duplicate-member",
        lambda i, m: _source(_zip(i, _export(i), {"e/posters/1.jpg": b"second"})),
        OK,
        "duplicate_archive_member",
    ),
    (
        "tar-file-dir-clash",
        lambda i, m: _source(_tar(i, lambda tf: _add_file(tf, "e/posters/1.jpg/4.jpg", jpeg()))),
        OK,
        "archive_path_clash",
    ),
    (
        "tar-symlink-member",
        lambda i, m: _source(
            _tar(i, lambda tf: _add_link(tf, "e/posters/4.jpg", tarfile.SYMTYPE, "/etc/passwd"))
        ),
        OK,
        "archive_link",
    ),
    (
        "tar-hardlink-member",
        lambda i, m: _source(
            _tar(i, lambda tf: _add_link(tf, "e/posters/4.jpg", tarfile.LNKTYPE, "/etc/passwd"))
        ),
        OK,
        "archive_link",
    ),
    # refused: known failures with one line
    ("header-only-csv", lambda i, m: _source(_export(i, rows=[])), REFUSED, "header but no data rows"),
    ("no-header", lambda i, m: _genres(i, lambda p: p.write_text("1,Drama\n")), REFUSED, "header 'id,genre'"),
    (
        "not-utf8",
        lambda i, m: _genres(i, lambda p: p.write_bytes(b"id,genre\n1,\xff\xfe\n")),
        REFUSED,
        "not UTF-8",
    ),
    ("zero-byte-genres-csv", lambda i, m: _genres(i, lambda p: p.write_bytes(b"")), REFUSED, "header"),
    (
        "genres-csv-is-a-directory",
        lambda i, m: _genres(i, lambda p: p.mkdir()),
        REFUSED,
        "is a directory, not a regular file",
    ),
    (
        "genres-csv-is-a-link",
        lambda i, m: _genres(i, lambda p: p.symlink_to(_secret(i))),
        REFUSED,
        "symbolic link",
    ),
    ("genres-csv-is-a-fifo", lambda i, m: _genres(i, os.mkfifo), REFUSED, "FIFO"),
    (
        "genres-csv-over-cap",
        lambda i, m: _env(_source(_export(i)), POSTERGENRE_MAX_CSV_BYTES="10"),
        REFUSED,
        "POSTERGENRE_MAX_CSV_BYTES",
    ),
    ("posters-dir-is-a-link", lambda i, m: _linked_posters_dir(i), REFUSED, "no usable movie"),
    (
        "no-usable-poster",
        lambda i, m: _source(_export(i, posters={"1.jpg": b"", "2.jpg": b"x"})),
        REFUSED,
        "no usable movie",
    ),
    ("missing-source", lambda i, m: _source(i / "nope"), REFUSED, "does not exist"),
    (
        "unknown-source-kind",
        lambda i, m: _source(_write(i / "export.txt", b"hello")),
        REFUSED,
        "expected a folder",
    ),
    (
        "zip-bad-crc-genres",
        lambda i, m: _source(_bad_crc_zip(i, "genres.csv")),
        REFUSED,
        "corrupt_archive_member",
    ),
    (
        "garbage-zip",
        lambda i, m: _source(_write(i / "export.zip", b"PK\x03\x04 not really")),
        REFUSED,
        "not a readable",
    ),
    (
        "truncated-tar-gz",
        lambda i, m: _source(_truncated(_tar(i, lambda tf: None))),
        REFUSED,
        "not a readable",
    ),
    (
        "archive-over-total-cap",
        lambda i, m: _env(_source(_zip(i, _export(i))), POSTERGENRE_MAX_ARCHIVE_BYTES="1000"),
        REFUSED,
        "POSTERGENRE_MAX_ARCHIVE_BYTES",
    ),
    (
        "snapshot-id-traversal",
        lambda i, m: _source(_export(i), snapshot="../x"),
        REFUSED,
        "invalid snapshot id",
    ),
    ("snapshot-id-slash", lambda i, m: _source(_export(i), snapshot="a/b"), REFUSED, "invalid snapshot id"),
    (
        "snapshot-id-hidden",
        lambda i, m: _source(_export(i), snapshot=".~tmp-x"),
        REFUSED,
        "invalid snapshot id",
    ),
    (
        "snapshot-id-too-long",
        lambda i, m: _source(_export(i), snapshot="x" * 65),
        REFUSED,
        "invalid snapshot id",
    ),
    (
        "snapshot-id-2**70-chars",
        lambda i, m: _source(_export(i), snapshot=str(2**70) * 4),
        REFUSED,
        "invalid snapshot id",
    ),
    ("unreachable-store", lambda i, m: _env(_source(_export(i)), **UNREACHABLE_S3), REFUSED, "127.0.0.1:9"),
    (
        "unsupported-store-url",
        lambda i, m: _env(_source(_export(i)), POSTERGENRE_STORE_URL="ftp://host/x"),
        REFUSED,
        "unsupported store URL",
    ),
    (
        "malformed-db-url",
        lambda i, m: _env(_source(_export(i)), POSTERGENRE_DB_URL="postgresql://u:pw@h:port/db"),
        REFUSED,
        "POSTERGENRE_DB_URL",
    ),
    (
        "unreachable-db",
        lambda i, m: _env(_source(_export(i)), POSTERGENRE_DB_URL="postgresql://u:pw@127.0.0.1:1/db"),
        REFUSED,
        "cannot use the metadata DB",
    ),
    ("conflicting-reingest", lambda i, m: _conflict(i), REFUSED, "already published with different content"),
    ("full-store-disk", _full_disk, REFUSED, "No space left on device"),
]


def _env(case: Case, **env: str) -> Case:
    case.env.update(env)
    return case


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _truncated(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _fifo_poster(inputs: Path) -> Path:
    export = _with_rows(inputs, ["4,War"])
    os.mkfifo(export / "posters" / "4.jpg")
    return export


def _store_snapshots(home: Path) -> set[str]:
    return {p.parent.name for p in (home / "store" / "snapshots").glob("*/manifest.json")}


def _db_snapshots(home: Path) -> set[str]:
    path = home / "postergenre.db"
    if not path.exists():
        return set()
    with sqlite3.connect(path) as connection:
        try:
            return {row[0] for row in connection.execute("SELECT id FROM snapshots")}
        except sqlite3.OperationalError:  # created but never migrated
            return set()


def _everything_under(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def test_the_table_is_large_and_ids_are_unique():
    ids = [row[0] for row in TABLE]
    assert len(ids) == len(set(ids)) >= 20
    assert {row[2] for row in TABLE} == {OK, REFUSED}


@pytest.mark.parametrize("build,expected,hint", [row[1:] for row in TABLE], ids=[row[0] for row in TABLE])
def test_hostile_ingest(
    build: Build, expected: str, hint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    inputs, home, tmp, cwd = (_mkdir(tmp_path / name) for name in ("in", "home", "tmp", "cwd"))
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.chdir(cwd)
    env = {"POSTERGENRE_HOME": str(home), "POSTERGENRE_STORE_URL": "", "POSTERGENRE_DB_URL": ""}
    case = build(inputs, monkeypatch)
    env.update(case.env)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    runner = CliRunner()

    def run(args: list[str]):
        get_settings.cache_clear()
        try:
            return runner.invoke(app, ["ingest", *args, "--json"])
        finally:
            get_settings.cache_clear()

    if case.setup is not None:
        case.setup(run)
    before = tree_fingerprint(inputs)
    result = run(case.args)

    # exit code, one line on stderr, no traceback, one JSON document on stdout
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.stderr
    doc = json.loads(result.stdout)
    if expected == OK:
        assert result.exit_code == 0, result.stderr
        assert doc["status"] == "published"
        assert hint in doc["quarantine"] if hint else doc["quarantined"] == 0, doc["quarantine"]
    else:
        assert result.exit_code not in (0, 1), (result.exit_code, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert hint in lines[0] and "error" in doc
        assert "pw@" not in result.stderr and "pw@" not in result.stdout  # no password of a DB URL shown

    # nothing changed in the inputs, nothing written outside the store and the DB, no temporaries
    assert tree_fingerprint(inputs) == before
    assert list(cwd.iterdir()) == [] and list(tmp.iterdir()) == []
    assert {p.name for p in home.iterdir()} <= ALLOWED_IN_HOME
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "home", "in", "tmp"]
    assert not list((home / "store").rglob(".~tmp-*")) if (home / "store").exists() else True
    assert SECRET not in _everything_under(home)
    # a snapshot is in the store iff it is in the DB
    assert _store_snapshots(home) == _db_snapshots(home)
    if expected == OK:
        assert _store_snapshots(home) == {"s"}
    if case.verify is not None:
        case.verify(home)
