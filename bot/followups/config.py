"""The stage-messages file (``STAGE_MESSAGES``, default ``bot/followups/stage_messages.yaml``).

Each funnel stage may have a message for the buyer, in ru and en: a jinja2 template with autoescaping, so
whatever a buyer typed or a manager put in an amoCRM field arrives HTML-escaped. Templates see ``lead``
(first_name, last_name, name, company, city) and ``fields`` (the deal's amoCRM fields named under ``fields``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from jinja2 import StrictUndefined, Template, TemplateError
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ValidationError, field_validator

from bot.funnel import STAGES
from bot.texts import FALLBACK, LANGUAGES

SAMPLE_LEAD = {"first_name": "Анна", "last_name": "Петрова", "name": "Анна Петрова", "company": "ООО Ромашка", "city": "Казань"}


class StageMessagesFile(BaseModel):
    fields: dict[str, str] = {}  # template name → amoCRM deal field name
    stages: dict[str, dict[str, str]] = {}  # funnel stage → language → template

    @field_validator("stages")
    @classmethod
    def _known(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for stage, texts in value.items():
            if stage not in STAGES:
                raise ValueError(f"{stage!r} is not a funnel stage (one of {', '.join(STAGES)})")
            if unknown := set(texts) - set(LANGUAGES):
                raise ValueError(f"{stage}: languages are {', '.join(LANGUAGES)}, not {', '.join(sorted(unknown))}")
            if FALLBACK not in texts:
                raise ValueError(f"{stage}: a {FALLBACK} text is required")
        return value


class StageMessages:
    """The compiled templates; ``render`` picks the buyer's language (else Russian)."""

    def __init__(self, data: StageMessagesFile, source: Path) -> None:
        self.fields = data.fields
        env = SandboxedEnvironment(autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self._templates: dict[tuple[str, str], Template] = {}
        for stage, texts in data.stages.items():
            for lang, text in texts.items():
                try:
                    compiled = env.from_string(text)
                    compiled.render(lead=SAMPLE_LEAD, fields={name: "1" for name in self.fields})
                except TemplateError as exc:
                    raise ValueError(f"{source}: stages.{stage}.{lang}: {exc}") from None
                self._templates[stage, lang] = compiled

    def has(self, stage: str | None) -> bool:
        return (stage, FALLBACK) in self._templates

    def render(self, stage: str, lang: str, lead: dict[str, Any], deal_fields: dict[str, str]) -> str:
        """The message of ``stage`` in ``lang``; ``deal_fields`` are by amoCRM field name."""
        template = self._templates.get((stage, lang)) or self._templates[stage, FALLBACK]
        fields = {name: deal_fields.get(crm_name, "") for name, crm_name in self.fields.items()}
        return template.render(lead=lead, fields=fields).strip()


def load_stage_messages(path: Path) -> StageMessages:
    """Read and validate the file; raises ``ValueError`` naming the problem."""
    try:
        data = StageMessagesFile.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    except ValidationError as exc:
        details = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"{path}: {details}") from None
    return StageMessages(data, path)
