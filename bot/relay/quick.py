"""Quick replies: ``/price``, ``/test``, ``/phone`` and the templates of OPERATORS_CONFIG, sent to the buyer as
the manager's message (in the buyer's language), with a copy in the lead's topic."""
from __future__ import annotations

from typing import Any

import structlog
from aiogram.exceptions import TelegramAPIError
from aiogram.types import Message, User
from jinja2 import TemplateError

from bot import keyboards
from bot.db.models import Lead
from bot.ports import Catalog
from bot.relay.card import stage_label
from bot.relay.chat import OperatorChat, replying_to
from bot.relay.config import TemplateContext
from bot.relay.outbound import ManagerMessages
from bot.texts import Safe, plural, t

log = structlog.get_logger(__name__)

BUILT_IN = ("price", "test", "phone")


class QuickReplies:
    def __init__(self, chat: OperatorChat, managers: ManagerMessages, catalog: Catalog) -> None:
        self.chat = chat
        self.managers = managers
        self.catalog = catalog

    def _text(self, lead: Lead, action: str, manager_name: str) -> tuple[str, Any]:
        """Text and keyboard of a quick reply, in the buyer's language."""
        lang = lead.language
        if action == "test":
            return t(lang, "journey.test_offer"), keyboards.test_offer(lang)
        if action == "phone":
            return t(lang, "relay.ask_phone"), keyboards.share_phone(lang)
        if action == "price":
            return self._price(lead), None
        return self.chat.roster.render(action, lang, self._context(lead, manager_name)), None

    def offers(self, action: str) -> bool:
        return action in BUILT_IN or self.chat.roster.has_template(action)

    async def send(self, lead: Lead, action: str, origin: Message, manager: User, name: str) -> None:
        """Send a quick reply to the buyer as the manager's message, and its copy into the topic."""
        try:
            text, markup = self._text(lead, action, name)
        except TemplateError as exc:
            await self.chat.reply(origin, self.chat.failed(str(exc)))
            return
        sent = await self.managers.to_buyer(lead, origin, lambda: self.chat.bot.send_message(lead.tg_user_id, text, reply_markup=markup))
        if sent is None:
            return
        pairs = []
        try:  # the buyer has it; the copy shows the team what was sent
            async with self.chat.budgets.post(origin.chat.id):
                mirror = await self.chat.bot.copy_message(origin.chat.id, lead.tg_user_id, sent.message_id,
                                                          reply_parameters=replying_to(origin.message_id),
                                                          message_thread_id=origin.message_thread_id if origin.is_topic_message else None)
            pairs = [(sent.message_id, mirror.message_id)]
        except TelegramAPIError as exc:
            log.warning("relay.mirror_failed", lead_id=lead.id, error=str(exc))
        await self.managers.remember(lead, origin.chat.id, pairs, [(sent, sent.message_id)], manager, name, quick_reply=action)

    def _context(self, lead: Lead, manager_name: str) -> TemplateContext:
        lang = lead.language
        return TemplateContext(
            lead={
                "first_name": lead.first_name or "", "last_name": lead.last_name or "",
                "name": " ".join(part for part in (lead.first_name, lead.last_name) if part), "company": lead.company or "",
                "phone": lead.phone or "", "city": lead.interests.get("city") or "",
                "categories": self.chat.quiz.labels_of("category", lead.interests, lang),
                "volume": ", ".join(self.chat.quiz.labels_of("volume", lead.interests, lang)),
                "interests": self.chat.quiz.describe(lead.interests, lang), "stage": stage_label(lead.stage, lang),
                "username": lead.tg_username or "",
            },
            manager={"name": manager_name},
        )

    def _price(self, lead: Lead) -> str:
        """/price: per category of the buyer, the number of models and the price range at their volume tier."""
        lang = lead.language
        tier, ranges = self.catalog.prices(lead.interests, lang)
        lines = [t(lang, "relay.price.title", volume=Safe(t(lang, "relay.price.volume", volume=tier)))]
        for prices in ranges:
            lines.append(t(lang, "relay.price.line", category=prices.category, count=plural(lang, "relay.price.models", prices.models),
                           low=prices.low, high=prices.high))
        lines.append(t(lang, "relay.price.footer"))
        return "\n".join(lines)
