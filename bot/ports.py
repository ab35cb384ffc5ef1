"""What one feature offers another, as Protocols: features depend on these, never on each other;
the composition root (:mod:`bot.app`) hands each feature the real parts."""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiogram.types import InputFile, Message

from bot.db.models import Lead
from bot.inbound import Inbound, Visitor

#: Sends one document (a Telegram ``file_id`` or a file to upload) to a buyer.
SendDocument = Callable[[str | InputFile], Awaitable[Message]]


class Buyer(Protocol):
    """What a personal catalogue depends on (a :class:`Lead` or a broadcast recipient)."""

    first_name: str | None
    last_name: str | None
    company: str | None
    language: str
    interests: dict[str, Any]


@dataclass(frozen=True)
class PriceRange:
    """The models of one category (its name) and their price range at one volume tier (amounts with the currency)."""

    category: str
    models: int
    low: str
    high: str


@dataclass(frozen=True)
class Offered:
    """A product as offered to one buyer: its SKU, name and price at their tier (the amount with the currency, per unit)."""

    sku: str
    name: str
    price: str


class Catalog(Protocol):
    """The supplier's catalogue (``bot/catalog``)."""

    async def send(self, buyer: Buyer, send: SendDocument) -> Message:
        """Send ``buyer``'s personal PDF through ``send``: by ``file_id`` once uploaded, else rendered and uploaded."""

    async def send_price_list(self, buyer: Buyer, send: SendDocument) -> Message:
        """Send ``buyer`` the XLSX price list of the whole assortment at their tier through ``send``."""

    def prices(self, interests: Mapping[str, Any], language: str) -> tuple[str, list[PriceRange]]:
        """The name of the buyer's volume tier (the smallest when unknown) and the price ranges of the categories they
        want (through the quiz → catalogue mapping), in ``language``."""

    def assortment(self, interests: Mapping[str, Any]) -> list[str]:
        """The SKUs of the categories the buyer wants (all when unknown), as the catalogue is now."""

    def novelties(self, interests: Mapping[str, Any], language: str, known: Collection[str]) -> list[Offered]:
        """The products of the buyer's categories whose SKU is not in ``known``, in catalogue order, at the buyer's tier."""


class BuyerRelay(Protocol):
    """The operator chat (``bot/relay``): where free buyer messages go for a human answer."""

    async def forward(self, lead: Lead, message: Inbound) -> None: ...


class OperatorTopic(Protocol):
    """The lead's topic in the operator chat (``bot/relay``): what the bot tells the managers there."""

    async def notice(self, lead: Lead, text: str) -> None: ...

    async def lead_in_topic(self, message: Message) -> Lead | None:
        """The lead an operator-chat message is about (its topic, or the message it replies to)."""


class Reminders(Protocol):
    """Reminders to the buyer (``bot/followups``): what the operator chat's «Напомнить клиенту…» sets."""

    async def add(self, lead: Lead | None, chat_id: int, message_id: int, manager: str, args: str | None) -> str:
        """Remind ``lead`` of ``args`` (``<when> <what>``, as ``/remind`` takes them), once per ``chat_id``/``message_id``;
        returns the answer for the topic (done, or what to write instead)."""


class Journey(Protocol):
    """The lead journey (``bot/journey``): the steps managers and broadcast buttons start."""

    async def send_catalog(self, lead: Lead) -> None: ...

    async def action(self, visitor: Visitor, action: str) -> None: ...
