"""Nothing left behind: SIGTERM unwinds an ingest, and what a killed one left is swept by the next."""

import os
import signal
import tempfile
import threading
import time

import pytest
from ingest_helpers import small_export, store_temporaries, zip_export

from postergenre.cleanup import (
    WORK_DIR_PREFIX,
    Terminated,
    signals_deferred,
    sweep_work_dirs,
    terminate_raises,
    work_dir,
)
from postergenre.snapshots import ingest, list_snapshots
from postergenre.storage import open_store

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def tmpdir_(tmp_path, monkeypatch):
    """TMPDIR (and tempfile's cached choice) pointed at a folder of this test."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def store(tmp_path):
    return open_store((tmp_path / "store").as_uri())


def _age(path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_sigterm_raises_runs_finally_blocks_and_restores_the_handler():
    before = signal.getsignal(signal.SIGTERM)
    ran = []
    with pytest.raises(Terminated) as info, terminate_raises():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # interrupted by the handler, never slept through
        finally:
            ran.append("finally")
    assert info.value.code == 128 + signal.SIGTERM and ran == ["finally"]
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_repeated_sigterm_does_not_interrupt_the_unwinding():
    cleaned = []
    with pytest.raises(Terminated), terminate_raises():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the repeat is handled here, and ignored
            cleaned.append(True)
    assert cleaned == [True]


def test_a_sigterm_inside_a_deferred_block_is_raised_when_it_ends():
    steps = []
    with pytest.raises(Terminated), terminate_raises():
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # handled here, held
            steps.append("block finished")
        steps.append("never reached")
    assert steps == ["block finished"]


def test_a_previous_python_handler_is_called_first(monkeypatch):
    calls = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: calls.append(signum))
    try:
        with pytest.raises(Terminated), terminate_raises():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        assert calls == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_off_the_main_thread_it_changes_nothing():
    seen = []

    def body():
        with terminate_raises():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == [signal.getsignal(signal.SIGTERM)]


def test_work_dirs_of_live_owners_and_young_ones_survive_a_sweep(tmpdir_):
    dead = tmpdir_ / f"{WORK_DIR_PREFIX}dead"
    (dead / "letterboxd").mkdir(parents=True)
    (dead / "letterboxd" / "big").write_bytes(b"x" * 1000)
    _age(dead, 7200)
    young = tmpdir_ / f"{WORK_DIR_PREFIX}young"
    young.mkdir()
    other = tmpdir_ / "someone-elses"
    other.mkdir()
    _age(other, 7200)
    with work_dir() as live:
        _age(live, 7200)
        assert sweep_work_dirs(3600) == [dead]
        assert live.exists()
    assert not live.exists() and young.exists() and other.exists()


def test_a_sigterm_during_an_ingest_leaves_no_work_dir_and_no_temporaries(
    store, tmp_path, tmpdir_, monkeypatch
):
    """The signal arrives while a checking thread uploads a poster (deterministic: the upload sends it). Each
    of the two posters' uploads sends one, so the second lands while the first unwinds: it must not cut short
    the wait for the upload threads (that left a half-written ``.~tmp-*`` file)."""
    archive = zip_export(tmp_path / "x.zip", small_export(tmp_path / "e"))
    put = store.put_bytes

    def put_and_terminate(key, data):
        if key.startswith("posters/"):  # to the main thread, as the kernel may pick any thread for kill()
            signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
        return put(key, data)

    monkeypatch.setattr(store, "put_bytes", put_and_terminate)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated):
        ingest(str(archive), store, snapshot_id="s", concurrency=1)
    assert list(tmpdir_.iterdir()) == []
    assert store_temporaries(store.root) == [] and list_snapshots(store) == []
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_next_ingest_sweeps_what_a_killed_one_left(store, tmp_path, tmpdir_):
    export = small_export(tmp_path / "e")
    killed = tmpdir_ / f"{WORK_DIR_PREFIX}killed"
    (killed / "letterboxd" / "posters").mkdir(parents=True)
    _age(killed, 7200)
    half = store.root / "posters" / "sha256" / "ab" / ".~tmp-0123456789abcdef"
    half.parent.mkdir(parents=True)
    half.write_bytes(b"half a poster")
    _age(half, 7200)
    fresh = store.root / "posters" / "sha256" / "ab" / ".~tmp-fedcba9876543210"
    fresh.write_bytes(b"a write in progress")
    ingest(str(export), store, snapshot_id="s")
    assert not killed.exists() and not half.exists()
    assert fresh.exists()  # younger than the cut-off: maybe another writer's, left alone
