"""One behavioural suite for every ObjectStore backend: a local directory and a real S3 server (SeaweedFS)."""

import hashlib
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from support.process import free_ports

from postergenre.storage import (
    FileStore,
    InvalidKey,
    NotFound,
    ObjectInfo,
    ObjectStore,
    PreconditionFailed,
    S3Store,
    StoreError,
    StoreUnreachable,
    open_store,
    validate_key,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.s3)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "file":
        return (tmp_path / "store").as_uri()
    return request.getfixturevalue("s3_url")


@pytest.fixture
def store(store_url: str) -> ObjectStore:
    return open_store(store_url, concurrency=8)


def _put_many(store: ObjectStore, items: dict[str, bytes]) -> None:
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda kv: store.put_bytes(*kv), items.items()))


# ------------------------------------------------------------------------------------------- basic objects


def test_round_trip(store: ObjectStore) -> None:
    data = bytes(range(256)) * 10
    etag = store.put_bytes("posters/a/1.jpg", data)

    assert store.get_bytes("posters/a/1.jpg") == data
    assert store.get_with_etag("posters/a/1.jpg") == (data, etag)
    assert store.head("posters/a/1.jpg") == ObjectInfo("posters/a/1.jpg", len(data), etag)
    assert store.exists("posters/a/1.jpg")

    store.delete("posters/a/1.jpg")
    assert not store.exists("posters/a/1.jpg")
    store.delete("posters/a/1.jpg")  # deleting a missing key is fine


def test_json_is_canonical_utf8(store: ObjectStore) -> None:
    doc = {"zeta": 1, "alpha": ["Science Fiction", "Драма"], "nested": {"b": 2, "a": None}}
    etag = store.put_json("meta/doc.json", doc)

    raw = store.get_bytes("meta/doc.json")
    assert store.get_json("meta/doc.json") == doc
    assert raw.decode("utf-8") == json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    # Equal documents in any key order give equal bytes, hence equal etags.
    assert store.put_json("meta/doc.json", dict(reversed(doc.items()))) == etag


def test_missing_key_is_not_found(store: ObjectStore, tmp_path: Path) -> None:
    assert store.head("nope/x") is None
    assert not store.exists("nope/x")
    for read in (store.get_bytes, store.get_with_etag, store.get_json):
        with pytest.raises(NotFound, match="nope/x"):
            read("nope/x")
    with pytest.raises(NotFound):
        store.download_file("nope/x", tmp_path / "out" / "x")
    assert not (tmp_path / "out" / "x").exists()


def test_overwrite_is_atomic_for_concurrent_readers(store: ObjectStore) -> None:
    versions = [bytes([i]) * 300_000 for i in (1, 2)]
    store.put_bytes("big.bin", versions[0])
    stop = threading.Event()
    seen: list[bytes] = []

    def reader() -> None:
        while not stop.is_set():
            seen.append(store.get_bytes("big.bin"))

    with ThreadPoolExecutor(max_workers=2) as pool:
        readers = [pool.submit(reader) for _ in range(2)]
        etags = [store.put_bytes("big.bin", versions[i % 2]) for i in range(1, 21)]
        stop.set()
        for future in readers:
            future.result()

    assert seen, "readers never ran"
    assert all(data in versions for data in seen), "a reader saw a partially written object"
    assert store.get_bytes("big.bin") == versions[0]
    assert len(set(etags)) == 2  # the etag follows the content


# ---------------------------------------------------------------------------------------------------- list


def test_list_sorts_and_respects_prefixes(store: ObjectStore, store_url: str) -> None:
    inside = {f"data/{i:02d}.txt": str(i).encode() for i in range(20)}
    inside.update({"data/sub/deep/z.txt": b"deep", "data/a.b": b"dot", "data/a/b": b"slash"})
    outside = {"datasets/x.txt": b"x", "other/y.txt": b"y", "data.txt": b"d"}
    written = inside | outside
    _put_many(store, written)
    store.put_if("data/00.txt", b"0", if_match=store.head("data/00.txt").etag)  # leaves a lock file
    sibling = open_store(store_url + "2")  # shares the string prefix but is another store
    sibling.put_bytes("data/01.txt", b"not mine")

    listed = list(store.list("data/"))

    # Byte order, so "data/a.b" comes before "data/a/b" whatever order the backend walks in.
    assert [info.key for info in listed] == sorted(inside)
    assert all(info.size == len(inside[info.key]) for info in listed)
    assert [info.key for info in store.list("data.")] == ["data.txt"]
    assert [info.key for info in store.list("data")] == sorted(k for k in written if k.startswith("data"))
    assert [info.key for info in store.list()] == sorted(written)
    assert list(store.list("nothing/here/")) == []


@pytest.mark.slow
def test_list_paginates_past_1000_keys(store: ObjectStore) -> None:
    inside = {f"many/{i:05d}": b"" for i in range(1010)}
    _put_many(store, inside | {"manx": b"", "more/x": b""})

    assert [info.key for info in store.list("many/")] == sorted(inside)


# ------------------------------------------------------------------------------------------- compare & swap


def test_put_if_create_only_and_compare_and_swap(store: ObjectStore) -> None:
    first = store.put_if("registry/current.json", b"v1", if_match=None)
    with pytest.raises(PreconditionFailed):
        store.put_if("registry/current.json", b"again", if_match=None)

    second = store.put_if("registry/current.json", b"v2", if_match=first)
    assert store.get_with_etag("registry/current.json") == (b"v2", second)
    with pytest.raises(PreconditionFailed):  # stale etag: someone else wrote since
        store.put_if("registry/current.json", b"v3", if_match=first)
    with pytest.raises(PreconditionFailed):  # expecting a version of an object that does not exist
        store.put_if("registry/missing.json", b"v1", if_match=first)
    assert store.get_bytes("registry/current.json") == b"v2"
    assert not store.exists("registry/missing.json")


def test_racing_compare_and_swap_loses_no_update(store: ObjectStore) -> None:
    threads, increments = 8, 2
    barrier = threading.Barrier(threads)

    def create() -> bool:
        barrier.wait()
        try:
            store.put_if("counter.json", json.dumps({"count": 0}).encode(), if_match=None)
        except PreconditionFailed:
            return False
        return True

    def increment() -> int:
        conflicts = 0
        barrier.wait()
        for _ in range(increments):
            while True:
                data, etag = store.get_with_etag("counter.json")
                new = json.dumps({"count": json.loads(data)["count"] + 1}).encode()
                try:
                    store.put_if("counter.json", new, if_match=etag)
                    break
                except PreconditionFailed:
                    conflicts += 1
        return conflicts

    with ThreadPoolExecutor(max_workers=threads) as pool:
        created = list(pool.map(lambda _: create(), range(threads)))
        list(pool.map(lambda _: increment(), range(threads)))

    assert created.count(True) == 1
    assert json.loads(store.get_bytes("counter.json")) == {"count": threads * increments}


# ------------------------------------------------------------------------------------------ bulk transfers


def test_upload_and_download_many_files(store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = {}
    for i in range(200):
        path = src / f"g{i % 7}" / f"{i}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(hashlib.sha256(str(i).encode()).digest() * (1 + i % 13))
        files[f"bulk/g{i % 7}/{i}.bin"] = path
    expected_bytes = sum(path.stat().st_size for path in files.values())
    uploaded: list[int] = []

    sent = store.upload_files([(path, key) for key, path in files.items()], progress=uploaded.append)

    assert sent == expected_bytes == sum(uploaded)
    assert len(uploaded) == len(files)
    assert {info.key: info.size for info in store.list("bulk/")} == {
        key: path.stat().st_size for key, path in files.items()
    }

    dest = tmp_path / "dest"
    downloaded: list[int] = []
    received = store.download_files([(key, dest / key) for key in files], progress=downloaded.append)

    assert received == expected_bytes == sum(downloaded)
    assert len(downloaded) == len(files)
    for key, path in files.items():
        assert (dest / key).read_bytes() == path.read_bytes()


def test_download_file_replaces_destination_atomically(store: ObjectStore, tmp_path: Path) -> None:
    store.put_bytes("models/m.keras", b"new model")
    dest = tmp_path / "local" / "m.keras"
    dest.parent.mkdir()
    dest.write_bytes(b"old model, longer than the new one")

    store.download_file("models/m.keras", dest)

    assert dest.read_bytes() == b"new model"
    assert [p.name for p in dest.parent.iterdir()] == ["m.keras"]


def test_failed_transfer_raises_not_found(store: ObjectStore, tmp_path: Path) -> None:
    store.put_bytes("have/1", b"1")
    with pytest.raises(NotFound, match="have/2"):
        store.download_files([("have/1", tmp_path / "1"), ("have/2", tmp_path / "2")])


# ---------------------------------------------------------------------------------------------------- keys

BAD_KEYS = ["../x", "/abs", "a//b", "a/../b", "a/./b", "a/", "", "a\\b", "a\x00b", ".~locks/x", "a/.~tmp-1"]


def test_invalid_keys_are_rejected_before_any_io(store: ObjectStore, tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"x")
    for key in BAD_KEYS:
        operations = [
            lambda k=key: store.put_bytes(k, b"x"),
            lambda k=key: store.get_bytes(k),
            lambda k=key: store.head(k),
            lambda k=key: store.put_if(k, b"x", if_match=None),
            lambda k=key: store.delete(k),
            lambda k=key: store.upload_files([(source, k)]),
            lambda k=key: store.download_file(k, tmp_path / "out"),
        ]
        for operation in operations:
            with pytest.raises(InvalidKey):
                operation()
    assert list(store.list()) == []
    assert not (tmp_path / "out").exists()


def test_invalid_key_is_a_value_error_and_good_keys_pass() -> None:
    for key in ("a", "posters/tt0111161.jpg", "a.b/c-d_e/f g", "..a/b..", ".hidden/x"):
        assert validate_key(key) == key
    with pytest.raises(ValueError):
        validate_key("../etc/passwd")


# ------------------------------------------------------------------------------------- opening and probing


def test_open_store_dispatches_on_scheme(tmp_path: Path, s3_env: dict[str, str]) -> None:
    file_store = open_store((tmp_path / "s").as_uri())
    assert isinstance(file_store, FileStore)
    assert file_store.root == tmp_path / "s"
    s3_store = open_store("s3://some-bucket/a/b/")
    assert isinstance(s3_store, S3Store)
    assert (s3_store.bucket, s3_store.prefix, s3_store.url) == ("some-bucket", "a/b", "s3://some-bucket/a/b")
    for url in ("gs://bucket/x", "file://relative/path", "/plain/path", "s3:///no-bucket"):
        with pytest.raises(StoreError, match="URL"):
            open_store(url)


def test_check_passes_on_a_usable_store(store: ObjectStore) -> None:
    store.check()


def test_unusable_file_root_is_unreachable(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    with pytest.raises(StoreUnreachable, match="a-file"):
        open_store((blocker / "store").as_uri()).check()


def _fast_s3(url: str) -> S3Store:
    """No retries and a short connect timeout: these stores are expected to fail."""
    return S3Store(url, max_attempts=1, connect_timeout=2, read_timeout=5)


@pytest.mark.s3
def test_closed_port_is_unreachable(s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    (port,) = free_ports(1)
    endpoint = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    store = _fast_s3("s3://some-bucket/p")
    started = time.monotonic()
    with pytest.raises(StoreUnreachable) as caught:
        store.check()
    with pytest.raises(StoreUnreachable):
        store.get_bytes("k")
    assert time.monotonic() - started < 30  # a guard against retry storms, not a benchmark
    message = str(caught.value)
    assert endpoint in message and "some-bucket" in message and "\n" not in message


@pytest.mark.s3
def test_missing_bucket_is_unreachable(s3_env: dict[str, str]) -> None:
    store = _fast_s3("s3://no-such-bucket-4f1c2a/p")
    with pytest.raises(StoreUnreachable, match="no-such-bucket-4f1c2a.*does not exist"):
        store.check()
    with pytest.raises(StoreUnreachable):
        store.put_bytes("k", b"v")


@pytest.mark.parametrize("variable", ["AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"])
def test_wrong_credentials_are_unreachable(
    s3_url: str, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "wrong-credential-value")
    store = _fast_s3(s3_url)
    with pytest.raises(StoreUnreachable, match=store.bucket):
        store.check()
    with pytest.raises(StoreUnreachable):
        store.get_bytes("k")


# ------------------------------------------------------------------------------------ failures and leftovers


def test_objects_report_when_they_were_written(store: ObjectStore) -> None:
    before = time.time() - 5
    store.put_bytes("a/1", b"x")
    [listed] = list(store.list("a/"))
    assert listed.modified is not None and before < listed.modified < time.time() + 5
    assert store.head("a/1").modified == pytest.approx(listed.modified, abs=1)


def test_a_full_disk_is_a_one_line_store_error_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    store = FileStore(tmp_path / "store")
    fsync = os.fsync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    for write in (lambda: store.put_bytes("a/b", b"x"), lambda: store.put_if("a/c", b"x", if_match=None)):
        with pytest.raises(StoreError, match="No space left on device") as info:
            write()
        assert "\n" not in str(info.value)
    monkeypatch.setattr(os, "fsync", fsync)
    assert not list((tmp_path / "store").rglob(".~tmp-*"))
    assert list(store.list_keys("")) == []


def test_the_file_store_sweeps_old_temp_files_only(tmp_path: Path) -> None:
    import os

    store = FileStore(tmp_path / "store")
    store.put_bytes("posters/ab/blob", b"complete")
    old = tmp_path / "store" / "posters" / "ab" / ".~tmp-0000000000000000"
    old.write_bytes(b"half")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    young = tmp_path / "store" / "posters" / "ab" / ".~tmp-1111111111111111"
    young.write_bytes(b"in progress")
    elsewhere = tmp_path / "store" / "models" / ".~tmp-2222222222222222"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"not under the prefix")
    os.utime(elsewhere, (time.time() - 7200, time.time() - 7200))

    assert store.sweep_temporaries("posters/", 3600) == 1
    assert not old.exists() and young.exists() and elsewhere.exists()
    assert store.get_bytes("posters/ab/blob") == b"complete"


@pytest.mark.s3
def test_s3_sweeps_stale_multipart_uploads_only(s3_url: str) -> None:
    store = open_store(s3_url)
    assert isinstance(store, S3Store)
    upload = store.client.create_multipart_upload(Bucket=store.bucket, Key=store._key("posters/big"))
    other = store.client.create_multipart_upload(Bucket=store.bucket, Key=store._key("models/big"))
    store.put_bytes("posters/done", b"complete")
    assert store.sweep_temporaries("posters/", 3600) == 0  # just begun: maybe still running
    assert store.sweep_temporaries("posters/", -60) == 1
    left = store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])
    assert [u["UploadId"] for u in left] == [other["UploadId"]]
    assert upload["UploadId"] not in [u["UploadId"] for u in left]
    assert store.get_bytes("posters/done") == b"complete"
