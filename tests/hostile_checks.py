"""Shared checks for hostile-input tests of the command line (``test_hostile.py``, ``test_hostile_ingest.py``).

A hostile input must end in a *known* failure: exit code 2 (usage error, found by click while parsing) or 3
(the command ran and refused the input), never 1 (an unexpected exception, i.e. a crash). On top of the exit
code every check here asserts what a script or an operator relies on: one ``error: ...`` line on stderr and no
traceback, exactly one JSON document on stdout with ``--json``, no writes outside the places the command may
write, no temp files left behind, and a store and metadata DB that still agree with themselves.

Typical use::

    with isolated_tmpdir(tmp_path / "tmp", monkeypatch) as tmpdir, fs_snapshot(tmp_path) as changes:
        result = runner.invoke(app, [...])
    check_cli_failure(result, json_mode=True, expected_code=KNOWN_FAILURE, match="not an image")
    check_writes_confined(changes, allowed=[home / "cache"])
    check_no_temp_files(tmpdir)
    check_store_consistent(settings)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

USAGE_ERROR = 2
KNOWN_FAILURE = 3
CRASH = 1

_STORE_TEMP = ".~tmp-"  # FileStore's atomic-write temp files (postergenre.storage._write_atomic)


# ------------------------------------------------------------------------------------------ the CLI result


def check_cli_failure(
    result: Any,
    *,
    json_mode: bool,
    expected_code: int,
    match: str | None = None,
    extra_stderr_ok: bool = False,
) -> dict | None:
    """Assert that a ``CliRunner`` result is a clean, known failure; return the JSON error document (or None).

    ``match`` is a regex searched (case-insensitively) in the stderr error line. ``extra_stderr_ok`` allows
    other lines (log lines, progress) before the error line, which must then be the last one.
    """
    described = _describe(result)
    assert result.exit_code != CRASH, f"crashed (exit 1):\n{described}"
    assert result.exit_code == expected_code, (
        f"exit {result.exit_code}, expected {expected_code}:\n{described}"
    )
    # Typer/click turn an uncaught exception into exit 1 with result.exception set; SystemExit is the clean path.
    assert result.exception is None or isinstance(result.exception, SystemExit), described
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, described

    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines, f"nothing on stderr:\n{described}"
    if not extra_stderr_ok:
        assert len(lines) == 1, f"stderr is not one line:\n{described}"
    error_line = lines[-1]
    assert error_line.startswith("error: "), f"last stderr line is not 'error: ...':\n{described}"
    assert len(error_line) > len("error: ") + 3, described
    if match is not None:
        assert re.search(match, error_line, re.IGNORECASE), f"{match!r} not in {error_line!r}"

    if not json_mode:
        return None
    try:
        doc = json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"stdout is not one JSON document ({exc}):\n{described}") from None
    assert isinstance(doc, dict), described
    assert isinstance(doc.get("error"), str) and doc["error"] and "\n" not in doc["error"], described
    assert isinstance(doc.get("type"), str) and doc["type"], described
    return doc


def _describe(result: Any) -> str:
    return f"exit code: {result.exit_code}\n--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"


# ------------------------------------------------------------------------------------------ the filesystem


@dataclass
class FsChanges:
    """What changed under the snapshotted roots between entering and leaving ``fs_snapshot``."""

    created: list[Path] = field(default_factory=list)
    modified: list[Path] = field(default_factory=list)
    deleted: list[Path] = field(default_factory=list)

    @property
    def all(self) -> list[Path]:
        return sorted({*self.created, *self.modified, *self.deleted})

    def outside(self, allowed: Iterable[Path]) -> list[Path]:
        """Changed paths that lie under none of ``allowed``."""
        roots = [Path(a).resolve() for a in allowed]
        return [p for p in self.all if not any(p == r or r in p.parents for r in roots)]


def _state(roots: Iterable[Path]) -> dict[Path, tuple]:
    """Every file, directory and link under the roots with a fingerprint of its content."""
    state: dict[Path, tuple] = {}
    for root in roots:
        root = Path(root).resolve()
        if not root.exists():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            state[here] = ("dir",)
            for name in filenames + [d for d in dirnames if (here / d).is_symlink()]:
                path = here / name
                if path.is_symlink():
                    state[path] = ("link", os.readlink(path))
                elif path.is_file():
                    state[path] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
                else:
                    state[path] = ("other",)
    return state


@contextmanager
def fs_snapshot(*roots: Path) -> Iterator[FsChanges]:
    """Fingerprint everything under ``roots`` before and after the block; the yielded object is filled at exit.

    Content is hashed, not just timestamped, so a rewrite with the same bytes does not count as a change.
    """
    before = _state(roots)
    changes = FsChanges()
    try:
        yield changes
    finally:
        after = _state(roots)
        changes.created = sorted(p for p in after if p not in before)
        changes.deleted = sorted(p for p in before if p not in after)
        changes.modified = sorted(p for p in after if p in before and after[p] != before[p])


def check_writes_confined(changes: FsChanges, *, allowed: Iterable[Path] = ()) -> None:
    """Nothing changed outside ``allowed`` (e.g. the home's model cache); by default nothing changed at all."""
    stray = changes.outside(allowed)
    assert not stray, f"written outside {[str(a) for a in allowed]}: {[str(p) for p in stray]}"


@contextmanager
def isolated_tmpdir(path: Path, monkeypatch: Any) -> Iterator[Path]:
    """Point TMPDIR (and ``tempfile``'s cached choice) at a fresh, empty ``path`` for the block."""
    path.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("TMPDIR", str(path))
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    yield path


def check_no_temp_files(tmpdir: Path, *roots: Path) -> None:
    """``tmpdir`` is empty and no store temp file (an interrupted atomic write) is left under ``roots``."""
    left = sorted(str(p) for p in Path(tmpdir).rglob("*"))
    assert not left, f"temp files left in {tmpdir}: {left}"
    for root in roots:
        _check_no_store_temp_files(root)


def _check_no_store_temp_files(root: Path) -> None:
    stale = sorted(str(p) for p in Path(root).rglob(f"{_STORE_TEMP}*"))
    assert not stale, f"store temp files left: {stale}"


# ------------------------------------------------------------------------------------------ store and DB


def check_store_consistent(settings: Any) -> None:
    """The embedded default's file store, registry and SQLite DB agree with themselves.

    Store: no temp files, every published snapshot's manifest is JSON. DB (when it exists): SQLite's integrity
    check passes and its snapshot rows are exactly the published manifests. Registry: every champion pointer
    that is readable has a gap-free alias log ending at it (a corrupt pointer planted by the test is skipped).
    """
    store_root = _file_root(settings.store_url)
    if store_root is not None and store_root.exists():
        _check_no_store_temp_files(store_root)
        published = sorted(p.parent.name for p in (store_root / "snapshots").glob("*/manifest.json"))
        for snapshot in published:
            json.loads((store_root / "snapshots" / snapshot / "manifest.json").read_bytes())
        db_path = _sqlite_path(settings.db_url)
        if db_path is not None and db_path.exists():
            assert _db_snapshots(db_path, default=published) == published, (
                "DB and store disagree on snapshots"
            )
    registry_root = _file_root(settings.registry_url)
    if registry_root is not None and registry_root.exists():
        _check_no_store_temp_files(registry_root)
        _check_registry(registry_root)


def _file_root(url: str) -> Path | None:
    return Path(url.removeprefix("file://")) if url.startswith("file://") else None


def _sqlite_path(url: str) -> Path | None:
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


def _db_snapshots(db_path: Path, *, default: list[str]) -> list[str]:
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok", f"{db_path} is corrupt"
        tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "snapshots" not in tables:
            return default  # never migrated: nothing was recorded, nothing to disagree with
        return sorted(row[0] for row in con.execute("SELECT id FROM snapshots"))
    finally:
        con.close()


def _check_registry(root: Path) -> None:
    for pointer_path in (root / "models").rglob("champion.json") if (root / "models").exists() else ():
        try:
            pointer = json.loads(pointer_path.read_bytes())
            generation = int(pointer["generation"])
        except (ValueError, KeyError, TypeError):
            continue  # planted by the test on purpose; the command must have refused it, not repaired it
        aliases = pointer_path.parent / "aliases"
        present = sorted(p.name for p in aliases.glob("*.json")) if aliases.exists() else []
        expected = [f"{g:08d}.json" for g in range(1, generation + 1)]
        # Entry g is written right after the CAS that made generation g, so it may lag by exactly one.
        assert present in (expected, expected[:-1]), f"alias log of {pointer_path.parent} has gaps: {present}"


# ------------------------------------------------------------------------------------------ hostile inputs


def huge_png(width: int = 20000, height: int = 20000) -> bytes:
    """A valid 1-bit PNG of ``width`` x ``height`` black pixels in a few tens of KB (20000x20000: ~48 KB),
    which decodes to ``width * height * 3`` bytes of RGB: a decompression bomb that every decoder accepts."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    deflate = zlib.compressobj(9)
    body = b"".join(deflate.compress(row) for _ in range(height)) + deflate.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
