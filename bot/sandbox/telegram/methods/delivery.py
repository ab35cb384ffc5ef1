"""Getting updates (polling or webhook) and downloading files."""

from __future__ import annotations

import re
from typing import Any

from ..errors import bad_request
from ..files import MAX_DOWNLOAD_SIZE
from ..params import Params
from .base import MethodGroup, RawJson, api_method

_SECRET = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


class DeliveryMethods(MethodGroup):
    """getUpdates, setWebhook, deleteWebhook, getWebhookInfo and getFile."""

    @api_method("getUpdates")
    async def get_updates(self, p: Params) -> RawJson:
        limit = min(max(p.integer("limit", 100), 1), 100)
        timeout = max(p.number("timeout") or 0.0, 0.0)
        updates = self.core.updates
        if updates.webhook is None:
            allowed = p.json("allowed_updates")
            updates.set_allowed(allowed if isinstance(allowed, list) else None)
        payloads = await updates.poll(offset=p.integer("offset"), limit=limit, timeout=timeout)
        return RawJson("[" + ",".join(payloads) + "]")

    @api_method("setWebhook")
    async def set_webhook(self, p: Params) -> bool:
        url = p.text("url") or ""
        drop = p.flag("drop_pending_updates")
        if not url:
            await self.core.updates.delete_webhook(drop_pending=drop)
            return True
        if not url.startswith(("http://", "https://")):
            raise bad_request("bad webhook: An HTTPS URL must be provided for webhook")
        secret = p.text("secret_token")
        if secret is not None and not _SECRET.match(secret):
            raise bad_request("secret token contains unallowed characters")
        max_connections = min(max(p.integer("max_connections", 40), 1), 100)
        allowed = p.json("allowed_updates")
        await self.core.updates.set_webhook(url, secret_token=secret, max_connections=max_connections,
                                            allowed_updates=allowed if isinstance(allowed, list) else None,
                                            drop_pending=drop)
        return True

    @api_method("deleteWebhook")
    async def delete_webhook(self, p: Params) -> bool:
        await self.core.updates.delete_webhook(drop_pending=p.flag("drop_pending_updates"))
        return True

    @api_method("getWebhookInfo")
    async def get_webhook_info(self, p: Params) -> dict[str, Any]:
        return self.core.updates.webhook_info()

    @api_method("getFile")
    async def get_file(self, p: Params) -> dict[str, Any]:
        stored = self.core.files.record(p.text("file_id") or "")
        if stored is None:
            raise bad_request("invalid file_id")
        if stored.size is not None and stored.size > MAX_DOWNLOAD_SIZE:
            raise bad_request("file is too big")
        result: dict[str, Any] = {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id,
                                  "file_path": self.core.files.file_path(stored)}
        if stored.size is not None:
            result["file_size"] = stored.size
        return result
