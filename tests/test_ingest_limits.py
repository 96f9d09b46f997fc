"""Caps: bytes per poster, pixels per image, CSV and archive bytes; over-cap input is refused or quarantined
with its reason and size, never read whole into memory nor kept in the store."""

import io
import threading
import time
import tracemalloc
import zipfile

import pytest
from ingest_helpers import small_export, zip_export
from PIL import Image

from postergenre.limits import Limits
from postergenre.poster_scan import ByteBudget, ordered_map
from postergenre.snapshots import SourceError, ingest, load_quarantine
from postergenre.storage import open_store

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def store(tmp_path):
    return open_store((tmp_path / "store").as_uri())


def _item(store, reason):
    [item] = [i for i in load_quarantine(store, "s")["items"] if i["reason"] == reason]
    return item


def test_a_poster_over_the_byte_cap_is_quarantined_with_its_size_and_never_read(store, tmp_path, monkeypatch):
    export = small_export(tmp_path / "e")
    (export / "genres.csv").write_text("id,genre\n1,Drama\n2,Comedy\n3,War\n")
    (export / "posters" / "3.jpg").write_bytes(b"\xff\xd8\xff" + bytes(5000))
    opened = []
    from postergenre import poster_scan

    real = poster_scan.open_regular
    monkeypatch.setattr(poster_scan, "open_regular", lambda path: (opened.append(path.name), real(path))[1])
    result = ingest(str(export), store, snapshot_id="s", limits=Limits(poster_bytes=4096))
    assert result["movies"] == 2
    item = _item(store, "poster_too_large")
    assert item["size"] == 5003 and "sha256" not in item and "POSTERGENRE_MAX_POSTER_BYTES" in item["detail"]
    assert "3.jpg" not in opened
    assert not list(store.list_keys("quarantine/"))


def test_an_image_over_the_pixel_cap_is_quarantined_before_decoding(store, tmp_path):
    export = small_export(tmp_path / "e")
    (export / "genres.csv").write_text("id,genre\n1,Drama\n2,Comedy\n3,War\n")
    buf = io.BytesIO()
    Image.new("L", (2000, 2000)).save(buf, "PNG")  # 4 MP of one colour: a few KB on disk
    (export / "posters" / "3.png").write_bytes(buf.getvalue())
    ingest(str(export), store, snapshot_id="s", limits=Limits(image_pixels=1_000_000))
    item = _item(store, "too_many_pixels")
    assert "4000000 pixels" in item["detail"] and item["name"] == "3.png"


def test_a_genres_csv_over_its_cap_is_refused(store, tmp_path):
    export = small_export(tmp_path / "e")
    with pytest.raises(SourceError, match="genres.csv is .* over the cap of 10 .*POSTERGENRE_MAX_CSV_BYTES"):
        ingest(str(export), store, snapshot_id="s", limits=Limits(csv_bytes=10))


def test_the_zip_with_a_huge_poster_member_stays_small_in_memory(store, tmp_path):
    """A few-KB zip declaring a 256 MiB "poster": before, it was extracted and then read whole (>= 256 MiB
    of Python memory); now it is judged from the zip's index and the ingest's peak stays small."""
    export = small_export(tmp_path / "e")
    archive = zip_export(tmp_path / "bomb.zip", export)
    with (
        zipfile.ZipFile(archive, "a", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf,
        zf.open("letterboxd/posters/9000001.jpg", "w", force_zip64=True) as member,
    ):
        for _ in range(256):
            member.write(bytes(2**20))
    tracemalloc.start()
    try:
        result = ingest(str(archive), store, snapshot_id="s")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result["movies"] == 2 and result["quarantine"]["poster_too_large"] == 1
    assert peak < 32 * 2**20, f"peak {peak / 2**20:.0f} MiB"


def test_the_byte_budget_bounds_what_the_threads_hold_at_once():
    budget = ByteBudget(100)
    held = []
    lock = threading.Lock()
    now = [0]

    def take(n: int) -> int:
        with budget.hold(n):
            with lock:
                now[0] += n
                held.append(now[0])
            time.sleep(0.01)
            with lock:
                now[0] -= n
        return n

    sizes = [30, 40, 50, 20, 60, 10, 250, 5] * 3
    assert list(ordered_map(take, sizes, workers=8)) == sizes
    # never more than the budget at once, but for the one request bigger than all of it, which runs alone
    assert all(h <= 100 or h == 250 for h in held) and 250 in held


def test_ordered_map_cancels_what_is_queued_after_an_error():
    started = []

    def work(i: int) -> int:
        started.append(i)
        if i == 3:
            raise ValueError("boom")
        time.sleep(0.01)
        return i

    with pytest.raises(ValueError, match="boom"):
        list(ordered_map(work, range(1000), workers=2))
    assert len(started) < 50  # the queue is bounded and cancelled, not all 1000 run


def test_an_s3_export_object_over_the_cap_is_never_downloaded(tmp_path, s3_url):
    export = small_export(tmp_path / "e")
    source = open_store(s3_url + "-export")
    source.upload_files([(p, p.relative_to(export).as_posix()) for p in export.rglob("*") if p.is_file()])
    source.put_bytes("genres.csv", b"id,genre\n1,Drama\n2,Comedy\n3,War\n")
    source.put_bytes("posters/3.jpg", b"\xff\xd8\xff" + bytes(10_000))
    store = open_store(s3_url)
    result = ingest(s3_url + "-export", store, snapshot_id="s", limits=Limits(poster_bytes=5000))
    assert result["movies"] == 2
    item = _item(store, "poster_too_large")
    assert item["size"] == 10_003 and item["name"] == "posters/3.jpg"
