"""Phone normalisation (E.164) with ``phonenumbers``; Russian numbers by default."""
from __future__ import annotations

import phonenumbers

DEFAULT_REGION = "RU"


def normalise_phone(raw: str | None, region: str = DEFAULT_REGION) -> str | None:
    """``"8 (999) 444-55-66"``, ``"79994445566"`` and ``"+7 999 444 55 66"`` → ``"+79994445566"``; junk → None."""
    if not raw:
        return None
    text = raw.strip()
    digits = "".join(ch for ch in text if ch.isdigit())
    if not digits:
        return None
    # Marquiz sends digits without "+": 7XXXXXXXXXX is already international for Russia.
    if not text.startswith("+") and len(digits) == 11 and digits[0] == "7":
        text = "+" + digits
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
