"""A buyer acting in the sandbox Telegram: writes, taps buttons, reads the bot's replies."""
from __future__ import annotations

from typing import Any

from bot.sandbox.telegram import TelegramSandbox

Message = dict[str, Any]


def buttons(message: Message) -> list[tuple[str, str]]:
    """``(text, callback_data)`` of every inline button under ``message``."""
    rows = (message.get("reply_markup") or {}).get("inline_keyboard") or []
    return [(button["text"], button.get("callback_data", "")) for row in rows for button in row]


class Buyer:
    def __init__(self, sandbox: TelegramSandbox, user_id: int, first_name: str, last_name: str | None = None,
                 username: str | None = None, language_code: str = "ru", *, started: bool = False) -> None:
        self.sandbox = sandbox
        self.id = user_id
        self.first_name = first_name
        sandbox.add_user(user_id, first_name, last_name, username, language_code, started=started)
        self._seen = 0

    def send(self, text: str) -> Message:
        return self.sandbox.send_text(self.id, text)

    def share_phone(self, phone: str, *, own: bool = True) -> Message:
        return self.sandbox.send_contact(self.id, phone, contact_user_id=self.id if own else self.id + 1)

    async def replies(self, count: int = 1, timeout: float = 15.0) -> list[Message]:
        """The next ``count`` messages the bot sends this buyer (waits for them)."""
        every = await self.sandbox.wait_for_messages(self.id, self._seen + count, timeout=timeout)
        new = every[self._seen:self._seen + count]
        self._seen += count
        return new

    async def reply(self, timeout: float = 15.0) -> Message:
        return (await self.replies(1, timeout))[0]

    def click(self, label: str) -> dict[str, Any]:
        """Tap the newest inline button whose text contains ``label``."""
        for message in reversed(self.sandbox.messages(self.id, from_bot=True)):
            for text, data in buttons(message):
                if label in text:
                    return self.sandbox.click(self.id, message, data)
        raise AssertionError(f"no button {label!r} in the chat with {self.id}")
