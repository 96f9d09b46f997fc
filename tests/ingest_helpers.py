"""Builders shared by the ingest tests: small exports, archives, a store that pauses, a tree fingerprint."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import threading
import zipfile
from pathlib import Path

from PIL import Image

from postergenre.storage import ObjectStore


def jpeg(colour=(10, 20, 30), size=(46, 69)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG")
    return buf.getvalue()


def make_export(root: Path, rows: list[str], posters: dict[str, bytes]) -> Path:
    (root / "posters").mkdir(parents=True, exist_ok=True)
    (root / "genres.csv").write_text("id,genre\n" + "".join(r + "\n" for r in rows))
    for name, data in posters.items():
        (root / "posters" / name).write_bytes(data)
    return root


def small_export(root: Path, genre: str = "Drama", colour=(200, 0, 0)) -> Path:
    """Two usable movies; ``genre`` and ``colour`` make two exports differ in their CSV and their posters."""
    return make_export(
        root,
        [f"1,{genre}", "2,Comedy"],
        {"1.jpg": jpeg(colour), "2.jpg": jpeg((0, 200, 0))},
    )


def zip_export(archive: Path, export: Path, prefix: str = "letterboxd/") -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(export.rglob("*")):
            if path.is_file():
                zf.write(path, prefix + path.relative_to(export).as_posix())
    return archive


def tree_fingerprint(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` (links not followed) with its type and content hash or link target."""
    found: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            info = path.lstat()
            rel = path.relative_to(root).as_posix()
            if stat.S_ISLNK(info.st_mode):
                found[rel] = ("link", os.readlink(path))
            elif stat.S_ISREG(info.st_mode):
                found[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
            else:
                found[rel] = ("dir" if stat.S_ISDIR(info.st_mode) else "other",)
    return found


def store_temporaries(root: Path) -> list[str]:
    """Half-written files a file store left behind."""
    return sorted(str(p) for p in root.rglob(".~tmp-*")) if root.exists() else []


class PausingStore:
    """Delegates to ``inner``, but the first write of ``pause_key`` waits until the test says ``go``.

    The deterministic way to interleave two ingests: A runs in a thread until it is about to write the key,
    the test runs B to the end, then lets A go on.
    """

    def __init__(self, inner: ObjectStore, pause_key: str) -> None:
        self._inner = inner
        self.pause_key = pause_key
        self.paused = threading.Event()
        self.go = threading.Event()

    def __getattr__(self, name: str):
        return getattr(self._inner, name)

    def _pause(self, key: str) -> None:
        if key == self.pause_key and not self.paused.is_set():
            self.paused.set()
            assert self.go.wait(60), "the test never let the paused ingest go on"

    def put_bytes(self, key: str, data: bytes) -> str:
        self._pause(key)
        return self._inner.put_bytes(key, data)

    def put_if(self, key: str, data: bytes, *, if_match: str | None) -> str:
        self._pause(key)
        return self._inner.put_if(key, data, if_match=if_match)


def run_in_thread(fn) -> tuple[threading.Thread, dict]:
    """Start ``fn`` in a thread; the dict gets ``result`` or ``error`` when it ends."""
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["result"] = fn()
        except BaseException as err:  # noqa: BLE001 (handed to the test, which asserts on it)
            outcome["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome
