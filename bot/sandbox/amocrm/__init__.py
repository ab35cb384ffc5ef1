"""A sandbox amoCRM account over HTTP, for tests, the bench and the demo.

    sandbox, base_url, token = await start_sandbox_amocrm("127.0.0.1", 0)
    ...  # AMOCRM_BASE_URL=base_url, AMOCRM_ACCESS_TOKEN=token
    print(sandbox.describe_lead(lead_id))
    await sandbox.close()
"""
from __future__ import annotations

from bot.sandbox.amocrm.account import Account, ApiError
from bot.sandbox.amocrm.server import AmoSandbox

__all__ = ["Account", "AmoSandbox", "ApiError", "start_sandbox_amocrm"]


async def start_sandbox_amocrm(host: str = "127.0.0.1", port: int = 0, *, rate_limit: int | None = 7) -> tuple[AmoSandbox, str, str]:
    """Start the seed's account (both pipelines, the quiz fields, three users); returns it, its URL and a long-lived token."""
    sandbox = AmoSandbox(rate_limit=rate_limit)
    base_url = await sandbox.start(host, port)
    return sandbox, base_url, sandbox.long_lived_token
