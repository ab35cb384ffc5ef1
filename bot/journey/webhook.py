"""The Marquiz webhook (``POST /webhooks/marquiz/{secret}``): a submission in, the lead and its start link out."""
from __future__ import annotations

from collections.abc import Callable

import structlog
from aiohttp import web

from bot import bodies
from bot.bodies import BadBody
from bot.journey.intake import IntakeService
from bot.web import Handler, error

log = structlog.get_logger(__name__)


def marquiz_handler(intake: IntakeService, start_link: Callable[[str], str]) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        try:
            result = await intake.accept_marquiz(await bodies.read(request))
        except BadBody as exc:
            log.warning("marquiz.rejected", reason=str(exc), size=request.content_length)
            return error(exc.status, str(exc))
        return web.json_response(
            {"ok": True, "lead_id": result.lead_id, "duplicate": result.duplicate, "start_link": start_link(result.token)}
        )

    return handle
