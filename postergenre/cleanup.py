"""Leave nothing behind: SIGTERM unwinds like an exception, and temporaries of killed runs are swept later.

Airflow stops a task that ran past its timeout with SIGTERM; Python's default is to die on the spot, so no
``finally`` runs and extraction folders (hundreds of MB) and half-written files stay forever. Inside
:func:`terminate_raises` the signal raises instead. SIGKILL cannot be caught, so every work folder holds an
``flock`` for its owner's lifetime: :func:`sweep_work_dirs` removes the old ones nobody holds any more.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

WORK_DIR_PREFIX = "postergenre-src-"


class Terminated(SystemExit):
    """Raised by the SIGTERM handler: exits with the shell's 128+signal code once the stack has unwound."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


class _Deferral:
    """Signals that arrived inside :func:`signals_deferred` blocks, raised when the outermost one ends."""

    depth = 0
    pending: int | None = None


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold a SIGTERM that arrives inside the block until the block ends.

    For bookkeeping that must not be cut in half: an exception raised inside ``Thread.start()`` (which a pool's
    ``submit`` may call) leaves a running thread the pool does not know of, so nobody waits for its upload.
    """
    _Deferral.depth += 1
    try:
        yield
    finally:
        _Deferral.depth -= 1
        signum, _Deferral.pending = _Deferral.pending, None
        if signum is not None and _Deferral.depth == 0:
            raise Terminated(signum)
        _Deferral.pending = signum


@contextlib.contextmanager
def terminate_raises(signums: tuple[int, ...] = (signal.SIGTERM,)) -> Iterator[None]:
    """Within the block, the signals raise :class:`Terminated`; the previous handlers come back afterwards.

    A previous Python handler (Airflow's task runner installs one) is called first, so it keeps its say. Only
    the first signal raises: a repeat while the stack unwinds must not interrupt the cleanup it is running
    (waiting for upload threads to finish their atomic renames). Only the main thread can install handlers;
    elsewhere this is a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in signums}
    raised = False

    def handler(signum: int, frame) -> None:
        nonlocal raised
        before = previous[signum]
        if before == signal.SIG_IGN or raised:
            return
        raised = True
        if callable(before):
            before(signum, frame)
        if _Deferral.depth:
            _Deferral.pending = signum
            return
        raise Terminated(signum)

    for signum in signums:
        signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, before in previous.items():
            signal.signal(signum, before if before is not None else signal.SIG_DFL)


@contextlib.contextmanager
def work_dir(prefix: str = WORK_DIR_PREFIX) -> Iterator[Path]:
    """A fresh folder in the temp dir, locked while in use and removed on the way out (also on SIGTERM)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)


def sweep_work_dirs(
    older_than: float, *, prefix: str = WORK_DIR_PREFIX, now: float | None = None, root: Path | None = None
) -> list[Path]:
    """Remove work folders older than ``older_than`` seconds whose owner is gone (its lock is free).

    The age keeps the sweep off a folder that was just created and is not locked yet; the lock keeps it off
    the folder of a long ingest that is still running.
    """
    root = Path(root or tempfile.gettempdir())
    cutoff = (time.time() if now is None else now) - older_than
    removed: list[Path] = []
    with contextlib.suppress(FileNotFoundError), os.scandir(root) as entries:
        candidates = [
            Path(e.path) for e in entries if e.name.startswith(prefix) and e.is_dir(follow_symlinks=False)
        ]
    for path in candidates:
        if _owner_gone(path, cutoff):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _owner_gone(path: Path, cutoff: float) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        if os.fstat(fd).st_mtime >= cutoff:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
    finally:
        os.close(fd)
