import io
import json
import tarfile
import zipfile

import pytest
from ingest_helpers import jpeg, make_export
from PIL import Image

from postergenre.snapshots import (
    POSTER_PREFIX,
    SnapshotConflict,
    SourceError,
    ingest,
    list_snapshots,
    load_manifest,
    load_rows,
    snapshot_key,
)
from postergenre.storage import open_store


@pytest.fixture
def store(tmp_path):
    return open_store((tmp_path / "store").as_uri())


@pytest.fixture
def export(tmp_path):
    return make_export(
        tmp_path / "export",
        ["1,Drama", "1,Western", "2,comedy", "3,Horror", "3,Anime", "4,Drama", "../../x,Drama", "5,Crime"],
        {
            "1.jpg": jpeg((200, 0, 0)),
            "2.jpg": jpeg((0, 200, 0)),
            "3.jpg": jpeg((0, 0, 200)),
            "4.jpg": b"",  # zero bytes: movie 4 has no valid poster
            "9.jpg": jpeg((9, 9, 9)),  # no genre rows
            # movie 5 has no poster at all
        },
    )


def test_ingest_publishes_clean_rows_and_quarantines_the_rest(store, export):
    result = ingest(str(export), store, snapshot_id="s1")
    assert result["status"] == "published"
    assert (result["movies"], result["rows"], result["posters"]) == (3, 4, 3)
    rows = load_rows(store, "s1")
    assert sorted(map(tuple, rows.itertuples(index=False))) == [
        (1, "Drama"),
        (1, "Western"),
        (2, "Comedy"),
        (3, "Horror"),
    ]

    quarantine = store.get_json(snapshot_key("s1", "quarantine.json"))
    assert quarantine["counts"] == {
        "empty_poster": 1,
        "invalid_id": 1,
        "no_valid_poster": 2,
        "poster_without_genres": 1,
        "unknown_genre": 1,
    }
    assert result["quarantined"] == sum(quarantine["counts"].values())
    by_reason = {item["reason"]: item for item in quarantine["items"]}
    assert by_reason["unknown_genre"]["raw"] == "3,Anime"
    assert by_reason["invalid_id"]["raw"] == "../../x,Drama"
    # the valid-but-orphaned poster's bytes are kept in quarantine, not lost
    orphan = by_reason["poster_without_genres"]
    assert store.exists(f"quarantine/sha256/{orphan['sha256'][:2]}/{orphan['sha256']}")

    manifest = load_manifest(store, "s1")
    assert manifest["genres"]["raw"]["Drama"] == 1 and manifest["genres"]["raw"]["Western"] == 1
    # movie 1 is Drama+Western: it collapses to its least common genre, tie broken by name -> Drama
    assert sum(manifest["genres"]["collapsed"].values()) == 3
    assert manifest["files"]["genres.csv"]["bytes"] == len(store.get_bytes(snapshot_key("s1", "genres.csv")))
    assert list_snapshots(store) == ["s1"]


def test_reingest_same_content_is_idempotent_and_uploads_nothing(store, export):
    ingest(str(export), store, snapshot_id="s1")
    again = ingest(str(export), store, snapshot_id="s1")
    assert again["status"] == "unchanged" and again["uploaded_bytes"] == 0
    other_id = ingest(str(export), store, snapshot_id="s2")
    assert other_id["status"] == "published" and other_id["uploaded_posters"] == 0
    assert other_id["uploaded_bytes"] == 0


def test_changed_export_uploads_only_new_posters(store, export):
    ingest(str(export), store, snapshot_id="s1")
    (export / "posters" / "5.jpg").write_bytes(jpeg((1, 2, 3)))
    result = ingest(str(export), store, snapshot_id="s2")
    assert result["uploaded_posters"] == 1 and result["movies"] == 4


def test_published_snapshot_is_immutable(store, export):
    ingest(str(export), store, snapshot_id="s1")
    before = store.get_bytes(snapshot_key("s1", "manifest.json"))
    (export / "genres.csv").write_text("id,genre\n1,Drama\n")
    with pytest.raises(SnapshotConflict, match="already published with different content"):
        ingest(str(export), store, snapshot_id="s1")
    assert store.get_bytes(snapshot_key("s1", "manifest.json")) == before


def test_png_named_jpg_is_accepted_by_content(store, tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (30, 40), (1, 2, 3)).save(buf, "PNG")
    export = make_export(tmp_path / "e", ["1,War"], {"1.jpg": buf.getvalue()})
    assert ingest(str(export), store, snapshot_id="p")["movies"] == 1


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_archives_with_hostile_member_paths(store, export, tmp_path, kind):
    archive = tmp_path / f"export.{kind}"
    members = [p for p in export.rglob("*") if p.is_file()]
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as zf:
            for p in members:
                zf.write(p, f"letterboxd/{p.relative_to(export)}")
            zf.writestr("../../evil.txt", b"escape")
    else:
        with tarfile.open(archive, "w:gz") as tf:
            for p in members:
                tf.add(p, f"letterboxd/{p.relative_to(export)}")
            info = tarfile.TarInfo("/etc/evil")
            info.size = 6
            tf.addfile(info, io.BytesIO(b"escape"))
    result = ingest(str(archive), store, snapshot_id="a")
    assert result["movies"] == 3
    assert result["quarantine"]["unsafe_archive_path"] == 1
    assert not (tmp_path.parent / "evil.txt").exists()


def test_missing_source_fails_fast_with_one_line(store, tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        ingest(str(tmp_path / "nope"), store, snapshot_id="x")
    assert list_snapshots(store) == []


def test_export_without_header_is_rejected_before_anything_is_written(store, tmp_path):
    export = tmp_path / "bad"
    export.mkdir()
    (export / "genres.csv").write_text("1,Drama\n")
    with pytest.raises(ValueError, match="header"):
        ingest(str(export), store, snapshot_id="x")
    assert list(store.list("")) == []


@pytest.mark.parametrize("snapshot_id", ["../x", "a/b", "", ".hidden", "x" * 65])
def test_hostile_snapshot_ids_are_refused(store, export, snapshot_id):
    with pytest.raises(ValueError, match="invalid snapshot id"):
        ingest(str(export), store, snapshot_id=snapshot_id)


def test_synthetic_faults_snapshot_accounts_for_every_input(store, tmp_path):
    from postergenre.synth import generate_snapshot

    summary = generate_snapshot(tmp_path / "faulty", movies=300, seed=3, faults=True)
    result = ingest(str(summary.out), store, snapshot_id="f")
    quarantine = store.get_json(snapshot_key("f", "quarantine.json"))
    manifest = load_manifest(store, "f")
    lines = (summary.out / "genres.csv").read_bytes().decode("utf-8-sig").splitlines()[1:]
    rejected_rows = [i for i in quarantine["items"] if "line" in i]
    rows_of_movies_without_poster = sum(
        len(i["detail"].removeprefix("rows kept out: ").split(", "))
        for i in quarantine["items"]
        if i["reason"] == "no_valid_poster"
    )
    # every input line is a published row, a quarantined row, a blank line, or a row of a poster-less movie
    assert len(lines) == (
        manifest["counts"]["rows"]
        + len(rejected_rows)
        + quarantine["blank_lines"]
        + rows_of_movies_without_poster
    )
    for reason in (
        "malformed_row",
        "invalid_id",
        "unknown_genre",
        "duplicate_row",
        "empty_poster",
        "not_an_image",
        "corrupt_poster",
        "poster_without_genres",
        "no_valid_poster",
    ):
        assert quarantine["counts"].get(reason, 0) > 0, reason
    assert result["quarantined"] == len(quarantine["items"])
    published = {info.key.rsplit("/", 1)[-1] for info in store.list(POSTER_PREFIX + "/")}
    assert len(published) == manifest["counts"]["posters"]
    assert json.loads(json.dumps(result)) == result


def test_ingest_into_and_from_the_real_s3_server(export, s3_url):
    """Store on S3, and a second ingest whose *source* is an export uploaded to an s3:// prefix."""
    store = open_store(s3_url)
    first = ingest(str(export), store, snapshot_id="s3a")
    assert first["status"] == "published" and first["movies"] == 3

    source = open_store(s3_url + "-export")
    source.upload_files([(p, p.relative_to(export).as_posix()) for p in export.rglob("*") if p.is_file()])
    source.put_bytes("posters/..%2Fevil.jpg", b"x")  # a hostile-looking name inside the source bucket
    again = ingest(s3_url + "-export", store, snapshot_id="s3b")
    assert again["movies"] == 3 and again["uploaded_posters"] == 0
    assert again["quarantine"]["bad_poster_name"] == 1
    assert list_snapshots(store) == ["s3a", "s3b"]


def test_unreachable_store_fails_fast(export, monkeypatch):
    from postergenre.storage import StoreUnreachable

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    with pytest.raises(StoreUnreachable):
        ingest(str(export), open_store("s3://bucket/prefix"), snapshot_id="u")
