"""The desk's database: one SQLAlchemy engine (a SQLite file or PostgreSQL), its tables, and the
migrations that ship with the package, applied in order so an upgrade keeps the data.

Times are stored as seconds since the epoch (a float): the same on every database, no time zones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    Column,
    Engine,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.exc import SQLAlchemyError as DatabaseError

from nsfw_space.errors import DeskError

logger = logging.getLogger(__name__)

metadata = MetaData()

schema_version = Table("desk_schema", metadata, Column("version", Integer, nullable=False))
counters = Table(
    "desk_counters",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("value", Integer, nullable=False),
)
list_entries = Table(
    "desk_list_entries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("list", String(8), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("note", Text, nullable=False, default=""),
    Column("added_by", String(200), nullable=False, default=""),
    Column("added_at", Float, nullable=False),
    UniqueConstraint("list", "hash", name="desk_list_entry_once"),
)
review_items = Table(
    "desk_review_items",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False, index=True),
    Column("reason", String(8), nullable=False),  # review | audit
    Column("nsfw_score", Float, nullable=False),
    Column("model_decision", String(8), nullable=False),
    Column("image", LargeBinary, nullable=False),
    Column("hash", String(64), nullable=True),
    Column("state", String(8), nullable=False, index=True),  # pending | decided
    Column("lease_owner", String(200), nullable=True),
    Column("lease_token", String(32), nullable=True),
    Column("lease_until", Float, nullable=True),
    Column("decision", String(8), nullable=True),
    Column("decided_by", String(200), nullable=True),
    Column("decided_at", Float, nullable=True),
)
decisions = Table(
    "desk_decisions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("item_id", String(32), nullable=False, index=True),
    Column("moderator", String(200), nullable=False),
    Column("decision", String(8), nullable=False),
    Column("at", Float, nullable=False),
    Column("listed", String(8), nullable=True),
)
users = Table(
    "desk_users",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("password_hash", String(300), nullable=False),
    Column("created_at", Float, nullable=False),
)
sessions = Table(
    "desk_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("user", String(200), nullable=False),
    Column("expires_at", Float, nullable=False),
)

# the same picture queued twice while pending is one item (see Desk.judge)
review_items_by_hash = Index("desk_review_items_hash", review_items.c.hash)


def _index_review_hashes(connection: Any) -> None:
    review_items_by_hash.create(connection, checkfirst=True)  # new databases have it from step 2


# Each migration creates the tables it introduced (and runs its own step, if any); they run in
# order, each once, recorded in desk_schema. A new version appends a step and never edits an old one.
MIGRATIONS: list[tuple[int, str, list[Table], Callable[[Any], None] | None]] = [
    (1, "known-image lists", [schema_version, counters, list_entries], None),
    (2, "review queue and decisions", [review_items, decisions], None),
    (3, "moderators and sessions", [users, sessions], None),
    (4, "review items found by their hash", [], _index_review_hashes),
]
LATEST = MIGRATIONS[-1][0]


def open_engine(url: str) -> Engine:
    """An engine for ``url`` (``sqlite:///desk.db``, ``postgresql+psycopg://...``), checked by
    connecting once. Raises DeskError with the reason (the password is never repeated)."""
    try:
        engine = create_engine(url, pool_pre_ping=True, future=True)
    except (ArgumentError, ImportError, ValueError) as err:
        raise DeskError(f"NSFW_SPACE_DESK_DB is not a database URL this Space can open: {err}") from err
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    try:
        with engine.connect():
            pass
    except DatabaseError as err:
        shown = engine.url.render_as_string(hide_password=True)
        raise DeskError(f"The desk database {shown} could not be opened: {err.__class__.__name__}.") from err
    return engine


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the one writer
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def current_version(engine: Engine) -> int:
    """The schema version of the database (0: no desk tables yet)."""
    try:
        with engine.connect() as connection:
            value = connection.execute(select(schema_version.c.version)).scalar()
    except OperationalError:
        return 0
    except DatabaseError:
        return 0
    return int(value or 0)


def upgrade(engine: Engine, to: int = LATEST, on_step: Callable[[int, str], None] | None = None) -> int:
    """Apply the migrations after the database's version, up to ``to``; return the new version."""
    version = current_version(engine)
    if version > LATEST:
        raise DeskError(
            f"The desk database is at schema version {version}, newer than this nsfw-space "
            f"({LATEST}); upgrade nsfw-space before using it."
        )
    for step, what, tables, extra in MIGRATIONS:
        if step <= version or step > to:
            continue
        with engine.begin() as connection:
            metadata.create_all(connection, tables=tables)
            if extra is not None:
                extra(connection)
            if step == 1:
                connection.execute(insert(schema_version).values(version=1))
                connection.execute(insert(counters).values(name="lists", value=0))
            else:
                connection.execute(update(schema_version).values(version=step))
        logger.info("Desk database upgraded to version %d (%s).", step, what)
        if on_step is not None:
            on_step(step, what)
        version = step
    return version
