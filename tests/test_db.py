"""Metadata DB behaviour, run against both SQLite and a real PostgreSQL (``db_url`` is parametrised)."""

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import IntegrityError, StatementError
from support.postgres import PostgresUnavailable, find_bin_dir

from postergenre.db import (
    Base,
    Dataset,
    DriftReport,
    Snapshot,
    alembic_config,
    drift_history,
    latest_snapshots,
    make_engine,
    previous_snapshot,
    record_dataset,
    record_drift,
    record_snapshot,
    session_scope,
    upgrade,
)

T0 = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
TABLES = {"snapshots", "datasets", "drift_reports"}
HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    engine = make_engine(db_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def snapshot_fields(**overrides: Any) -> dict[str, Any]:
    fields = {
        "id": "2026-11-24",
        "created_at": T0,
        "source": "tmdb-export",
        "content_hash": "sha256:aaa",
        "movies": 3,
        "rows": 4,
        "posters": 3,
        "quarantined": 1,
        "manifest_uri": "s3://bucket/snapshots/2026-11-24/manifest.json",
        "genre_counts_raw": {"Drama": 2, "Science Fiction": 1, "Sci-Fi": 1},
        "genre_counts_collapsed": {"Drama": 2, "Science Fiction": 2},
    }
    return fields | overrides


def drift_fields(**overrides: Any) -> dict[str, Any]:
    fields = {
        "snapshot_id": "2026-11-24",
        "baseline_id": "2026-11-17",
        "kind": "previous",
        "severity": "ok",
        "js_raw": 0.01,
        "js_collapsed": 0.005,
        "psi_raw": None,
        "psi_collapsed": 0.02,
        "report": {"per_genre": {"Drama": {"psi": 0.01}}, "notes": ["first"]},
        "report_uri": "s3://bucket/drift/2026-11-24/previous.json",
    }
    return fields | overrides


def add_snapshots(engine: sa.Engine, *specs: tuple[str, datetime]) -> None:
    with session_scope(engine) as session:
        for snapshot_id, created_at in specs:
            record_snapshot(session, **snapshot_fields(id=snapshot_id, created_at=created_at))


def count(engine: sa.Engine, model: type[Base]) -> int:
    with session_scope(engine) as session:
        return session.scalar(sa.select(sa.func.count()).select_from(model))


# ------------------------------------------------------------------------------------------- schema


def schema_state(engine: sa.Engine) -> tuple[tuple[str, ...], set[str]]:
    """(alembic heads stamped in the DB, application tables present)."""
    with engine.connect() as conn:
        heads = MigrationContext.configure(conn).get_current_heads()
        return heads, TABLES & set(sa.inspect(conn).get_table_names())


def test_upgrade_is_idempotent_and_reversible(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        for _ in range(2):
            upgrade(db_url)
            assert schema_state(engine) == ((HEAD,), TABLES)
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "base")
        assert schema_state(engine) == ((), set())
        upgrade(engine)
        assert schema_state(engine) == ((HEAD,), TABLES)
    finally:
        engine.dispose()


def test_migration_chain_is_linear() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    revisions = list(script.walk_revisions())
    assert len(script.get_heads()) == 1
    assert sum(rev.down_revision is None for rev in revisions) == 1


@pytest.mark.timeout(60)
def test_concurrent_upgrades_all_succeed(db_url: str) -> None:
    """Workers racing to migrate a fresh DB queue on the migration lock instead of colliding.

    Without the lock the runs interleave and can hang (Alembic's ``op``/``context`` proxies are
    process-global), hence the timeout.
    """
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(upgrade, [db_url] * 4))
    engine = make_engine(db_url)
    assert schema_state(engine) == ((HEAD,), TABLES)
    engine.dispose()


def test_models_match_migrated_schema(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_schema_comparison_detects_a_model_change(engine: sa.Engine) -> None:
    """Guards the test above: a column present in the models but not the migrations must be reported."""
    changed = sa.MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(changed)
    changed.tables["snapshots"].append_column(sa.Column("extra", sa.Integer(), nullable=True))
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), changed)
    assert [(op[0], op[3].name) for op in diff] == [("add_column", "extra")]


# ------------------------------------------------------------------------------------------- round trips


def test_snapshot_round_trip_keeps_json_and_normalises_time_to_utc(engine: sa.Engine) -> None:
    local = datetime(2026, 11, 24, 9, 30, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    fields = snapshot_fields(created_at=local)
    with session_scope(engine) as session:
        record_snapshot(session, **fields)
    with session_scope(engine) as session:
        stored = session.get(Snapshot, fields["id"])
        assert stored is not None
        assert stored.created_at == local
        assert stored.created_at.tzinfo == UTC
        assert stored.genre_counts_raw == fields["genre_counts_raw"]
        assert stored.genre_counts_collapsed == fields["genre_counts_collapsed"]
        assert (stored.movies, stored.rows, stored.posters, stored.quarantined) == (3, 4, 3, 1)


def test_dataset_and_drift_round_trip(engine: sa.Engine) -> None:
    counts = {"train": {"Drama": 10}, "val": {"Drama": 2}, "test": {"Drama": 3}}
    with session_scope(engine) as session:
        record_snapshot(session, **snapshot_fields())
        dataset = record_dataset(
            session,
            snapshot_id="2026-11-24",
            seed=42,
            content_hash="sha256:d",
            uri="s3://b/ds",
            counts=counts,
        )
        drift = record_drift(session, **drift_fields())
        dataset_id, drift_id = dataset.id, drift.id
    with session_scope(engine) as session:
        dataset = session.get(Dataset, dataset_id)
        drift = session.get(DriftReport, drift_id)
        assert dataset.counts == counts and dataset.seed == 42
        assert dataset.created_at.tzinfo == UTC
        assert drift.report == drift_fields()["report"]
        assert (drift.js_raw, drift.psi_raw, drift.psi_collapsed) == (0.01, None, 0.02)
        assert drift.created_at.tzinfo == UTC


def test_naive_datetimes_are_rejected(engine: sa.Engine) -> None:
    with pytest.raises(StatementError, match="naive datetime"), session_scope(engine) as session:
        record_snapshot(session, **snapshot_fields(created_at=datetime(2026, 11, 24)))


# ------------------------------------------------------------------------------------------- idempotency


def test_record_snapshot_is_idempotent(engine: sa.Engine) -> None:
    with session_scope(engine) as session:
        record_snapshot(session, **snapshot_fields())
    with session_scope(engine) as session:
        again = record_snapshot(session, **snapshot_fields(manifest_uri="s3://elsewhere", movies=99))
        assert (again.manifest_uri, again.movies) == (snapshot_fields()["manifest_uri"], 3)
    assert count(engine, Snapshot) == 1


def test_record_snapshot_with_a_different_hash_is_refused(engine: sa.Engine) -> None:
    add_snapshots(engine, ("2026-11-24", T0))
    with pytest.raises(ValueError, match="content hash"), session_scope(engine) as session:
        record_snapshot(session, **snapshot_fields(content_hash="sha256:bbb"))
    with session_scope(engine) as session:
        assert session.get(Snapshot, "2026-11-24").content_hash == "sha256:aaa"


def test_record_dataset_is_idempotent_and_refuses_a_different_hash(engine: sa.Engine) -> None:
    add_snapshots(engine, ("2026-11-24", T0))
    args = {"snapshot_id": "2026-11-24", "seed": 7, "uri": "s3://b/ds", "counts": {"train": {}}}
    with session_scope(engine) as session:
        first = record_dataset(session, content_hash="sha256:d", **args).id
    with session_scope(engine) as session:
        assert record_dataset(session, content_hash="sha256:d", **args).id == first
        record_dataset(session, content_hash="sha256:e", **(args | {"seed": 8}))
    with pytest.raises(ValueError, match="content hash"), session_scope(engine) as session:
        record_dataset(session, content_hash="sha256:x", **args)
    assert count(engine, Dataset) == 2


def test_a_weighted_split_is_recorded_beside_the_undersampled_one(engine: sa.Engine) -> None:
    add_snapshots(engine, ("2026-11-24", T0))
    args = {"snapshot_id": "2026-11-24", "seed": 7, "content_hash": "sha256:d", "counts": {"train": {}}}
    with session_scope(engine) as session:
        plain = record_dataset(session, uri="s3://b/seed-7", **args)
        weighted = record_dataset(session, uri="s3://b/seed-7-weighted", balance="weighted", **args)
        assert (plain.balance, weighted.balance) == ("undersample", "weighted") and plain.id != weighted.id
    with session_scope(engine) as session:
        assert record_dataset(session, uri="s3://b/seed-7-weighted", balance="weighted", **args).id == weighted.id
    assert count(engine, Dataset) == 2


@pytest.mark.parametrize("baseline_id", ["2026-11-17", None])
def test_record_drift_replaces_the_report_for_the_same_key(
    engine: sa.Engine, baseline_id: str | None
) -> None:
    add_snapshots(engine, ("2026-11-24", T0))
    with session_scope(engine) as session:
        first = record_drift(session, **drift_fields(baseline_id=baseline_id)).id
    with session_scope(engine) as session:
        second = record_drift(
            session, **drift_fields(baseline_id=baseline_id, severity="alert", js_raw=0.3, report={"v": 2})
        )
        record_drift(session, **drift_fields(baseline_id=baseline_id, kind="champion"))
    assert second.id == first
    with session_scope(engine) as session:
        stored = session.get(DriftReport, first)
        assert (stored.severity, stored.js_raw, stored.report) == ("alert", 0.3, {"v": 2})
    assert count(engine, DriftReport) == 2


def test_session_scope_rolls_back_on_error(engine: sa.Engine) -> None:
    with pytest.raises(RuntimeError), session_scope(engine) as session:
        record_snapshot(session, **snapshot_fields())
        raise RuntimeError("boom")
    assert count(engine, Snapshot) == 0


# ------------------------------------------------------------------------------------------- constraints


def test_foreign_keys_are_enforced(engine: sa.Engine) -> None:
    with pytest.raises(IntegrityError), session_scope(engine) as session:
        record_drift(session, **drift_fields(snapshot_id="no-such-snapshot"))
    with pytest.raises(IntegrityError), session_scope(engine) as session:
        record_dataset(session, snapshot_id="no-such-snapshot", seed=1, content_hash="h", uri="u", counts={})
    assert count(engine, DriftReport) == count(engine, Dataset) == 0


@pytest.mark.parametrize(
    "make_duplicate",
    [
        pytest.param(
            lambda: Dataset(
                snapshot_id="2026-11-24", seed=1, content_hash="h", uri="u", counts={}, created_at=T0
            ),
            id="dataset-snapshot-seed",
        ),
        pytest.param(lambda: DriftReport(**drift_fields(), created_at=T0), id="drift-with-baseline"),
        pytest.param(
            lambda: DriftReport(**drift_fields(baseline_id=None), created_at=T0), id="drift-no-baseline"
        ),
    ],
)
def test_unique_keys_are_enforced_by_the_database(engine: sa.Engine, make_duplicate: Any) -> None:
    add_snapshots(engine, ("2026-11-24", T0))
    with session_scope(engine) as session:
        session.add(make_duplicate())
    with pytest.raises(IntegrityError), session_scope(engine) as session:
        session.add(make_duplicate())


def test_drift_kind_is_checked(engine: sa.Engine) -> None:
    add_snapshots(engine, ("2026-11-24", T0))
    with pytest.raises(ValueError, match="drift kind"), session_scope(engine) as session:
        record_drift(session, **drift_fields(kind="weekly"))
    with pytest.raises(IntegrityError), session_scope(engine) as session:
        session.add(DriftReport(**drift_fields(kind="weekly"), created_at=T0))


# ------------------------------------------------------------------------------------------- queries


def test_previous_and_latest_snapshots_order_by_time_then_id(engine: sa.Engine) -> None:
    # Inserted out of order; "b" and "c" share a timestamp, so the id breaks the tie.
    add_snapshots(
        engine,
        ("c", T0 + timedelta(days=7)),
        ("a", T0),
        ("d", T0 + timedelta(days=14)),
        ("b", T0 + timedelta(days=7)),
    )
    with session_scope(engine) as session:
        previous = {sid: previous_snapshot(session, sid) for sid in "abcd"}
        assert {sid: p.id if p else None for sid, p in previous.items()} == {
            "a": None,
            "b": "a",
            "c": "b",
            "d": "c",
        }
        assert [s.id for s in latest_snapshots(session, limit=3)] == ["d", "c", "b"]
        with pytest.raises(LookupError):
            previous_snapshot(session, "zzz")


def test_drift_history_is_oldest_first_and_filters_by_kind(engine: sa.Engine) -> None:
    add_snapshots(engine, ("s1", T0), ("s2", T0 + timedelta(days=7)))
    with session_scope(engine) as session:
        record_drift(session, **drift_fields(snapshot_id="s2", created_at=T0 + timedelta(days=7, hours=1)))
        record_drift(
            session, **drift_fields(snapshot_id="s1", kind="champion", created_at=T0 + timedelta(hours=1))
        )
        record_drift(session, **drift_fields(snapshot_id="s1", created_at=T0 + timedelta(hours=2)))
    with session_scope(engine) as session:
        assert [(r.snapshot_id, r.kind) for r in drift_history(session)] == [
            ("s1", "champion"),
            ("s1", "previous"),
            ("s2", "previous"),
        ]
        assert [r.snapshot_id for r in drift_history(session, kind="previous")] == ["s1", "s2"]
        with pytest.raises(ValueError):
            drift_history(session, kind="weekly")


# ------------------------------------------------------------------------------------------- engines


def test_sqlite_engine_creates_its_directory_and_enforces_its_pragmas(tmp_path) -> None:
    path = tmp_path / "deep" / "er" / "meta.db"
    engine = make_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() > 0
    engine.dispose()
    assert path.exists()


def test_plain_postgresql_urls_use_psycopg3() -> None:
    engine = make_engine("postgresql://user@127.0.0.1:1/db")
    assert engine.dialect.driver == "psycopg"
    engine.dispose()


def test_missing_postgres_binaries_point_to_the_setup_script(tmp_path) -> None:
    with pytest.raises(PostgresUnavailable, match="scripts/system-deps.sh"):
        find_bin_dir(tmp_path)


@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        "postgresql+psycopg://u:pw@host:notaport/db",
        "nosuchdialect://u@h/db",
        "sqlite+nodriver:///x",
    ],
)
def test_an_unusable_url_is_a_one_line_db_error_without_the_password(url: str) -> None:
    from postergenre.db import DBError

    with pytest.raises(DBError, match="POSTERGENRE_DB_URL") as info:
        make_engine(url)
    assert "\n" not in str(info.value) and ":pw@" not in str(info.value)


def test_an_unreachable_server_is_a_db_error_at_the_probe() -> None:
    from postergenre.db import DBError, check_connection

    engine = make_engine("postgresql://user:pw@127.0.0.1:1/db")
    with pytest.raises(
        DBError, match=r"cannot use the metadata DB postgresql\+psycopg://user:\*\*\*@127.0.0.1:1/db"
    ):
        check_connection(engine)
    engine.dispose()


def test_the_probe_passes_on_a_usable_db(engine: sa.Engine) -> None:
    from postergenre.db import check_connection

    check_connection(engine)  # raises on failure; a usable DB returns quietly
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT 1")).scalar() == 1
