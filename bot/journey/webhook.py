"""The Marquiz webhook (``POST /webhooks/marquiz/{secret}``): a submission in, the lead and its start link out."""
from __future__ import annotations

from collections.abc import Callable

import structlog
from aiohttp import web

from bot.journey.intake import IntakeService
from bot.journey.marquiz import BadPayload
from bot.web import Handler, error, read_body

log = structlog.get_logger(__name__)


def marquiz_handler(intake: IntakeService, start_link: Callable[[str], str]) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        body = await read_body(request)
        try:
            result = await intake.accept_marquiz(body, request.content_type)
        except BadPayload as exc:
            log.warning("marquiz.rejected", reason=str(exc), size=len(body))
            return error(400, str(exc))
        return web.json_response(
            {"ok": True, "lead_id": result.lead_id, "duplicate": result.duplicate, "start_link": start_link(result.token)}
        )

    return handle
