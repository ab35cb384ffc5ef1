"""What a reader asks for: filters written as ``key=value`` (in /report and the CLI) and breakdowns."""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from bot.analytics.queries import Filters, dimensions
from bot.db.models import ARRIVALS
from bot.quiz import Quiz

PLAIN = ("source", "medium", "campaign", "language")


class BadRequest(ValueError):
    """An input that means nothing (``arg``), and what would (``choices``)."""

    def __init__(self, arg: str, choices: Iterable[str]) -> None:
        self.arg, self.choices = arg, tuple(choices)
        super().__init__(f"{arg!r}: expected one of {', '.join(self.choices) or '(none)'}")


def filter_keys(quiz: Quiz) -> tuple[str, ...]:
    return (*PLAIN, "path", "manager", *(q.key for q in quiz.questions if q.type != "text"))


def parse_filters(pairs: Iterable[str], quiz: Quiz, managers: Mapping[int, str]) -> Filters:
    """``["source=yandex", "<question>=<option>", "manager=<name>"]`` → :class:`Filters`."""
    values: dict[str, str] = {}
    answers: list[tuple[str, str]] = []
    managers_wanted: tuple[int, ...] | None = None
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not sep or not value:
            raise BadRequest(pair, (f"{key}=…" for key in filter_keys(quiz)))
        if key in PLAIN:
            values[key] = value
        elif key == "path":
            if value not in ARRIVALS:
                raise BadRequest(pair, (f"path={path}" for path in ARRIVALS))
            values[key] = value
        elif key == "manager":
            managers_wanted = tuple(i for i, name in managers.items() if name.casefold() == value.casefold())
            if not managers_wanted:
                raise BadRequest(pair, (f"manager={name}" for name in sorted(set(managers.values()))))
        else:
            question = quiz.question(key)
            if question is None or question.type == "text":
                raise BadRequest(pair, (f"{key}=…" for key in filter_keys(quiz)))
            option = question.option(value) or question.match_option(value)
            if option is None:
                raise BadRequest(pair, (f"{key}={o.key}" for o in question.options))
            answers.append((key, option.key))
    return Filters(**values, managers=managers_wanted, answers=tuple(answers))


def parse_breakdowns(names: Iterable[str], quiz: Quiz) -> tuple[str, ...]:
    """``["source", "<question>"]`` checked against the breakdowns there are (all of them when empty)."""
    known = dimensions(quiz)
    wanted = tuple(dict.fromkeys(name.strip().lower() for name in names if name.strip()))
    for name in wanted:
        if name not in known:
            raise BadRequest(name, known)
    return wanted or known
