"""The quiz definition (``QUIZ_CONFIG``): questions for the in-bot quiz and the Marquiz mapping."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bot.texts import FALLBACK


def fold(text: str) -> str:
    """Compare texts loosely: case, dashes, spaces, dots and ё don't matter."""
    text = text.lower().replace("ё", "е")
    text = re.sub(r"[\u2010-\u2015\-]", "-", text)
    text = re.sub(r"[\s.?!:«»\"']+", " ", text)
    return text.strip()


@dataclass(frozen=True)
class Option:
    key: str
    text: dict[str, str]
    aliases: tuple[str, ...] = ()

    def label(self, lang: str) -> str:
        return self.text.get(lang) or self.text[FALLBACK]


@dataclass(frozen=True)
class Question:
    key: str
    type: str  # "multi" | "single" | "text"
    text: dict[str, str]
    options: tuple[Option, ...] = ()
    aliases: tuple[str, ...] = ()

    def label(self, lang: str) -> str:
        return self.text.get(lang) or self.text[FALLBACK]

    def option(self, key: str) -> Option | None:
        return next((option for option in self.options if option.key == key), None)

    def match_option(self, answer: str) -> Option | None:
        folded = fold(answer)
        for option in self.options:
            if folded in {fold(t) for t in (*option.text.values(), *option.aliases, option.key)}:
                return option
        return None


@dataclass(frozen=True)
class MatchResult:
    """Normalised interests plus whatever the quiz definition did not recognise (kept, never dropped)."""

    interests: dict[str, Any]
    unknown: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Quiz:
    questions: tuple[Question, ...]

    def question(self, key: str) -> Question | None:
        return next((q for q in self.questions if q.key == key), None)

    def match_question(self, text: str) -> Question | None:
        folded = fold(text)
        for question in self.questions:
            if folded in {fold(t) for t in (*question.text.values(), *question.aliases, question.key)}:
                return question
        return None

    def match_answers(self, answers: list[tuple[str, list[str]]]) -> MatchResult:
        """Map ``[(question text, [answer texts])]`` to interest keys."""
        interests: dict[str, Any] = {}
        unknown: list[dict[str, Any]] = []
        for question_text, values in answers:
            question = self.match_question(question_text)
            if question is None:
                unknown.append({"q": question_text, "a": values})
                continue
            if question.type == "text":
                text = ", ".join(v for v in values if v).strip()
                if text:
                    interests[question.key] = text
                continue
            keys = []
            for value in values:
                option = question.match_option(value)
                if option is None:
                    unknown.append({"q": question_text, "a": value, "question": question.key})
                elif option.key not in keys:
                    keys.append(option.key)
            if keys:
                interests[question.key] = keys if question.type == "multi" else keys[0]
        return MatchResult(interests, unknown)

    def labels_of(self, question_key: str, interests: dict[str, Any], lang: str) -> list[str]:
        """Human labels of one answer (option texts, or the free text)."""
        question = self.question(question_key)
        value = interests.get(question_key)
        if question is None or not value:
            return []
        if question.type == "text":
            return [str(value)]
        options = [question.option(key) for key in (value if isinstance(value, list) else [value])]
        return [option.label(lang) if option else str(key) for option, key in zip(options, value if isinstance(value, list) else [value])]

    def describe(self, interests: dict[str, Any], lang: str) -> list[str]:
        """Human labels of all answers, in quiz order (for greetings, cards, notes)."""
        return [label for question in self.questions for label in self.labels_of(question.key, interests, lang)]


def load_quiz(path: Path) -> Quiz:
    """Read and validate a quiz file; raises ``ValueError`` naming the problem."""
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    questions = []
    for index, raw in enumerate(data.get("questions") or []):
        try:
            kind = raw["type"]
            if kind not in {"multi", "single", "text"}:
                raise ValueError(f"type must be multi, single or text, not {kind!r}")
            options = tuple(
                Option(key=str(o["key"]), text=dict(o["text"]), aliases=tuple(o.get("aliases") or ()))
                for o in raw.get("options") or ()
            )
            if kind != "text" and not options:
                raise ValueError("a choice question needs options")
            questions.append(
                Question(key=str(raw["key"]), type=kind, text=dict(raw["text"]), options=options, aliases=tuple(raw.get("aliases") or ()))
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: question #{index + 1}: {exc}") from exc
    if not questions:
        raise ValueError(f"{path}: no questions")
    return Quiz(tuple(questions))
