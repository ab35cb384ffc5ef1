"""Data a stage requires from the buyer (``requires:`` in ``STAGE_MESSAGES``): delivery city, company, INN, phone.

On entering the stage the bot asks for what it does not know yet, one item at a time, as a question the buyer
answers by replying; each answer is checked (the INN by its checksum, the phone with phonenumbers) and a bad one
asked again with what is wrong. When everything is in, one journal event carries it (the CRM outbox makes it a note
and the configured deal fields) and the managers are told in the topic. A typed phone never becomes the lead's
phone (only a shared contact does that): it goes to amoCRM as the buyer wrote it, checked.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiogram.types import ForceReply
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db import leads
from bot.db.models import Lead
from bot.followups import store
from bot.followups.config import ITEMS
from bot.journal import REQUIRED_DATA_RECEIVED, Journal
from bot.messenger import BuyerUnreachable, Messenger
from bot.phones import normalise_phone
from bot.texts import t

MAX_LENGTH = 200
_INN_WEIGHTS = {10: ((2, 4, 10, 3, 5, 9, 4, 6, 8),), 12: ((7, 2, 4, 10, 3, 5, 9, 4, 6, 8), (3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8))}


def valid_inn(inn: str) -> bool:
    """A Russian INN: 10 digits (a company) or 12 (a sole trader, a person) whose check digits agree."""
    if not (inn.isascii() and inn.isdigit() and len(inn) in _INN_WEIGHTS):
        return False
    digits = [int(d) for d in inn]
    for weights in _INN_WEIGHTS[len(inn)]:
        check = sum(w * d for w, d in zip(weights, digits)) % 11 % 10
        if check != digits[len(weights)]:
            return False
    return True


def checked(item: str, text: str) -> str | None:
    """The answer as it is kept (a phone in E.164), or None when it is not a valid ``item``."""
    value = " ".join(text.split())
    if item == "inn":
        value = value.replace(" ", "")
        return value if valid_inn(value) else None
    if item == "phone":
        return normalise_phone(value)
    return value if 2 <= len(value) <= MAX_LENGTH else None


def known(lead: Lead, collected: dict[str, str]) -> dict[str, str]:
    """What the bot already knows of each item: from earlier answers, else the lead (the quiz's city, the company)."""
    values = {"city": str((lead.interests or {}).get("city") or ""), "company": lead.company or "", "phone": lead.phone or ""}
    return {item: collected.get(item) or values.get(item, "") for item in ITEMS}


class RequiredData:
    def __init__(self, db: async_sessionmaker[AsyncSession], journal: Journal, messenger: Messenger,
                 tell_managers: Callable[[Lead, str], Awaitable[None]], lang: str) -> None:
        self.db = db
        self.journal = journal
        self.messenger = messenger
        self.tell_managers = tell_managers
        self.lang = lang  # the managers'

    async def missing(self, session: AsyncSession, lead: Lead, items: list[str]) -> list[str]:
        have = known(lead, await store.collected(session, lead.id))
        return [item for item in items if not have[item]]

    def question(self, lead: Lead, item: str, *, again: bool = False) -> str:
        """The question for ``item`` (after a bad answer: what was wrong, then the question)."""
        text = t(lead.language, f"followups.required.ask.{item}")
        return f"{t(lead.language, f'followups.required.bad.{item}')}\n{text}" if again else text

    async def ask(self, lead: Lead, row_id: int, item: str, *, again: bool = False) -> None:
        """Send the question for ``item`` (logged): marked as asked before it goes (a quick reply finds it), its message
        id noted after, unless the answer came first."""
        pending = {"item": item, "message_id": None}
        async with self.db.begin() as session:
            row = await store.get(session, row_id)
            if row is not None:
                row.data = {**row.data, "asking": pending}
        sent = await self.messenger.send_text(lead, self.question(lead, item, again=again), reply_markup=ForceReply())
        async with self.db.begin() as session:
            row = await store.get(session, row_id)
            if row is not None and row.data.get("asking") == pending:
                row.data = {**row.data, "asking": {"item": item, "message_id": sent.message_id}}

    async def answer(self, tg_user_id: int, reply_to: int, text: str) -> bool:
        """A buyer's reply to a question; False if it answers something else."""
        async with self.db.begin() as session:
            lead = await leads.by_tg_user(session, tg_user_id, for_update=True)  # the lead first, as every writer here
            row = await store.asking(session, lead.id, reply_to) if lead is not None else None
            if lead is None or row is None:
                return False
            await self.journal.message(session, lead, direction="in", author="buyer", author_name=lead.display_name, text=text,
                                       tg_chat_id=tg_user_id, meta={"required": row.id})
            item = row.data["asking"]["item"]
            value = checked(item, text)
            answers = {**row.data.get("answers", {}), **({item: value} if value else {})}
            row.data = {**row.data, "answers": answers, "asking": None}
            left = [i for i in row.data.get("items", []) if i not in answers]
            have = known(lead, {**await store.collected(session, lead.id), **answers})
            if value is not None and not left:
                await self.journal.event(session, lead, REQUIRED_DATA_RECEIVED, for_stage=row.stage, delivery_city=have["city"],
                                         company_name=have["company"], inn=have["inn"], contact_phone=have["phone"])
        try:
            if value is None:
                await self.ask(lead, row.id, item, again=True)
            elif left:
                await self.ask(lead, row.id, left[0])
            else:
                await self.messenger.send_text(lead, t(lead.language, "followups.required.thanks"))
                await self.tell_managers(lead, t(self.lang, "followups.topic.required", **{i: have[i] or "—" for i in ITEMS}))
        except BuyerUnreachable:
            pass
        return True
