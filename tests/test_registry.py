"""Model registry against a file:// store and the real S3 server: versions, champion CAS, alias log."""

from __future__ import annotations

import multiprocessing
import threading
from datetime import UTC, datetime, timedelta, timezone
from itertools import count

import pytest

from postergenre import registry as reg
from postergenre.genres import GENRES
from postergenre.storage import open_store

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.s3)])
def store(request, tmp_path):
    if request.param == "file":
        return open_store((tmp_path / "registry").as_uri())
    return open_store(request.getfixturevalue("s3_url"))


def _register(store, name="genre-cnn", tag="a", **kwargs):
    return reg.register_version(
        store,
        name,
        files={"model.keras": f"weights-{tag}".encode()},
        metrics={"f1_macro": 0.5, "tag": tag},
        lineage={"snapshot": "snap-1", "tag": tag},
        **kwargs,
    )


def _ticking_clock(start=T0, step=timedelta(minutes=1)):
    ticks = count()
    return lambda: start + next(ticks) * step


def _assert_consistent_log(store, name, successes):
    """Pointer generation == successful moves; log is 1..g with each move starting where the last ended."""
    champion = reg.get_champion(store, name)
    log = reg.history(store, name)
    assert champion["generation"] == successes == len(log)
    assert [e["generation"] for e in log] == list(range(1, successes + 1))
    assert log[0]["from_version"] is None
    for before, after in zip(log, log[1:], strict=False):
        assert after["from_version"] == before["to_version"] != after["to_version"]
    assert log[-1]["to_version"] == champion["version"]
    alias_keys = [o.key for o in store.list(f"models/{reg.model_key(name)}/aliases/")]
    assert alias_keys == [
        f"models/{reg.model_key(name)}/aliases/{g:08d}.json" for g in range(1, successes + 1)
    ]


def test_register_show_list_download(store, tmp_path):
    weights = tmp_path / "model.keras"
    weights.write_bytes(b"\x00keras" * 1000)
    out = reg.register_version(
        store,
        "genre-cnn",
        files={"model.keras": weights, "labels.txt": b"Action\nDrama\n"},
        metrics={"f1_macro": 0.41},
        lineage={"snapshot": "snap-1", "run_id": "manual__1"},
        decision={"promote": True},
        version="run-1",
        clock=lambda: T0,
    )
    assert out == {
        "name": "genre-cnn",
        "version": "run-1",
        "uri": f"{store.url.rstrip('/')}/models/genre-cnn/versions/run-1/",
    }
    shown = reg.show_version(store, "genre-cnn", "run-1")
    assert shown["metrics"] == {"f1_macro": 0.41}
    assert shown["decision"] == {"promote": True}
    assert shown["lineage"] == {"snapshot": "snap-1", "run_id": "manual__1"}
    assert shown["registered_at"] == T0.isoformat()
    assert shown["files"]["model.keras"]["size"] == weights.stat().st_size
    assert reg.list_models(store) == ["genre-cnn"]
    assert [v["version"] for v in reg.list_versions(store, "genre-cnn")] == ["run-1"]

    dest = reg.download_version(store, "genre-cnn", "run-1", tmp_path / "local")
    assert (dest / "model.keras").read_bytes() == weights.read_bytes()
    assert (dest / "labels.txt").read_bytes() == b"Action\nDrama\n"
    assert (dest / "lineage.json").exists() and (dest / "decision.json").exists()


def test_generated_versions_are_unique_and_sorted(store):
    clock = _ticking_clock()
    ids = [_register(store, tag=t, clock=clock)["version"] for t in "abc"]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert [v["version"] for v in reg.list_versions(store, "genre-cnn")] == ids


def test_reregister_same_content_is_noop(store):
    first = _register(store, version="run-7", clock=lambda: T0)
    again = _register(store, version="run-7", clock=lambda: T0 + timedelta(hours=1))
    assert again == first
    assert reg.show_version(store, "genre-cnn", "run-7")["registered_at"] == T0.isoformat()
    assert len(reg.list_versions(store, "genre-cnn")) == 1


def test_conflicting_reregister_raises_and_keeps_original(store):
    _register(store, tag="a", version="run-7")
    with pytest.raises(reg.VersionConflict):
        _register(store, tag="b", version="run-7")
    assert reg.show_version(store, "genre-cnn", "run-7")["metrics"]["tag"] == "a"
    assert store.get_bytes("models/genre-cnn/versions/run-7/model.keras") == b"weights-a"


def test_conflicting_writer_of_unfinished_version_never_touches_its_files(store):
    """A crashed writer's claim holds the id: other content is refused, the same content completes it."""
    prefix = "models/genre-cnn/versions/run-9/"
    store.put_json(prefix + "claim.json", {"content_sha256": "digest-of-a-crashed-writer"})
    store.put_bytes(prefix + "model.keras", b"half")
    assert reg.list_versions(store, "genre-cnn") == []
    with pytest.raises(reg.NotRegistered):
        reg.promote(store, "genre-cnn", "run-9", actor="t", reason="r")
    with pytest.raises(reg.VersionConflict):
        _register(store, tag="b", version="run-9")
    assert store.get_bytes(prefix + "model.keras") == b"half"


def test_interrupted_registration_is_invisible_then_completed_by_retry(store):
    prefix = "models/genre-cnn/versions/run-3/"
    store.put_bytes(prefix + "model.keras", b"partial")  # a crash after the first file, before lineage.json
    assert reg.list_versions(store, "genre-cnn") == [] and reg.list_models(store) == []
    with pytest.raises(reg.NotRegistered):
        reg.show_version(store, "genre-cnn", "run-3")
    _register(store, tag="a", version="run-3")
    assert store.get_bytes(prefix + "model.keras") == b"weights-a"
    assert [v["version"] for v in reg.list_versions(store, "genre-cnn")] == ["run-3"]


def test_first_promotion_and_noop_repeat(store):
    v = _register(store, decision={"promote": True})["version"]
    assert reg.get_champion(store, "genre-cnn") is None and reg.history(store, "genre-cnn") == []
    moved = reg.promote(store, "genre-cnn", v, actor="run-1", reason="first", expected_current=None)
    assert moved["changed"] and moved["version"] == v and moved["generation"] == 1
    assert moved["entry"]["decision_ref"].endswith(f"/versions/{v}/decision.json")
    again = reg.promote(store, "genre-cnn", v, actor="run-1", reason="retry", expected_current=None)
    assert not again["changed"] and again["generation"] == 1
    champion = reg.get_champion(store, "genre-cnn")
    assert champion["version"] == v and champion["entry"]["actor"] == "run-1"
    _assert_consistent_log(store, "genre-cnn", 1)


def test_stale_expected_current_raises_and_leaves_champion(store):
    a, b, c = (_register(store, tag=t)["version"] for t in "abc")
    reg.promote(store, "genre-cnn", a, actor="x", reason="r")
    reg.promote(store, "genre-cnn", b, actor="y", reason="r", expected_current=a)
    with pytest.raises(reg.ChampionChanged):
        reg.promote(store, "genre-cnn", c, actor="z", reason="r", expected_current=a)
    with pytest.raises(reg.ChampionChanged):
        reg.promote(store, "genre-cnn", c, actor="z", reason="r", expected_current=None)
    champion = reg.get_champion(store, "genre-cnn")
    assert (champion["version"], champion["generation"]) == (b, 2)
    _assert_consistent_log(store, "genre-cnn", 2)


def test_unregistered_version_refused(store):
    _register(store, version="run-1")
    with pytest.raises(reg.NotRegistered):
        reg.promote(store, "genre-cnn", "run-2", actor="x", reason="r")
    with pytest.raises(reg.NotRegistered):
        reg.promote(store, "genre-xyz", "run-1", actor="x", reason="r")
    assert reg.get_champion(store, "genre-cnn") is None


def test_rollback(store):
    a, b, c = (_register(store, tag=t)["version"] for t in "abc")
    with pytest.raises(reg.NoRollbackTarget):
        reg.rollback(store, "genre-cnn", actor="ops", reason="nothing yet")
    reg.promote(store, "genre-cnn", a, actor="x", reason="r")
    with pytest.raises(reg.NoRollbackTarget):
        reg.rollback(store, "genre-cnn", actor="ops", reason="no predecessor")
    reg.promote(store, "genre-cnn", b, actor="x", reason="r")
    reg.promote(store, "genre-cnn", c, actor="x", reason="r")

    back = reg.rollback(store, "genre-cnn", actor="ops", reason="c regressed")
    assert back["version"] == b
    explicit = reg.rollback(store, "genre-cnn", to_version=a, actor="ops", reason="back to a")
    assert explicit["version"] == a
    log = reg.history(store, "genre-cnn")
    assert [(e["action"], e["from_version"], e["to_version"]) for e in log[-2:]] == [
        ("rollback", c, b),
        ("rollback", b, a),
    ]
    assert log[-2]["reason"] == "c regressed" and log[-2]["actor"] == "ops"
    _assert_consistent_log(store, "genre-cnn", 5)


def test_champion_at_with_injected_clock(store):
    a, b, c = (_register(store, tag=t)["version"] for t in "abc")
    hour = timedelta(hours=1)
    for i, v in enumerate([a, b, c]):
        reg.promote(store, "genre-cnn", v, actor="x", reason="r", clock=lambda i=i: T0 + i * hour)
    reg.rollback(store, "genre-cnn", actor="ops", reason="r", clock=lambda: T0 + 3 * hour)

    assert reg.champion_at(store, "genre-cnn", T0 - hour) is None
    assert reg.champion_at(store, "genre-cnn", T0) == a
    assert reg.champion_at(store, "genre-cnn", T0 + 0.5 * hour) == a
    assert reg.champion_at(store, "genre-cnn", T0 + hour) == b
    assert reg.champion_at(store, "genre-cnn", T0 + 2.5 * hour) == c
    assert reg.champion_at(store, "genre-cnn", T0 + 30 * hour) == b
    assert reg.champion_at(store, "genre-cnn", (T0 + hour).astimezone(timezone(timedelta(hours=5)))) == b
    with pytest.raises(ValueError):
        reg.champion_at(store, "genre-cnn", datetime(2026, 11, 24))


def test_log_time_never_goes_backwards(store):
    a, b = (_register(store, tag=t)["version"] for t in "ab")
    reg.promote(store, "genre-cnn", a, actor="x", reason="r", clock=lambda: T0)
    moved = reg.promote(store, "genre-cnn", b, actor="y", reason="r", clock=lambda: T0 - timedelta(hours=1))
    assert moved["since"] == T0.isoformat()


def test_genre_names_with_spaces(store):
    assert len({reg.ova_model_name(g) for g in GENRES}) == len(GENRES)
    assert reg.ova_model_name("science  fiction") == "genre-ova/science-fiction"
    out = _register(store, name="genre-ova/Science Fiction", version="run-1")
    _register(store, name="genre-ova/TV Movie", version="run-1")
    assert out["name"] == "genre-ova/science-fiction"
    assert reg.list_models(store) == ["genre-ova/science-fiction", "genre-ova/tv-movie"]
    shown = reg.show_version(store, reg.ova_model_name("Science Fiction"), "run-1")
    assert shown["display_name"] == "genre-ova/Science Fiction"
    reg.promote(store, "genre-ova/Science Fiction", "run-1", actor="x", reason="r")
    assert reg.get_champion(store, "genre-ova/science-fiction")["version"] == "run-1"
    assert reg.get_champion(store, "genre-ova/TV Movie") is None
    assert all(" " not in o.key for o in store.list("models/"))


@pytest.mark.parametrize("bad", ["", "a//b", "genre-ova/versions", "aliases", "/", "!!!"])
def test_invalid_model_names(bad):
    with pytest.raises(reg.InvalidName):
        reg.model_key(bad)


def test_invalid_versions_and_file_names(store):
    for version in ["../x", "a/b", "", "versions", ".hidden"]:
        with pytest.raises(reg.InvalidName):
            _register(store, version=version)
    for rel in ["lineage.json", "../x", "a//b"]:
        with pytest.raises(reg.InvalidName):
            reg.register_version(store, "genre-cnn", files={rel: b"x"}, metrics={}, lineage={})
    assert list(store.list("models/")) == []


def test_run_version_id_is_deterministic_and_valid():
    run_id = "scheduled__2026-11-24T10:15:00+00:00"
    version = reg.run_version_id(run_id)
    assert version == reg.run_version_id(run_id)
    assert all(ch.isalnum() or ch in "._-" for ch in version)


def test_download_detects_corruption(store, tmp_path):
    v = _register(store)["version"]
    store.put_bytes(f"models/genre-cnn/versions/{v}/model.keras", b"tampered")
    with pytest.raises(reg.CorruptVersion):
        reg.download_version(store, "genre-cnn", v, tmp_path / "dl")


def _promote_many(store, name, versions, rounds, actor):
    """Promote the given versions in turn; return how many calls actually moved the champion."""
    moved = 0
    for i in range(rounds):
        moved += reg.promote(store, name, versions[i % len(versions)], actor=actor, reason="race")["changed"]
    return moved


@pytest.mark.slow
def test_racing_promoter_threads(store):
    versions = [_register(store, tag=str(i), version=f"run-{i:02d}")["version"] for i in range(16)]
    results: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker(t: int) -> None:
        start.wait()
        moved = _promote_many(store, "genre-cnn", versions[2 * t : 2 * t + 2], 4, f"thread-{t}")
        with lock:
            results.append(moved)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(results) == 8
    _assert_consistent_log(store, "genre-cnn", sum(results))


def _process_worker(args):
    url, versions, actor = args
    return _promote_many(open_store(url), "genre-cnn", versions, 6, actor)


@pytest.mark.slow
def test_racing_promoter_processes_on_file_store(tmp_path):
    url = (tmp_path / "registry").as_uri()
    store = open_store(url)
    versions = [_register(store, tag=str(i), version=f"run-{i:02d}")["version"] for i in range(6)]
    jobs = [(url, versions[2 * p : 2 * p + 2], f"proc-{p}") for p in range(3)]
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        results = pool.map(_process_worker, jobs)
    _assert_consistent_log(store, "genre-cnn", sum(results))


def _three_promotions(store):
    versions = [_register(store, tag=t)["version"] for t in ("v1", "v2", "v3")]
    for v in versions:
        reg.promote(store, "genre-cnn", v, actor="x", reason="r")
    return versions


def test_rolling_back_twice_goes_further_back_never_to_the_bad_model(store):
    v1, v2, v3 = _three_promotions(store)
    assert reg.rollback(store, "genre-cnn", actor="ops", reason="v3 regressed")["version"] == v2
    second = reg.rollback(store, "genre-cnn", actor="ops", reason="v2 too")
    assert second["changed"] and second["version"] == v1  # before v2's promotion, not back to v3
    with pytest.raises(reg.NoRollbackTarget, match="name one with --to"):
        reg.rollback(store, "genre-cnn", actor="ops", reason="nothing before v1")
    moves = [(e["action"], e["from_version"], e["to_version"]) for e in reg.history(store, "genre-cnn")]
    assert moves[3:] == [("rollback", v3, v2), ("rollback", v2, v1)]
    # Naming a rolled-back version explicitly still restores it.
    assert reg.rollback(store, "genre-cnn", to_version=v3, actor="ops", reason="fixed")["version"] == v3
    _assert_consistent_log(store, "genre-cnn", 6)


def test_rollback_skips_versions_rolled_back_from_unless_promoted_again(store):
    v1, v2, v3 = _three_promotions(store)
    reg.rollback(store, "genre-cnn", to_version=v1, actor="ops", reason="v3 and v2 both bad")
    v4 = _register(store, tag="v4")["version"]
    reg.promote(store, "genre-cnn", v4, actor="x", reason="r")
    assert reg.rollback(store, "genre-cnn", actor="ops", reason="v4 bad")["version"] == v1
    reg.promote(store, "genre-cnn", v3, actor="x", reason="v3 fixed and promoted again")
    assert reg.rollback(store, "genre-cnn", actor="ops", reason="v3 bad after all")["version"] == v1
    assert reg.rollback_target([*reg.history(store, "genre-cnn")[:3]]) == v2  # pure: the log is enough


@pytest.fixture
def paused_rollback(monkeypatch):
    """Holds the rollback running in the thread named 'slow' between choosing its target and its CAS."""
    from postergenre import champion

    reached, release = threading.Event(), threading.Event()
    real = champion._move_champion

    def move(*args, **kwargs):
        if threading.current_thread().name == "slow":
            reached.set()
            assert release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(champion, "_move_champion", move)
    return reached, release


def _start_slow(fn):
    outcome = {}

    def run():
        try:
            outcome["result"] = fn()
        except Exception as exc:  # handed to the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="slow")
    thread.start()
    return thread, outcome


def test_a_concurrent_second_rollback_is_a_noop_that_says_so(store, paused_rollback):
    reached, release = paused_rollback
    v1, v2, v3 = _three_promotions(store)
    thread, slow = _start_slow(lambda: reg.rollback(store, "genre-cnn", actor="a", reason="v3 bad"))
    assert reached.wait(30)  # the slow one has read champion v3 and chosen v2
    assert reg.rollback(store, "genre-cnn", actor="b", reason="v3 bad")["version"] == v2
    release.set()
    thread.join(30)
    assert not slow["result"]["changed"] and slow["result"]["version"] == v2
    assert "concurrent" in slow["result"]["note"]
    assert [e["action"] for e in reg.history(store, "genre-cnn")] == ["promote"] * 3 + ["rollback"]
    _assert_consistent_log(store, "genre-cnn", 4)


def test_a_stale_rollback_is_refused_even_when_the_champion_came_back(store, paused_rollback):
    reached, release = paused_rollback
    v1, v2, v3 = _three_promotions(store)
    thread, slow = _start_slow(lambda: reg.rollback(store, "genre-cnn", actor="a", reason="v3 bad"))
    assert reached.wait(30)
    reg.rollback(store, "genre-cnn", actor="b", reason="v3 bad")
    reg.promote(store, "genre-cnn", v3, actor="c", reason="v3 fixed")  # champion v3 again, generation 5
    release.set()
    thread.join(30)
    assert isinstance(slow["error"], reg.ChampionChanged) and "moved meanwhile" in str(slow["error"])
    assert reg.get_champion(store, "genre-cnn")["version"] == v3
    _assert_consistent_log(store, "genre-cnn", 5)


CORRUPT_JSON = [b"", b"{not json", b"\xff\xfe\x00garbage"]
WRONG_SHAPE_POINTERS = [
    b"[]",
    b'"genre-cnn"',
    b'{"version": 3}',
    b'{"version": "v1", "generation": 1, "since": "yesterday", "entry": {}}',
    b'{"version": "a", "generation": true, "since": "2026-11-24T10:00:00+00:00", "entry": {}}',
]


@pytest.mark.parametrize("data", CORRUPT_JSON + WRONG_SHAPE_POINTERS)
def test_a_corrupt_champion_pointer_is_a_one_line_error_naming_the_file(store, data):
    _three_promotions(store)
    store.put_bytes("models/genre-cnn/champion.json", data)
    for call in (
        lambda: reg.get_champion(store, "genre-cnn"),
        lambda: reg.history(store, "genre-cnn"),
        lambda: reg.rollback(store, "genre-cnn", actor="ops", reason="r"),
        lambda: reg.promote(store, "genre-cnn", reg.list_versions(store, "genre-cnn")[0]["version"], actor="x",
                            reason="r"),
    ):
        with pytest.raises(reg.CorruptRegistry) as caught:
            call()
        message = str(caught.value)
        assert "models/genre-cnn/champion.json" in message and "\n" not in message


def test_pointer_entry_must_describe_the_move_to_it(store):
    _three_promotions(store)
    pointer = reg.get_champion(store, "genre-cnn")
    pointer["entry"]["to_version"] = "someone-else"
    store.put_json("models/genre-cnn/champion.json", pointer)
    with pytest.raises(reg.CorruptRegistry, match="does not describe the move"):
        reg.get_champion(store, "genre-cnn")


@pytest.mark.parametrize(
    ("file", "data"),
    [("lineage.json", b"{oops"), ("lineage.json", b"[1, 2]"), ("lineage.json", b'{"files": {"../x": 1}}'),
     ("metrics.json", b""), ("metrics.json", b"[]")],
)
def test_corrupt_version_files_name_the_file(store, file, data):
    version = _register(store, version="run-1")["version"]
    key = f"models/genre-cnn/versions/{version}/{file}"
    store.put_bytes(key, data)
    with pytest.raises(reg.CorruptRegistry, match=key):
        reg.show_version(store, "genre-cnn", version)


def test_corrupt_alias_log_entry_names_the_file(store):
    _three_promotions(store)
    store.put_bytes("models/genre-cnn/aliases/00000001.json", b'{"generation": 7}')
    with pytest.raises(reg.CorruptRegistry, match="aliases/00000001.json"):
        reg.history(store, "genre-cnn")
    store.delete("models/genre-cnn/aliases/00000001.json")
    with pytest.raises(reg.CorruptRegistry, match="entry 1 is missing"):
        reg.history(store, "genre-cnn")
