"""SQL that reads the same on SQLite and PostgreSQL: INSERT … ON CONFLICT DO NOTHING, JSON lists, epoch seconds,
the «anything to do?» read and the lease of a batch of rows that background loops share."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Row, Select, case, exists, func, literal, select, type_coerce, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement


def insert_ignore(session: AsyncSession, model: type) -> Any:
    """INSERT … ON CONFLICT DO NOTHING for the session's database."""
    dialect = postgresql if session.bind.dialect.name == "postgresql" else sqlite
    return dialect.insert(model).on_conflict_do_nothing()


async def any_row(session: AsyncSession, key: Any, *where: Any) -> bool:
    """Whether a row of ``key``'s table matches ``where``: the read an idle background round makes before it takes a
    write turn (on SQLite one would hold up the buyers' writes)."""
    return (await session.execute(select(key).where(*where).limit(1))).first() is not None


def unlocked(rows: Select[Any]) -> Any:
    """``rows`` locked in their order, skipping any another transaction holds (PostgreSQL; SQLite has one writer):
    a multi-row update that waited for some rows while holding others could close a deadlock."""
    return rows.with_for_update(skip_locked=True).scalar_subquery()


async def lease_rows(session: AsyncSession, key: Any, where: Sequence[Any], still: Sequence[Any], limit: int,
                     values: Mapping[str, Any], returning: Sequence[Any]) -> list[Row[Any]]:
    """Write ``values`` (an owner, a lease) on up to ``limit`` rows matching ``where``, lowest ``key`` first, that
    still match ``still`` when written and that no other transaction holds; ``key, *returning`` of each, by ``key``."""
    candidates = select(key).where(*where).order_by(key).limit(limit)
    query = (update(key.class_).where(key.in_(unlocked(candidates)), *still).values(**values)
             .returning(key, *returning).execution_options(synchronize_session=False))
    return sorted((await session.execute(query)).all(), key=lambda row: row[0])


def json_has_any(column: Any, key: str | None, values: list[str], dialect: str) -> ColumnElement[bool]:
    """The JSON list ``column[key]`` (or ``column`` itself) contains any of ``values``."""
    if dialect == "postgresql":
        target = type_coerce(column, postgresql.JSONB)
        return (target[key] if key else target).has_any(postgresql.array(values))
    items = (func.json_each(column, f"$.{key}") if key else func.json_each(column)).table_valued("value").alias()
    return exists(select(literal(1)).select_from(items).where(items.c.value.in_(values)))


def json_items(column: Any, key: str, dialect: str) -> Any:
    """The items of the JSON list ``column[key]`` as a table with a text column ``value`` to join
    (a single string counts as a list of one, anything else as an empty list)."""
    if dialect == "postgresql":
        value = type_coerce(column, postgresql.JSONB)[key]
        kind = func.jsonb_typeof(value)
        listed = case((kind == "array", value), (kind == "string", func.jsonb_build_array(value)), else_=func.jsonb_build_array())
        return func.jsonb_array_elements_text(listed).table_valued("value").alias()
    return func.json_each(column, f"$.{key}").table_valued("value").alias()


class epoch(FunctionElement[int]):  # noqa: N801  (reads as a SQL function)
    """Whole seconds since 1970-01-01 UTC of a timestamp column (rounded down on both databases)."""

    type = BigInteger()
    inherit_cache = True


@compiles(epoch, "sqlite")
def _epoch_sqlite(element: epoch, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST(strftime('%s', {compiler.process(element.clauses, **kw)}) AS INTEGER)"


@compiles(epoch, "postgresql")
def _epoch_postgresql(element: epoch, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST(FLOOR(EXTRACT(EPOCH FROM {compiler.process(element.clauses, **kw)})) AS BIGINT)"
