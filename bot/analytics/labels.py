"""Names of what the report counts, in the reader's language: steps, paths, breakdowns and their groups
(quiz questions and answers come from the quiz definition, managers from the operators file)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bot.analytics.figures import short_day
from bot.analytics.queries import FIXED_DIMENSIONS, NONE
from bot.analytics.report import week_start
from bot.quiz import Quiz
from bot.texts import catalogue, t


@dataclass(frozen=True)
class Labels:
    lang: str
    quiz: Quiz
    managers: Mapping[int, str]

    def step(self, step: str) -> str:
        return t(self.lang, f"analytics.steps.{step}")

    def path(self, key: str) -> str:
        return t(self.lang, f"analytics.paths.{key or 'unknown'}")

    def dimension(self, dimension: str) -> str:
        if dimension in FIXED_DIMENSIONS:
            return t(self.lang, f"analytics.dimensions.{dimension}")
        question = self.quiz.question(dimension)
        return question.label(self.lang) if question else dimension

    def key(self, dimension: str, key: str) -> str:
        """The name of one group of a breakdown."""
        if dimension == "path":
            return self.path(key)
        if dimension == "week":
            return t(self.lang, "analytics.week_of", day=short_day(week_start(key), self.lang))
        if key == NONE:
            return t(self.lang, f"analytics.none.{dimension if dimension in FIXED_DIMENSIONS else 'answer'}")
        if dimension == "manager":
            return self.managers.get(int(key)) or f"amoCRM #{key}"
        if dimension == "language":
            return catalogue(self.lang).get(f"analytics.languages.{key}", key)
        question = self.quiz.question(dimension)
        option = question.option(key) if question else None
        return option.label(self.lang) if option else key
