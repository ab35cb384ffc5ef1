"""The amoCRM sync configuration (``CRM_CONFIG``, default ``bot/crm/crm.yaml``)."""
from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from bot.funnel import STAGES


CHOSEN_STAGE = "event"


class EventRule(BaseModel):
    """What one journal event does in amoCRM."""

    sync: bool = False
    contact: bool = False
    stage: str | None = None  # a stage key, or "event": the stage a manager chose (data["stage"]), either way
    note: str | None = None
    task: str | None = None
    fields: list[str] = []  # keys of the event's data written to the lead fields of the same key (lead_fields)


class OutboxTuning(BaseModel):
    lead_batch: int = Field(default=50, ge=1, le=50)
    note_batch: int = Field(default=250, ge=1, le=250)
    task_batch: int = Field(default=250, ge=1, le=250)
    lease: float = Field(default=300, gt=0)
    backoff: float = Field(default=5, ge=0)
    backoff_max: float = Field(default=600, ge=0)
    poll: float = Field(default=1.0, gt=0)
    keep_done_days: int = Field(default=7, ge=1)


class ClientTuning(BaseModel):
    timeout: float = Field(default=30, gt=0)
    attempts: int = Field(default=4, ge=1)
    wait: float = Field(default=1.0, ge=0)
    wait_max: float = Field(default=16.0, ge=0)
    blocked_probe: float = Field(default=1800, gt=0)


class CrmConfig(BaseModel):
    language: str = "ru"
    stages: dict[str, tuple[str, str]]
    lead_fields: dict[str, str | None]
    enums: dict[str, dict[str, str]] = {}
    contact_fields: dict[str, str] = {"phone": "PHONE", "email": "EMAIL"}
    tags: list[str] = []
    responsible: str | None = None
    duplicate_loss_reason: str | None = "Дубль"
    events: dict[str, EventRule] = {}
    tasks: dict[str, int]
    check_interval: float = Field(default=900, gt=0)
    reconcile_interval: float = Field(default=300, gt=0)
    outbox: OutboxTuning = OutboxTuning()
    client: ClientTuning = ClientTuning()

    @model_validator(mode="after")
    def _consistent(self) -> CrmConfig:
        problems = [f"stages.{key}: not a funnel stage (one of {', '.join(STAGES)})" for key in self.stages if key not in STAGES]
        for kind, rule in self.events.items():
            if rule.stage is not None and rule.stage != CHOSEN_STAGE and rule.stage not in self.stages:
                problems.append(f"events.{kind}.stage: {rule.stage!r} is not in stages")
            if rule.task is not None and rule.task not in self.tasks:
                problems.append(f"events.{kind}.task: {rule.task!r} is not in tasks")
            problems += [f"events.{kind}.fields: {key!r} is not in lead_fields (set it to null to leave it out)"
                         for key in rule.fields if key not in self.lead_fields]
        if "no_task" not in self.tasks:
            problems.append("tasks.no_task: required (deadline of the task the periodic check creates)")
        if problems:
            raise ValueError("; ".join(problems))
        return self


    @property
    def event_fields(self) -> set[str]:
        """Lead field keys that events fill in (not quiz answers)."""
        return {key for rule in self.events.values() for key in rule.fields}


def load_crm_config(path: Path) -> CrmConfig:
    """Read and validate the file; raises ``ValueError`` naming every problem."""
    try:
        return CrmConfig.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    except ValidationError as exc:
        details = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"{path}: {details}") from None
