"""The operator-chat file (``OPERATORS_CONFIG``, default ``bot/relay/operators.yaml``): managers and quick-reply templates.

Templates are jinja2 with autoescaping: whatever a buyer typed (``{{ lead.first_name }}``)
arrives HTML-escaped, while the template's own HTML stays markup.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, Field, ValidationError, field_validator

from bot.texts import FALLBACK

COMMAND_PATTERN = r"^[a-z0-9_]{1,32}$"
#: Built-in commands of the operator chat; a template may not take these names.
BUILTIN_COMMANDS = ("catalog", "price", "test", "phone", "close", "reopen", "templates", "stats", "ban", "unban", "reload")


class Operator(BaseModel):
    """A manager: Telegram account, name for buyers and amoCRM, amoCRM user, head of sales or not."""

    tg_id: int
    name: str = Field(min_length=1, max_length=256)
    amocrm_user_id: int | None = None
    head: bool = False  # gets the second-level SLA escalations
    chat_id: int | None = None  # the operator group of this manager's leads (with several groups)


class Template(BaseModel):
    title: str = Field(min_length=1, max_length=100)
    text: dict[str, str]  # language → jinja2 HTML

    @field_validator("text", mode="before")
    @classmethod
    def _one_language(cls, value: Any) -> Any:
        return {FALLBACK: value} if isinstance(value, str) else value


class OperatorsFile(BaseModel):
    operators: list[Operator] = []
    templates: dict[str, Template] = {}

    @field_validator("templates")
    @classmethod
    def _names(cls, value: dict[str, Template]) -> dict[str, Template]:
        for name in value:
            if not re.match(COMMAND_PATTERN, name):
                raise ValueError(f"{name!r}: a template name is a command: a-z, 0-9 and _, at most 32")
            if name in BUILTIN_COMMANDS:
                raise ValueError(f"{name!r} is a built-in command")
        return value


@dataclass(frozen=True)
class TemplateContext:
    """What a template sees: ``lead`` and ``manager`` (plain values, escaped on output)."""

    lead: dict[str, Any]
    manager: dict[str, Any]


SAMPLE = TemplateContext(
    lead={"first_name": "Анна", "last_name": "Петрова", "name": "Анна Петрова", "company": "", "phone": "", "city": "",
          "categories": ["Обувь"], "volume": "", "interests": ["Обувь"], "stage": "", "username": ""},
    manager={"name": "Иван"},
)


class Roster:
    """The loaded file: managers by Telegram and amoCRM id, compiled templates."""

    def __init__(self, data: OperatorsFile, source: Path) -> None:
        self.operators = data.operators
        self.titles = {name: template.title for name, template in data.templates.items()}
        self._by_tg = {operator.tg_id: operator for operator in data.operators}
        self._by_crm = {operator.amocrm_user_id: operator for operator in data.operators if operator.amocrm_user_id}
        env = SandboxedEnvironment(autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self._templates = {}
        for name, template in data.templates.items():
            for lang, text in template.text.items():
                try:
                    compiled = env.from_string(text)
                    compiled.render(lead=SAMPLE.lead, manager=SAMPLE.manager)
                except TemplateError as exc:
                    raise ValueError(f"{source}: template {name} ({lang}): {exc}") from None
                self._templates[name, lang] = compiled

    def by_tg(self, tg_id: int) -> Operator | None:
        return self._by_tg.get(tg_id)

    def by_crm(self, amocrm_user_id: int | None) -> Operator | None:
        return self._by_crm.get(amocrm_user_id) if amocrm_user_id else None

    @property
    def heads(self) -> list[Operator]:
        return [operator for operator in self.operators if operator.head]

    def has_template(self, name: str) -> bool:
        return name in self.titles

    def render(self, name: str, lang: str, context: TemplateContext) -> str:
        """Template ``name`` in ``lang`` (or Russian, or its only language), values escaped."""
        template = self._templates.get((name, lang)) or self._templates.get((name, FALLBACK))
        if template is None:
            template = next(compiled for (key, _), compiled in self._templates.items() if key == name)
        return template.render(lead=context.lead, manager=context.manager).strip()


def load_roster(path: Path) -> Roster:
    """Read and validate the file; raises ``ValueError`` naming the problem."""
    try:
        data = OperatorsFile.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    except ValidationError as exc:
        details = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"{path}: {details}") from None
    return Roster(data, path)
