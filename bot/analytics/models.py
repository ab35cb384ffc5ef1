"""Analytics tables: imported ad spend, and the weekly digests claimed by one instance."""
from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from bot.db.base import Base, utcnow


class AdSpend(Base):
    """What one day of one campaign cost (from an advertising account's export), in kopecks."""

    __tablename__ = "analytics_spend"
    __table_args__ = (UniqueConstraint("day", "source", "campaign"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    day: Mapped[date] = mapped_column(Date)
    source: Mapped[str] = mapped_column(String(128))  # matched to the leads' UTM source, case-insensitively
    campaign: Mapped[str] = mapped_column(String(256), default="")  # "" = the source as a whole
    amount: Mapped[int]  # kopecks
    imported_at: Mapped[datetime] = mapped_column(default=utcnow)


class Digest(Base):
    """One scheduled weekly digest: claimed by one instance (a lease), then marked sent."""

    __tablename__ = "analytics_digests"

    slot: Mapped[str] = mapped_column(String(32), primary_key=True)  # the scheduled moment, ISO, in TIMEZONE
    owner: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
