"""A published snapshot is immutable under any interleaving of ingests, and readers verify it.

Two ingests of different exports under one id are interleaved deterministically: ingest A runs in a thread and
is held just before one of its snapshot writes while ingest B runs to the end; then A goes on. Whoever wins,
the published files are exactly the winner's, on the file store and on the real S3 server.
"""

from pathlib import Path

import pytest
from ingest_helpers import PausingStore, jpeg, make_export, run_in_thread, small_export

from postergenre.snapshots import (
    POSTER_PREFIX,
    SnapshotConflict,
    SnapshotCorrupt,
    ingest,
    load_manifest,
    load_posters,
    load_quarantine,
    load_rows,
    snapshot_key,
)
from postergenre.storage import ObjectStore, open_store

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.s3)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    url = (tmp_path / "store").as_uri() if request.param == "file" else request.getfixturevalue("s3_url")
    return open_store(url, concurrency=8)


@pytest.fixture
def exports(tmp_path: Path) -> dict[str, Path]:
    return {
        "A": small_export(tmp_path / "a", genre="Drama", colour=(200, 0, 0)),
        "B": small_export(tmp_path / "b", genre="Horror", colour=(0, 0, 200)),
    }


def _rows(store: ObjectStore, snapshot_id: str) -> list[tuple]:
    return sorted(map(tuple, load_rows(store, snapshot_id).itertuples(index=False)))


# A is held before the named write; B then runs to the end. "B" wins when A was held before it wrote anything.
INTERLEAVINGS = [
    ("genres.csv", "B"),  # A has checked there is no manifest, and wrote nothing yet
    ("posters.csv", "A"),  # A wrote genres.csv
    ("quarantine.json", "A"),  # A wrote genres.csv and posters.csv
    ("manifest.json", "A"),  # A wrote every data file, not the commit marker
]


@pytest.mark.parametrize("held_before,winner", INTERLEAVINGS)
def test_one_content_wins_and_nothing_replaces_it(store, exports, held_before, winner):
    paused = PausingStore(store, snapshot_key("s", held_before))
    thread, outcome = run_in_thread(lambda: ingest(str(exports["A"]), paused, snapshot_id="s", concurrency=4))
    assert paused.paused.wait(60), "ingest A never reached the write it is held before"
    try:
        b = ingest(str(exports["B"]), store, snapshot_id="s", concurrency=4)
        b_error = None
    except SnapshotConflict as err:
        b, b_error = None, err
    paused.go.set()
    thread.join(60)

    loser = "A" if winner == "B" else "B"
    errors = {"A": outcome.get("error"), "B": b_error}
    assert isinstance(errors[loser], SnapshotConflict), errors
    assert errors[winner] is None, errors
    won = outcome["result"] if winner == "A" else b
    assert won["status"] == "published"

    # The published files are the winner's and all of them match the manifest's hashes.
    genre = {"A": "Drama", "B": "Horror"}[winner]
    assert _rows(store, "s") == [(1, genre), (2, "Comedy")]
    assert load_manifest(store, "s")["content_hash"] == won["content_hash"]
    assert len(load_posters(store, "s")) == 2
    assert load_quarantine(store, "s")["items"] == []
    # and the winner's re-ingest is still "unchanged" while the loser's is still refused
    assert ingest(str(exports[winner]), store, snapshot_id="s")["status"] == "unchanged"
    with pytest.raises(SnapshotConflict):
        ingest(str(exports[loser]), store, snapshot_id="s")


def test_same_content_racing_publishes_once_and_both_succeed(store, exports):
    paused = PausingStore(store, snapshot_key("s", "manifest.json"))
    thread, outcome = run_in_thread(lambda: ingest(str(exports["A"]), paused, snapshot_id="s", concurrency=4))
    assert paused.paused.wait(60)
    first = ingest(str(exports["A"]), store, snapshot_id="s", concurrency=4)
    paused.go.set()
    thread.join(60)
    assert first["status"] == "published"
    assert outcome["result"]["status"] == "unchanged"
    assert _rows(store, "s") == [(1, "Drama"), (2, "Comedy")]


def test_a_conflicting_reingest_is_refused_before_it_uploads_a_poster(store, tmp_path):
    export = small_export(tmp_path / "e")
    ingest(str(export), store, snapshot_id="s")
    blobs = sorted(store.list_keys(POSTER_PREFIX + "/"))
    (export / "genres.csv").write_text("id,genre\n1,Drama\n2,Comedy\n3,War\n")
    (export / "posters" / "3.jpg").write_bytes(jpeg((7, 7, 7)))
    with pytest.raises(SnapshotConflict, match="already published with different content"):
        ingest(str(export), store, snapshot_id="s")
    assert sorted(store.list_keys(POSTER_PREFIX + "/")) == blobs  # no orphan poster of the refused content
    assert not list(store.list_keys("quarantine/"))


def test_files_left_by_an_interrupted_ingest_of_other_content_are_refused_then_swept(store, tmp_path):
    export = small_export(tmp_path / "e")
    store.put_bytes(snapshot_key("s", "genres.csv"), b"movie_id,genre\n9,War\n")  # killed before its manifest
    with pytest.raises(SnapshotConflict, match="never published"):
        ingest(str(export), store, snapshot_id="s")
    assert not list(store.list_keys(POSTER_PREFIX + "/"))  # refused before uploading
    # once older than the cut-off the leftovers are swept, and the id can be published
    result = ingest(str(export), store, snapshot_id="s", stale_after=1e-9)
    assert result["status"] == "published" and _rows(store, "s") == [(1, "Drama"), (2, "Comedy")]


def test_an_interrupted_ingest_of_the_same_content_is_resumed(store, tmp_path):
    export = small_export(tmp_path / "e")
    ingest(str(export), store, snapshot_id="first")
    store.put_bytes(snapshot_key("s", "genres.csv"), store.get_bytes(snapshot_key("first", "genres.csv")))
    assert ingest(str(export), store, snapshot_id="s")["status"] == "published"
    assert _rows(store, "s") == _rows(store, "first")


@pytest.mark.parametrize("name", ["genres.csv", "posters.csv", "quarantine.json"])
def test_reading_a_tampered_snapshot_file_names_it(store, tmp_path, name):
    export = make_export(
        tmp_path / "e", ["1,Drama", "2,Comedy", "3,War"], {"1.jpg": jpeg(), "2.jpg": jpeg((1, 1, 1))}
    )
    ingest(str(export), store, snapshot_id="s")
    key = snapshot_key("s", name)
    store.put_bytes(key, store.get_bytes(key).replace(b"1", b"7", 1))
    loader = {"genres.csv": load_rows, "posters.csv": load_posters, "quarantine.json": load_quarantine}[name]
    with pytest.raises(SnapshotCorrupt, match=f"{name} does not match its manifest"):
        loader(store, "s")


def test_a_missing_snapshot_file_is_a_clear_error(store, tmp_path):
    ingest(str(small_export(tmp_path / "e")), store, snapshot_id="s")
    store.delete(snapshot_key("s", "genres.csv"))
    with pytest.raises(SnapshotCorrupt, match="genres.csv is missing"):
        load_rows(store, "s")
