"""Metadata database: snapshots, datasets and drift reports (SQLite by default, PostgreSQL in production).

The schema is owned by the Alembic migrations shipped in ``postergenre/migrations``; the ORM models here must
match them exactly (a test runs autogenerate against a migrated database and expects no difference).
Artifacts themselves live in the object store; rows only point at them by URI and content hash.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Dialect,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    select,
    text,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
DRIFT_KINDS = ("previous", "champion")
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Arbitrary constant key for pg_advisory_xact_lock: serialises concurrent `upgrade` calls on PostgreSQL.
_PG_MIGRATION_LOCK = 0x706F7374  # "post"

# Stable constraint names so later migrations (including SQLite batch mode) can address them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


_Row = TypeVar("_Row", bound="Base")


class DBError(RuntimeError):
    """The metadata DB cannot be used (a malformed URL, no server, no driver...): a one-line reason.

    A RuntimeError so that callers which only know the builtin families still report it as a known failure.
    """


def describe_url(url: str | URL) -> str:
    """The URL fit for an error message: never the password, and nothing of an unparseable string but its
    scheme (it may hold a password in a place the parser did not recognise)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        scheme = str(url).split("://", 1)[0] if "://" in str(url) else ""
        return f"{scheme[:30]}://..." if scheme else "<not a URL>"


@contextmanager
def db_errors(what: str) -> Iterator[None]:
    """Turn SQLAlchemy and driver failures into :class:`DBError` with the first line of the reason."""
    try:
        yield
    except DBError:
        raise
    except (SQLAlchemyError, sqlite3.Error, OSError) as err:
        lines = str(getattr(err, "orig", None) or err).strip().splitlines()
        raise DBError(f"{what}: {lines[0][:300] if lines else type(err).__name__}") from err


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend.

    PostgreSQL keeps ``timestamptz``; SQLite has no time zones, so values are stored as naive UTC (which also
    keeps its text ordering chronological) and get ``UTC`` re-attached on the way out. Naive inputs are
    rejected rather than guessed at.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware value")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


class Snapshot(Base):
    """One immutable ingest of the source catalogue (id is its date, e.g. ``2026-11-24``)."""

    __tablename__ = "snapshots"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    source: Mapped[str] = mapped_column(String(256))
    content_hash: Mapped[str] = mapped_column(String(128))
    movies: Mapped[int] = mapped_column(Integer)
    rows: Mapped[int] = mapped_column(Integer)
    posters: Mapped[int] = mapped_column(Integer)
    quarantined: Mapped[int] = mapped_column(Integer)
    manifest_uri: Mapped[str] = mapped_column(String(2048))
    genre_counts_raw: Mapped[dict[str, Any]]
    genre_counts_collapsed: Mapped[dict[str, Any]]


class Dataset(Base):
    """A seeded train/validation/test split built from one snapshot."""

    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("snapshot_id", "seed", "balance"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    snapshot_id: Mapped[str] = mapped_column(ForeignKey("snapshots.id"))
    seed: Mapped[int] = mapped_column(Integer)
    balance: Mapped[str] = mapped_column(String(16), default="undersample", server_default="undersample")
    content_hash: Mapped[str] = mapped_column(String(128))
    uri: Mapped[str] = mapped_column(String(2048))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    counts: Mapped[dict[str, Any]]


class DriftReport(Base):
    """Genre-distribution drift of a snapshot against a baseline (the previous snapshot or the champion's)."""

    __tablename__ = "drift_reports"
    __table_args__ = (
        UniqueConstraint("snapshot_id", "baseline_id", "kind"),
        # NULLs are distinct in unique constraints, so the no-baseline case needs its own partial index.
        Index(
            "uq_drift_reports_snapshot_id_kind_no_baseline",
            "snapshot_id",
            "kind",
            unique=True,
            sqlite_where=text("baseline_id IS NULL"),
            postgresql_where=text("baseline_id IS NULL"),
        ),
        CheckConstraint("kind IN ('previous', 'champion')", name="kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    snapshot_id: Mapped[str] = mapped_column(ForeignKey("snapshots.id"))
    baseline_id: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    severity: Mapped[str] = mapped_column(String(16))
    js_raw: Mapped[float | None] = mapped_column(Float)
    js_collapsed: Mapped[float | None] = mapped_column(Float)
    psi_raw: Mapped[float | None] = mapped_column(Float)
    psi_collapsed: Mapped[float | None] = mapped_column(Float)
    report: Mapped[dict[str, Any]]
    report_uri: Mapped[str] = mapped_column(String(2048))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# --------------------------------------------------------------------------------------------- engine


def _normalise_url(url: str | URL) -> URL:
    """``postgresql://`` means psycopg 3 here (SQLAlchemy would otherwise pick the absent psycopg2)."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _configure_sqlite(engine: Engine) -> None:
    """Foreign keys, WAL, a busy timeout, and transactions that take the write lock up front.

    pysqlite's own transaction handling never BEGINs before DDL or SELECT, which breaks transactional
    migrations and read-then-write upserts; ``BEGIN IMMEDIATE`` makes concurrent writers queue on the busy
    timeout instead of failing with ``database is locked`` halfway through.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        # Switching a fresh file to WAL needs an exclusive lock the busy timeout does not wait for; the mode is
        # persistent, so the connection holding the lock (racing to do the same) sets it for everyone.
        with suppress(sqlite3.OperationalError):
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str | URL) -> Engine:
    """Engine for the metadata DB; for a SQLite file the parent directory is created.

    A malformed URL or an unknown dialect/driver is a :class:`DBError` naming the setting, not a traceback.
    """
    try:
        return _make_engine(url)
    except (
        ArgumentError,
        ValueError,
    ) as err:  # NoSuchModuleError (unknown dialect), a port that is no number
        raise DBError(
            f"POSTERGENRE_DB_URL {describe_url(url)} is not a usable SQLAlchemy URL "
            f"(e.g. sqlite:///path/postergenre.db or postgresql+psycopg://user@host/db): {str(err)[:120]}"
        ) from None
    except ImportError as err:  # a known dialect whose driver is not installed
        raise DBError(f"POSTERGENRE_DB_URL {describe_url(url)}: driver not installed ({err})") from None
    except OSError as err:  # the SQLite file's folder cannot be created
        raise DBError(f"POSTERGENRE_DB_URL {describe_url(url)}: {err.strerror or err}") from None


def check_connection(engine: Engine) -> None:
    """Connect once and run ``SELECT 1``: a :class:`DBError` now instead of after the work is done."""
    with db_errors(f"cannot use the metadata DB {describe_url(engine.url)}"), engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def _make_engine(url: str | URL) -> Engine:
    parsed = _normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed)
        _configure_sqlite(engine)
        return engine
    return create_engine(parsed, pool_pre_ping=True)


def alembic_config(connection: Any = None) -> Config:
    """Programmatic Alembic config (no alembic.ini); env.py runs on ``connection`` when given."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(url_or_engine: str | URL | Engine, revision: str = "head") -> None:
    """Migrate the schema to ``revision``; a no-op when already there, safe to call from many processes.

    Everything runs in one transaction that first takes a lock (SQLite's write lock via BEGIN IMMEDIATE,
    a PostgreSQL advisory lock), so concurrent callers wait and then find the schema already current.
    """
    engine = url_or_engine if isinstance(url_or_engine, Engine) else make_engine(url_or_engine)
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
            command.upgrade(alembic_config(connection), revision)
    finally:
        if engine is not url_or_engine:
            engine.dispose()


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on any exception; objects stay usable afterwards."""
    session = Session(engine, expire_on_commit=False)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# --------------------------------------------------------------------------------------------- writes


def _insert_unless_raced(session: Session, row: _Row, lookup: Callable[[], _Row | None]) -> _Row:
    """Insert ``row``; if a concurrent writer inserted the same unique key first, return its row instead.

    The savepoint keeps the caller's transaction usable after the lost race.
    """
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        found = lookup()
        if found is None:  # the violation was something else (e.g. an unknown foreign key)
            raise
        return found
    return row


def record_snapshot(
    session: Session,
    *,
    id: str,
    source: str,
    content_hash: str,
    movies: int,
    rows: int,
    posters: int,
    quarantined: int,
    manifest_uri: str,
    genre_counts_raw: dict[str, Any],
    genre_counts_collapsed: dict[str, Any],
    created_at: datetime | None = None,
) -> Snapshot:
    """Record a snapshot once. Re-recording identical content is a no-op (pipeline retries are safe);
    the same id with different content means the snapshot was rebuilt differently, which is refused."""
    existing = session.get(Snapshot, id)
    if existing is None:
        existing = _insert_unless_raced(
            session,
            Snapshot(
                id=id,
                created_at=created_at or utcnow(),
                source=source,
                content_hash=content_hash,
                movies=movies,
                rows=rows,
                posters=posters,
                quarantined=quarantined,
                manifest_uri=manifest_uri,
                genre_counts_raw=genre_counts_raw,
                genre_counts_collapsed=genre_counts_collapsed,
            ),
            lambda: session.get(Snapshot, id),
        )
    if existing.content_hash != content_hash:
        raise ValueError(
            f"snapshot {id!r} already recorded with content hash {existing.content_hash}, not {content_hash}"
        )
    return existing


def _dataset_by_key(session: Session, snapshot_id: str, seed: int, balance: str) -> Dataset | None:
    return session.scalar(
        select(Dataset).where(Dataset.snapshot_id == snapshot_id, Dataset.seed == seed, Dataset.balance == balance)
    )


def record_dataset(
    session: Session,
    *,
    snapshot_id: str,
    seed: int,
    content_hash: str,
    uri: str,
    counts: dict[str, Any],
    balance: str = "undersample",
    created_at: datetime | None = None,
) -> Dataset:
    """Record the split of ``snapshot_id`` for ``seed`` and ``balance`` once.

    Splits are deterministic, so the same key with a different content hash is refused (ValueError) rather
    than silently replacing the data earlier models were trained on.
    """
    existing = _dataset_by_key(session, snapshot_id, seed, balance)
    if existing is None:
        existing = _insert_unless_raced(
            session,
            Dataset(
                snapshot_id=snapshot_id,
                seed=seed,
                balance=balance,
                content_hash=content_hash,
                uri=uri,
                counts=counts,
                created_at=created_at or utcnow(),
            ),
            lambda: _dataset_by_key(session, snapshot_id, seed, balance),
        )
    if existing.content_hash != content_hash:
        raise ValueError(
            f"dataset ({snapshot_id!r}, seed={seed}) already recorded with content hash "
            f"{existing.content_hash}, not {content_hash}"
        )
    return existing


def _drift_by_key(
    session: Session, snapshot_id: str, baseline_id: str | None, kind: str
) -> DriftReport | None:
    baseline = (
        DriftReport.baseline_id.is_(None) if baseline_id is None else DriftReport.baseline_id == baseline_id
    )
    return session.scalar(
        select(DriftReport).where(DriftReport.snapshot_id == snapshot_id, baseline, DriftReport.kind == kind)
    )


def record_drift(
    session: Session,
    *,
    snapshot_id: str,
    baseline_id: str | None,
    kind: str,
    severity: str,
    js_raw: float | None,
    js_collapsed: float | None,
    psi_raw: float | None,
    psi_collapsed: float | None,
    report: dict[str, Any],
    report_uri: str,
    created_at: datetime | None = None,
) -> DriftReport:
    """Record a drift report, replacing any earlier one for (snapshot, baseline, kind): a re-run recomputes
    the same comparison, possibly with new thresholds, and the latest verdict is the one that counts."""
    if kind not in DRIFT_KINDS:
        raise ValueError(f"drift kind must be one of {DRIFT_KINDS}, got {kind!r}")
    values = {
        "severity": severity,
        "js_raw": js_raw,
        "js_collapsed": js_collapsed,
        "psi_raw": psi_raw,
        "psi_collapsed": psi_collapsed,
        "report": report,
        "report_uri": report_uri,
        "created_at": created_at or utcnow(),
    }
    row = _drift_by_key(session, snapshot_id, baseline_id, kind)
    if row is None:
        row = _insert_unless_raced(
            session,
            DriftReport(snapshot_id=snapshot_id, baseline_id=baseline_id, kind=kind, **values),
            lambda: _drift_by_key(session, snapshot_id, baseline_id, kind),
        )
    for name, value in values.items():
        setattr(row, name, value)
    session.flush()
    return row


# --------------------------------------------------------------------------------------------- queries


def latest_snapshots(session: Session, limit: int = 10) -> list[Snapshot]:
    """Newest first (ties on created_at broken by id)."""
    stmt = select(Snapshot).order_by(Snapshot.created_at.desc(), Snapshot.id.desc()).limit(limit)
    return list(session.scalars(stmt))


def previous_snapshot(session: Session, snapshot_id: str) -> Snapshot | None:
    """The snapshot immediately before ``snapshot_id`` in (created_at, id) order, or None for the first.

    Raises LookupError for an unknown id: there is no position to look before, and None would read as
    "this is the first snapshot".
    """
    current = session.get(Snapshot, snapshot_id)
    if current is None:
        raise LookupError(f"unknown snapshot {snapshot_id!r}")
    earlier = (Snapshot.created_at < current.created_at) | (
        (Snapshot.created_at == current.created_at) & (Snapshot.id < current.id)
    )
    stmt = select(Snapshot).where(earlier).order_by(Snapshot.created_at.desc(), Snapshot.id.desc()).limit(1)
    return session.scalar(stmt)


def drift_history(session: Session, kind: str | None = None) -> list[DriftReport]:
    """All drift reports, oldest first, optionally of one kind."""
    stmt = select(DriftReport).order_by(DriftReport.created_at, DriftReport.id)
    if kind is not None:
        if kind not in DRIFT_KINDS:
            raise ValueError(f"drift kind must be one of {DRIFT_KINDS}, got {kind!r}")
        stmt = stmt.where(DriftReport.kind == kind)
    return list(session.scalars(stmt))
