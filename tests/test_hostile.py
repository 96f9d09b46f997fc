"""Hostile inputs through the command line (every command but ingest: see test_hostile_ingest.py).

Each case runs once with ``--json`` and once without, in a copy of one prepared home (a published, prepared
snapshot and a genre-cnn champion with history v1 -> v2 -> v3). Every run must be a known failure (exit 2 for
usage errors, 3 for refused input; never 1), print one ``error:`` line and no traceback, print one JSON document
with ``--json``, write nothing but what the case allows, leave no temp file, and leave the store, the registry
and the metadata DB as they were and consistent.
"""

from __future__ import annotations

import base64
import shutil
import socket
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from hostile_checks import (
    KNOWN_FAILURE,
    USAGE_ERROR,
    FsChanges,
    check_cli_failure,
    check_no_temp_files,
    check_store_consistent,
    check_writes_confined,
    fs_snapshot,
    huge_png,
    isolated_tmpdir,
)
from PIL import Image
from typer.testing import CliRunner

from postergenre import registry
from postergenre.cli import app
from postergenre.config import Settings, get_settings
from postergenre.genres import GENRES
from postergenre.storage import open_store

# A 353-byte legacy-format .pth whose one storage declares 2**28 floats (1 GiB): made with torch.save of
# {"w": torch.ones(1)} and its length field patched (see test_lite0), kept as bytes so no torch is needed here.
HUGE_PTH = base64.b64decode(
    "gAKKCmz8nEb5IGqoUBkugAJN6QMugAJ9cQAoWBAAAABwcm90b2NvbF92ZXJzaW9ucQFN6QNYDQAAAGxpdHRsZV9lbmRpYW5xAohYCgAAAH"
    "R5cGVfc2l6ZXNxA31xBChYBQAAAHNob3J0cQVLAlgDAAAAaW50cQZLBFgEAAAAbG9uZ3EHSwR1dS6AAn1xAFgBAAAAd3EBY3RvcmNoLl91"
    "dGlscwpfcmVidWlsZF90ZW5zb3JfdjIKcQIoKFgHAAAAc3RvcmFnZXEDY3RvcmNoCkZsb2F0U3RvcmFnZQpxBFgOAAAAOTQ3NDMyODE3MD"
    "E2ODBxBVgDAAAAY3B1cQZLAU50cQdRSwBLAYVxCEsBhXEJiWNjb2xsZWN0aW9ucwpPcmRlcmVkRGljdApxCilScQt0cQxScQ1zLoACXXEA"
    "WA4AAAA5NDc0MzI4MTcwMTY4MHEBYS4AAAAQAAAAAAAAgD8="
)
SNAPSHOT = "s"
VERSIONS = ("v1", "v2", "v3")


# ------------------------------------------------------------------------------------------ the prepared home


def _invoke(args: list[str], env: dict[str, str] | None = None):
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, args, env=env)
    finally:
        get_settings.cache_clear()


def _tiny_model_file(path: Path) -> Path:
    import keras

    inputs = keras.Input((16, 16, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    keras.Model(inputs, keras.layers.Dense(len(GENRES), activation="softmax")(x)).save(path)
    return path


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A home with snapshot ``s`` ingested and prepared, and genre-cnn promoted v1 -> v2 -> v3."""
    root = tmp_path_factory.mktemp("hostile-template")
    home = root / "home"
    env = {"POSTERGENRE_HOME": str(home), "POSTERGENRE_STORE_URL": "", "POSTERGENRE_REGISTRY_URL": "",
           "POSTERGENRE_DB_URL": ""}  # fmt: skip
    for args in (["synth", str(root / "export"), "--movies", "550", "--seed", "2"],
                 ["ingest", str(root / "export"), "--snapshot", SNAPSHOT], ["prepare", SNAPSHOT]):  # fmt: skip
        result = _invoke(args, env)
        assert result.exit_code == 0, result.output
    settings = Settings(home=home)
    store = open_store(settings.registry_url)
    model = _tiny_model_file(root / "model.keras")
    for version in VERSIONS:
        registry.register_version(
            store, "genre-cnn", files={"model.keras": model}, version=version,
            metrics={"test": {"classes": list(GENRES)}, "tag": version}, lineage={"tag": version},
        )  # fmt: skip
        registry.promote(store, "genre-cnn", version, actor="template", reason="history")
    good = root / "good.png"
    Image.new("RGB", (20, 30), (200, 30, 30)).save(good)
    result = _invoke(["predict", str(good)], env)  # fills the model cache once, so cases load, not download
    assert result.exit_code == 0, result.output
    return home


@dataclass
class Env:
    """Where one case runs: ``home`` (a copy of the template), ``inputs`` for its files, ``cwd``."""

    root: Path
    home: Path
    inputs: Path
    settings: Settings
    monkeypatch: pytest.MonkeyPatch

    def registry_store(self):
        return open_store(self.settings.registry_url)

    def write(self, name: str, data: bytes) -> Path:
        path = self.inputs / name
        path.write_bytes(data)
        return path


@pytest.fixture
def env(template, tmp_path, monkeypatch) -> Env:
    home = tmp_path / "home"
    shutil.copytree(template, home, symlinks=True)
    monkeypatch.setenv("POSTERGENRE_HOME", str(home))
    for var in (
        "POSTERGENRE_STORE_URL",
        "POSTERGENRE_REGISTRY_URL",
        "POSTERGENRE_DB_URL",
        "AWS_ENDPOINT_URL_S3",
    ):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "inputs").mkdir()
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # relative paths a command might write land inside the snapshot
    get_settings.cache_clear()
    yield Env(tmp_path, home, tmp_path / "inputs", Settings(home=home), monkeypatch)
    get_settings.cache_clear()


# ------------------------------------------------------------------------------------------ hostile files


def _png(width: int = 20, height: int = 30) -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 10)).save(buf, "PNG")
    return buf.getvalue()


def _jpeg_noise() -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 200, 3), dtype=np.uint8)).save(
        buf, "JPEG"
    )
    return buf.getvalue()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _unreachable_s3(var: str) -> Callable[[Env], dict[str, str]]:
    def setup(_: Env) -> dict[str, str]:
        return {var: "s3://bucket/prefix", "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{_closed_port()}",
                "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_MAX_ATTEMPTS": "1"}  # fmt: skip

    return setup


def _plant(key: str, data: bytes) -> Callable[[Env], None]:
    """Overwrite one registry file (relative to models/genre-cnn/) with ``data``."""

    def setup(e: Env) -> None:
        e.registry_store().put_bytes(f"models/genre-cnn/{key}", data)

    return setup


def _two_rollbacks(e: Env) -> None:
    for _ in range(2):  # v3 -> v2 -> v1: nothing is left to roll back to
        registry.rollback(e.registry_store(), "genre-cnn", actor="setup", reason="both bad")


def _hostile_pth(e: Env) -> None:
    """The lite0 weights package's .pth replaced by one declaring a 1 GiB tensor."""
    from postergenre import lite0

    path = e.write("huge.pth", HUGE_PTH)
    e.monkeypatch.setattr(lite0, "package_weights_path", lambda: path)


def _tampered_model(e: Env) -> None:
    shutil.rmtree(e.home / "cache")  # not downloaded yet: the download must verify it
    _plant("versions/v3/model.keras", b"PK\x03\x04")(e)


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]  # "{inputs}" and "{home}" are filled in
    code: int
    match: str
    files: dict[str, bytes] = field(default_factory=dict)  # written to inputs/ first
    setup: Callable[[Env], dict[str, str] | None] | None = None
    env: dict[str, str] = field(default_factory=dict)
    allowed: tuple[str, ...] = ()  # paths under home the command may write
    dirs: tuple[str, ...] = ()  # folders made in inputs/


CACHE = ("cache",)
RUN_STATE = ("store/runs", "weights", "cache")

CASES = [
    # predict: bad posters (the good one beside them is still predicted)
    Case("predict-text-file", ("predict", "{inputs}/good.png", "{inputs}/page.jpg"), KNOWN_FAILURE,
         r"1 of 2 posters failed: poster .*page\.jpg is not an image", {"page.jpg": b"<html>404</html>\n"},
         allowed=CACHE),
    Case("predict-zero-bytes", ("predict", "{inputs}/zero.jpg"), KNOWN_FAILURE, r"zero\.jpg is empty \(0 bytes\)",
         {"zero.jpg": b""}),
    Case("predict-truncated-jpeg", ("predict", "{inputs}/cut.jpg"), KNOWN_FAILURE,
         r"cut\.jpg is a truncated or corrupt JPEG", {"cut.jpg": _jpeg_noise()[:20000]}, allowed=CACHE),
    Case("predict-jpeg-header-only", ("predict", "{inputs}/head.jpg"), KNOWN_FAILURE,
         r"head\.jpg is a truncated or corrupt JPEG", {"head.jpg": _jpeg_noise()[:300]}),
    Case("predict-directory", ("predict", "{inputs}/folder.jpg"), KNOWN_FAILURE, "is a directory",
         dirs=("folder.jpg",)),
    Case("predict-missing", ("predict", "{inputs}/nope.jpg"), KNOWN_FAILURE, "nope.jpg does not exist"),
    Case("predict-pixel-bomb-48kb", ("predict", "{inputs}/bomb.png"), KNOWN_FAILURE,
         r"declares 400000000 pixels, over the cap", {"bomb.png": huge_png(20000, 20000)}),
    Case("predict-over-pixel-cap", ("predict", "{inputs}/big.png"), KNOWN_FAILURE,
         r"3000x3000 = 9000000 pixels, over the cap of 1000000", {"big.png": huge_png(3000, 3000)},
         env={"POSTERGENRE_MAX_IMAGE_PIXELS": "1000000"}),
    Case("predict-over-byte-cap", ("predict", "{inputs}/good.png"), KNOWN_FAILURE,
         "over the cap of 50 .*POSTERGENRE_MAX_POSTER_BYTES", env={"POSTERGENRE_MAX_POSTER_BYTES": "50"}),
    Case("predict-top-k-zero", ("predict", "--top-k", "0", "{inputs}/good.png"), USAGE_ERROR, "--top-k"),
    Case("predict-top-k-text", ("predict", "--top-k", "many", "{inputs}/good.png"), USAGE_ERROR, "--top-k"),
    Case("predict-unknown-model", ("predict", "--model", "../genre-cnn", "{inputs}/good.png"), USAGE_ERROR,
         "--model"),
    Case("predict-no-ova-champion", ("predict", "--model", "genre-ova", "{inputs}/good.png"), KNOWN_FAILURE,
         "no genre-ova member has a champion"),
    Case("predict-corrupt-champion-pointer", ("predict", "{inputs}/good.png"), KNOWN_FAILURE,
         r"models/genre-cnn/champion\.json: not valid JSON", setup=_plant("champion.json", b"{\x00")),
    Case("predict-tampered-model", ("predict", "{inputs}/good.png"), KNOWN_FAILURE,
         "model.keras does not match its registered digest",
         setup=_tampered_model,
         allowed=CACHE),
    # registry: corrupt and wrongly shaped files, hostile names and versions, rollback
    Case("registry-list-corrupt-pointer", ("registry", "list"), KNOWN_FAILURE,
         r"champion\.json: not valid JSON \(Expecting", setup=_plant("champion.json", b"{not json")),
    Case("registry-show-pointer-is-a-list", ("registry", "show", "genre-cnn"), KNOWN_FAILURE,
         r"champion\.json: not a champion pointer: expected an object, found list", setup=_plant("champion.json", b"[]")),
    Case("registry-show-pointer-wrong-fields", ("registry", "show", "genre-cnn"), KNOWN_FAILURE,
         r"champion\.json: not a champion pointer: 'generation'",
         setup=_plant("champion.json", b'{"version": "v3", "generation": "three"}')),
    Case("registry-show-corrupt-lineage", ("registry", "show", "genre-cnn", "v2"), KNOWN_FAILURE,
         r"versions/v2/lineage\.json: not valid JSON", setup=_plant("versions/v2/lineage.json", b"\xff\xfe")),
    Case("registry-show-lineage-escapes", ("registry", "show", "genre-cnn", "v2"), KNOWN_FAILURE,
         r"lineage\.json: not a version record",
         setup=_plant("versions/v2/lineage.json", b'{"registered_at": "x", "content_sha256": "y", '
                                                  b'"files": {"../../x": {"size": 1, "sha256": "z"}}}')),
    Case("registry-show-corrupt-metrics", ("registry", "show", "genre-cnn", "v1"), KNOWN_FAILURE,
         r"versions/v1/metrics\.json: expected a JSON object", setup=_plant("versions/v1/metrics.json", b"42")),
    Case("registry-history-corrupt-entry", ("registry", "history", "genre-cnn"), KNOWN_FAILURE,
         r"aliases/00000001\.json: not alias log entry 1", setup=_plant("aliases/00000001.json", b'{"generation": 9}')),
    Case("registry-show-dotdot-name", ("registry", "show", "../x"), KNOWN_FAILURE, "invalid model name '../x'"),
    Case("registry-history-reserved-name", ("registry", "history", "genre-ova/versions"), KNOWN_FAILURE,
         "invalid model name"),
    Case("registry-show-dotdot-version", ("registry", "show", "genre-cnn", "../x"), KNOWN_FAILURE,
         "invalid version id '../x'"),
    Case("registry-show-long-name", ("registry", "show", "x" * 300), KNOWN_FAILURE, "name too long|no champion"),
    Case("registry-history-bad-time", ("registry", "history", "genre-cnn", "--at", "yesterday"), USAGE_ERROR,
         "not an ISO 8601 time"),
    Case("registry-rollback-no-reason", ("registry", "rollback", "genre-cnn"), USAGE_ERROR, "--reason"),
    Case("registry-rollback-to-unregistered", ("registry", "rollback", "genre-cnn", "--reason", "r", "--to", "v9"),
         KNOWN_FAILURE, "genre-cnn has no registered version v9"),
    Case("registry-rollback-to-dotdot", ("registry", "rollback", "genre-cnn", "--reason", "r", "--to", "../v1"),
         KNOWN_FAILURE, "invalid version id"),
    Case("registry-rollback-no-champion", ("registry", "rollback", "genre-ova/western", "--reason", "r"),
         KNOWN_FAILURE, "has no champion to roll back"),
    Case("registry-rollback-exhausted", ("registry", "rollback", "genre-cnn", "--reason", "r"), KNOWN_FAILURE,
         "no version to roll back to from v1", setup=_two_rollbacks),
    # synth, global options
    Case("synth-onto-a-file", ("synth", "{inputs}/taken"), KNOWN_FAILURE, "exists and is a file",
         {"taken": b"precious"}),
    Case("synth-into-non-empty-folder", ("synth", "{inputs}"), KNOWN_FAILURE, "exists and is not empty",
         {"other": b"precious"}),
    Case("synth-zero-movies", ("synth", "{inputs}/new", "--movies", "0"), USAGE_ERROR, "--movies"),
    Case("synth-faults-too-few", ("synth", "{inputs}/new", "--movies", "50", "--faults"), KNOWN_FAILURE,
         "faults need at least 100 movies"),
    Case("log-level-bogus", ("--log-level", "BOGUS", "registry", "list"), USAGE_ERROR, "'BOGUS' is not one of"),
    Case("unknown-command", ("registry", "delete", "genre-cnn"), USAGE_ERROR, "No such command 'delete'"),
    # runs and snapshots that do not exist
    Case("train-unknown-run", ("train", "no-such-run"), KNOWN_FAILURE, "run no-such-run was never started"),
    Case("evaluate-unknown-run", ("evaluate", "../../etc"), KNOWN_FAILURE, "never started|invalid"),
    Case("promote-unknown-run", ("promote", "no-such-run"), KNOWN_FAILURE, "run no-such-run was never started"),
    Case("drift-unknown-snapshot", ("drift", "nope"), KNOWN_FAILURE, "snapshot nope is not published"),
    # weights
    Case("tune-lite0-huge-pth", ("tune", SNAPSHOT, "--run-id", "r1", "--backbone", "lite0", "--weights", "imagenet",
                                 "--image-size", "32", "--trials", "1", "--max-epochs", "1"), KNOWN_FAILURE,
         r"huge\.pth: truncated weights file", setup=_hostile_pth, allowed=RUN_STATE),
    Case("tune-corrupt-weights-h5", ("tune", SNAPSHOT, "--run-id", "r2", "--backbone", "lite0", "--weights",
                                     "{inputs}/bad.weights.h5", "--image-size", "32", "--trials", "1",
                                     "--max-epochs", "1"), KNOWN_FAILURE, "bad.weights.h5|weights",
         {"bad.weights.h5": b"\x89HDF\r\n\x1a\n" + b"\x00" * 64}, allowed=RUN_STATE),
    # stores and DB that cannot be reached or named
    Case("store-s3-closed-port", ("snapshots",), KNOWN_FAILURE, r"s3://bucket/prefix at http://127\.0\.0\.1:\d+",
         setup=_unreachable_s3("POSTERGENRE_STORE_URL")),
    Case("registry-s3-closed-port", ("registry", "list"), KNOWN_FAILURE, r"Could not connect to the endpoint",
         setup=_unreachable_s3("POSTERGENRE_REGISTRY_URL")),
    Case("store-unsupported-url", ("snapshots",), KNOWN_FAILURE, "unsupported store URL 'ftp://",
         env={"POSTERGENRE_STORE_URL": "ftp://example.org/x"}),
    Case("db-closed-port", ("db", "upgrade"), KNOWN_FAILURE, "connection|connect",
         setup=lambda e: {"POSTERGENRE_DB_URL": f"postgresql+psycopg://u:p@127.0.0.1:{_closed_port()}/db"}),
]  # fmt: skip


# ------------------------------------------------------------------------------------------ the table


def _db_rows(home: Path) -> dict[str, list]:
    """Every row of every table of the home's SQLite DB, read-only (the data, not the file's bytes)."""
    path = home / "postergenre.db"
    if not path.exists():
        return {}
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [
            r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
        ]
        return {t: sorted(map(repr, con.execute(f'SELECT * FROM "{t}"'))) for t in tables}
    finally:
        con.close()


def _fill(arg: str, e: Env) -> str:
    return arg.replace("{inputs}", str(e.inputs)).replace("{home}", str(e.home))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_is_a_clean_known_failure(case: Case, env: Env, monkeypatch):
    for name, data in case.files.items():
        env.write(name, data)
    for name in case.dirs:
        (env.inputs / name).mkdir()
    if case.id.startswith("predict") and "good.png" in " ".join(case.args):
        env.write("good.png", _png())
    extra = dict(case.env)
    if case.setup is not None:
        extra.update(case.setup(env) or {})
    for var, value in extra.items():
        monkeypatch.setenv(var, value)
    args = [_fill(a, env) for a in case.args]
    rows = _db_rows(env.home)
    allowed = [env.home / a for a in case.allowed] + [
        env.home / "postergenre.db-wal",
        env.home / "postergenre.db-shm",
    ]
    for json_mode in (True, False):
        with isolated_tmpdir(env.root / "tmp", monkeypatch) as tmpdir, fs_snapshot(env.root) as changes:
            result = _invoke([*args, "--json"] if json_mode else args)
        check_cli_failure(result, json_mode=json_mode, expected_code=case.code, match=case.match)
        check_writes_confined(changes, allowed=[tmpdir, *allowed])
        check_no_temp_files(tmpdir, env.home)
        assert _db_rows(env.home) == rows, "the metadata DB changed"
        check_store_consistent(env.settings)


def test_the_table_is_big_and_covers_both_codes():
    assert len(CASES) >= 25 and len({c.id for c in CASES}) == len(CASES)
    assert {c.code for c in CASES} == {USAGE_ERROR, KNOWN_FAILURE}


@dataclass
class _Result:
    exit_code: int
    stdout: str = ""
    stderr: str = ""
    exception: BaseException | None = None


@pytest.mark.parametrize(
    ("result", "json_mode", "why"),
    [
        (_Result(1, stderr="Traceback (most recent call last):\n  ...\nKeyError: 'x'\n"), False, "crashed"),
        (_Result(3, stderr="error: one\nerror: two\n"), False, "not one line"),
        (_Result(3, stderr="Something went wrong\n"), False, "not 'error: ...'"),
        (_Result(3, stdout="not json", stderr="error: broken thing\n"), True, "not one JSON document"),
        (_Result(2, stderr="error: broken thing\n"), False, "expected 3"),
    ],
)
def test_the_checks_refuse_what_they_should(result, json_mode, why):
    with pytest.raises(AssertionError, match=why):
        check_cli_failure(result, json_mode=json_mode, expected_code=KNOWN_FAILURE)


def test_the_filesystem_checks_see_writes_and_temp_files(tmp_path):
    (tmp_path / "home").mkdir()
    (tmp_path / "kept").write_bytes(b"a")
    with fs_snapshot(tmp_path) as changes:
        (tmp_path / "kept").write_bytes(b"b")
        (tmp_path / "home" / "cache").write_bytes(b"ok")
    assert changes.modified == [(tmp_path / "kept").resolve()]
    check_writes_confined(FsChanges(created=changes.created), allowed=[tmp_path / "home"])
    with pytest.raises(AssertionError, match="written outside"):
        check_writes_confined(changes, allowed=[tmp_path / "home"])
    (tmp_path / "tmp").mkdir()
    (tmp_path / "tmp" / "left.npy").write_bytes(b"")
    with pytest.raises(AssertionError, match="temp files left"):
        check_no_temp_files(tmp_path / "tmp")
