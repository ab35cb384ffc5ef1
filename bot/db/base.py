"""Declarative base shared by every model module."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Integer, MetaData, String, TypeDecorator, event
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapper

from bot.clean import clean_text, clean_tree

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONType = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments an INTEGER PRIMARY KEY; Telegram ids need 64 bits elsewhere.
BigInt = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime; use bot.db.base.utcnow()")
        return value.astimezone(timezone.utc) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSONType,
        list[str]: JSONType,
        list[Any]: JSONType,
        int: BigInt,
    }

    def __init__(self, **values: Any) -> None:
        """Set ``values``; columns left out get their Python default at once, not only at flush."""
        for column in self.__table__.columns:
            default = column.default
            if column.key in values or default is None:
                continue
            if default.is_scalar:
                values[column.key] = default.arg
            elif default.is_callable:
                values[column.key] = default.arg(None)
        for key, value in values.items():
            if not hasattr(type(self), key):
                raise TypeError(f"{type(self).__name__} has no attribute {key!r}")
            setattr(self, key, value)


JSON_DEPTH = 64  # deeper than any value the service builds; webhook bodies are bounded tighter (bot.bodies)


def _storable_text(length: int | None):  # noqa: ANN202
    def storable(target: object, value: Any, old: object, initiator: object) -> Any:
        return clean_text(value)[:length] if isinstance(value, str) else value
    return storable


def _storable_json(target: object, value: Any, old: object, initiator: object) -> Any:
    return clean_tree(value, JSON_DEPTH)


@event.listens_for(Base, "mapper_configured", propagate=True)
def _store_only_storable_text(mapper: Mapper[Any], cls: type) -> None:
    """Every text column of every model keeps what both databases store: NUL and unpaired surrogates are
    removed (PostgreSQL refuses them) and a value longer than its ``String(n)`` column is cut to ``n``
    characters (PostgreSQL refuses it; SQLite would keep it), as it is assigned. JSON values are cleaned too."""
    for prop in mapper.column_attrs:
        column_type = prop.columns[0].type
        if isinstance(column_type, String):
            event.listen(prop.class_attribute, "set", _storable_text(column_type.length), retval=True)
        elif isinstance(column_type, JSON):
            event.listen(prop.class_attribute, "set", _storable_json, retval=True)
