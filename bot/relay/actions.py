"""What managers do to a lead from its card or a command: the catalogue, quick replies, stages, close or
reopen, ban or unban, a reminder to the buyer; and the admins' /reload of OPERATORS_CONFIG."""
from __future__ import annotations

import contextlib

from aiogram.exceptions import TelegramAPIError, TelegramBadRequest
from aiogram.types import BotCommand, BotCommandScopeChat, Message, User

from bot.db.models import Lead
from bot.funnel import CLOSED, STAGES
from bot.journal import BANNED, STAGE_CHANGED, UNBANNED
from bot.ports import Journey, Reminders
from bot.relay import store
from bot.relay.card import REMIND_REASONS, REMIND_TIMES, RelayCb, card_keyboard, remind_keyboard, stage_keyboard, stage_label
from bot.relay.chat import OperatorChat, unmodified
from bot.relay.config import BUILTIN_COMMANDS, load_roster
from bot.relay.outbound import ManagerMessages
from bot.relay.quick import QuickReplies
from bot.relay.topics import Topics
from bot.texts import plural, t

ADMIN_ACTIONS = ("ban", "unban", "reload")
MENU = tuple(name for name in BUILTIN_COMMANDS if name not in ADMIN_ACTIONS)  # what every manager may use


class Actions:
    def __init__(self, chat: OperatorChat, topics: Topics, managers: ManagerMessages, quick: QuickReplies, journey: Journey) -> None:
        self.chat = chat
        self.topics = topics
        self.managers = managers
        self.quick = quick
        self.journey = journey
        self.reminders: Reminders | None = None  # set by the app (bot/followups)

    async def button(self, message: Message, user: User, data: RelayCb) -> None:
        """A lead card button (only for members of the operator group it is in)."""
        if not await self.chat.is_member(message.chat.id, user.id):
            return
        async with self.chat.db() as session:
            lead = await session.get(Lead, data.lead)
            topic = await store.topic(session, data.lead)
        if lead is None or topic is None:
            return
        lang = self.chat.lang
        if data.action in ("stages", "back"):
            markup = stage_keyboard(lead, lang) if data.action == "stages" else card_keyboard(lead, lang, closed=topic.is_closed)
            await self.chat.bot.edit_message_reply_markup(chat_id=message.chat.id, message_id=message.message_id, reply_markup=markup)
        elif data.action == "stage":
            await self.set_stage(lead, data.stage, origin=message, manager=user)
        elif data.action.startswith("remind"):
            await self.remind(lead, data, message, user)
        else:
            await self.act(lead, data.action, origin=message, manager=user)

    async def act(self, lead: Lead, action: str, *, origin: Message, manager: User) -> None:
        """A manager's action on a lead: a quick reply, the catalogue, close/reopen, ban/unban."""
        name = self.chat.manager_name(manager)
        if action in ADMIN_ACTIONS and manager.id not in self.chat.settings.admin_ids:
            await self.chat.reply(origin, t(self.chat.lang, "relay.admin_only"))
        elif action == "catalog":
            await self._send_catalog(lead, origin, manager, name)
        elif self.quick.offers(action):
            await self.quick.send(lead, action, origin, manager, name)
        elif action in ("close", "reopen"):
            async with self.chat.db() as session:
                topic = await store.topic(session, lead.id)
            await self.chat.reply(origin, t(self.chat.lang, f"relay.{'closed' if action == 'close' else 'reopened'}", manager=name))
            await self.topics.set_closed(lead, topic, action == "close", manager=name)
            await self.topics.refresh_card(lead.id)
        elif action in ("ban", "unban"):
            async with self.chat.db.begin() as session:
                fresh = await session.get(Lead, lead.id, with_for_update=True)
                fresh.is_banned = action == "ban"
                await self.chat.journal.event(session, fresh, BANNED if fresh.is_banned else UNBANNED, manager=name)
                if fresh.is_banned:
                    await self.chat.sla.dismiss(session, fresh)
            await self.chat.reply(origin, t(self.chat.lang, "relay.banned" if action == "ban" else "relay.unbanned", manager=name))
            await self.topics.refresh_card(lead.id)
        else:
            await self.chat.reply(origin, t(self.chat.lang, "relay.unknown_command", name=action))

    async def remind(self, lead: Lead, data: RelayCb, message: Message, user: User) -> None:
        """«Напомнить клиенту…»: a picker under the card (what, then when; the text says how to ``/remind`` anything else),
        then the reminder through the follow-ups (:class:`bot.ports.Reminders`), its answer in place of the picker."""
        lang = self.chat.lang
        if self.reminders is None:
            await self.chat.reply(message, t(lang, "relay.remind.off"))
            return
        if data.action == "remind":  # the card's button
            await self.chat.reply(message, t(lang, "relay.remind.what"), reply_markup=remind_keyboard(lead, lang))
            return
        reason, _, when = data.stage.partition("|")
        if reason not in REMIND_REASONS:
            return
        what, markup = t(lang, f"relay.remind.reasons.{reason}"), None
        if data.action == "remind_when" and when in REMIND_TIMES:
            text = await self.reminders.add(lead, message.chat.id, message.message_id, self.chat.manager_name(user), f"{REMIND_TIMES[when]} {what}")
        elif data.action == "remind_what":
            text, markup = t(lang, "relay.remind.when", what=what, tz=self.chat.settings.timezone), remind_keyboard(lead, lang, reason)
        else:  # «Назад» to the reasons
            text, markup = t(lang, "relay.remind.what"), remind_keyboard(lead, lang)
        try:
            await self.chat.bot.edit_message_text(text, chat_id=message.chat.id, message_id=message.message_id, reply_markup=markup)
        except TelegramBadRequest as exc:
            if not unmodified(exc):  # a press replayed: the picker shows it already
                raise

    async def _send_catalog(self, lead: Lead, origin: Message, manager: User, name: str) -> None:
        async def send() -> bool:
            await self.journey.send_catalog(lead)
            return True

        if await self.managers.to_buyer(lead, origin, send):
            async with self.chat.db.begin() as session:
                fresh = await session.get(Lead, lead.id)
                await self.chat.sla.answer(session, fresh, manager.id, name)
            await self.chat.reply(origin, t(self.chat.lang, "relay.catalog_sent", manager=name))

    async def set_stage(self, lead: Lead, stage: str, *, origin: Message, manager: User) -> None:
        """Move the lead to any stage (managers may go back too); recorded as ``stage_changed``."""
        if stage not in (*STAGES, *CLOSED):
            return
        name = self.chat.manager_name(manager)
        async with self.chat.db.begin() as session:
            fresh = await session.get(Lead, lead.id, with_for_update=True)
            previous, fresh.stage = fresh.stage, stage
            if previous != stage:
                await self.chat.journal.event(session, fresh, STAGE_CHANGED, stage=stage, previous=previous, manager=name)
        await self.chat.reply(origin, t(self.chat.lang, "relay.stage_set", stage=stage_label(stage, self.chat.lang), manager=name))
        await self.topics.refresh_card(lead.id)

    async def reload(self) -> str:
        """Re-read OPERATORS_CONFIG (an admin's /reload); a broken file leaves the current one."""
        try:
            roster = load_roster(self.chat.settings.operators_config)
        except ValueError as exc:
            return t(self.chat.lang, "relay.reload_failed", error=str(exc))
        self.chat.roster = self.chat.sla.roster = roster
        await self.announce_commands()
        lang = self.chat.lang
        return t(lang, "relay.reloaded", templates=plural(lang, "relay.counts.templates", len(roster.titles)),
                 operators=plural(lang, "relay.counts.managers", len(roster.operators)))

    async def announce_commands(self) -> None:
        """The operator groups' command menu: built-ins and templates."""
        commands = [BotCommand(command=name, description=t(self.chat.lang, f"relay.commands.{name}")) for name in MENU]
        commands += [BotCommand(command=name, description=title) for name, title in self.chat.roster.titles.items()]
        for chat_id in self.chat.chat_ids:
            with contextlib.suppress(TelegramAPIError):
                await self.chat.bot.set_my_commands(commands[:100], scope=BotCommandScopeChat(chat_id=chat_id))

    def templates(self) -> str:
        """/templates: the quick replies and templates managers can send."""
        lang = self.chat.lang
        lines = [t(lang, "relay.templates")]
        lines += [t(lang, "relay.template_line", name=name, title=t(lang, f"relay.commands.{name}")) for name in MENU]
        lines += [t(lang, "relay.template_line", name=name, title=title) for name, title in self.chat.roster.titles.items()]
        return "\n".join(lines)
