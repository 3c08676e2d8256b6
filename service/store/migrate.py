"""Run the Alembic migrations in migrations/ from code (the CLI, tests), from any cwd."""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from service.config import PROJECT_ROOT, database_url_from_env
from service.store.models import Base, UTCDateTime
from service.store.session import make_engine

MIGRATIONS_DIR = PROJECT_ROOT / "migrations"


def context_options() -> dict[str, Any]:
    """Options for MigrationContext.configure, shared by env.py and `schema_diff`."""
    return {
        # SQLite cannot ALTER most things: autogenerate batch operations, which rebuild the
        # table on SQLite and are plain ALTERs on PostgreSQL, whichever database they came from.
        "render_as_batch": True,
        "compare_type": True,
        # One transaction for the whole upgrade: SQLite, like PostgreSQL, can roll DDL back.
        "transactional_ddl": True,
        "render_item": _render_item,
    }


def _render_item(kind: str, obj: Any, _autogen_context: Any) -> str | bool:
    """Write our UTCDateTime as the plain type it stores, so migrations never import models."""
    if kind == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def alembic_config(url: str | None = None) -> Config:
    """An Alembic Config for migrations/ and `url` (default: DATABASE_URL), without an ini file."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = url or database_url_from_env()
    return config


def upgrade(url: str | None = None, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str | None, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(url: str) -> str | None:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def schema_diff(url: str) -> list[Any]:
    """Differences between the models and the database's schema (empty when they agree).

    Alembic's comparison, plus what it does not look at: the names of CHECK constraints and
    the WHERE clause of partial indexes.
    """
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts=context_options())
            diff = list(compare_metadata(context, Base.metadata))
            diff.extend(_constraint_and_predicate_diff(connection, Base.metadata))
            return diff
    finally:
        engine.dispose()


def _constraint_and_predicate_diff(connection: sa.Connection, metadata: sa.MetaData) -> list[Any]:
    inspector = sa.inspect(connection)
    where_option = f"{connection.dialect.name}_where"
    diff: list[Any] = []
    existing = set(inspector.get_table_names())
    for table in metadata.sorted_tables:
        if table.name not in existing:
            continue  # compare_metadata reports it
        model_checks = {str(c.name) for c in table.constraints if isinstance(c, sa.CheckConstraint)}
        db_checks = {c["name"] for c in inspector.get_check_constraints(table.name)}
        if model_checks != db_checks:
            diff.append(("check_constraints", table.name, model_checks, db_checks))
        db_where = {
            index["name"]: _predicate(index.get("dialect_options", {}).get(where_option))
            for index in inspector.get_indexes(table.name)
        }
        for index in table.indexes:
            model_where = _predicate(index.dialect_options[connection.dialect.name]["where"])
            if index.name in db_where and db_where[index.name] != model_where:
                diff.append(
                    ("index_where", table.name, index.name, model_where, db_where[index.name])
                )
    return diff


def _predicate(clause: Any) -> str | None:
    """A WHERE clause reduced to its words, so "(status)::text = 'x'::text" == "status = 'x'"
    and PostgreSQL's "= ANY (ARRAY['a'::character varying, ...])" == "IN ('a', ...)"."""
    if clause is None:
        return None
    text = re.sub(r"::(text|character varying)(\[\])?", "", str(clause))
    text = re.sub(r"[\s()'\"]", "", text).lower()
    return re.sub(r"=anyarray\[([^\]]*)\]", r"in\1", text)
