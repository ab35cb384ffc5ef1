"""A WeasyPrint URL fetcher that can only read files inside the catalogue folder (and the templates' folder)."""
from __future__ import annotations

import mimetypes
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

from weasyprint.urls import URLFetcher, URLFetcherResponse

_MIME_TYPES = {".svg": "image/svg+xml", ".css": "text/css"}


class RefusedURL(PermissionError):
    """The URL points outside the catalogue folder (or is not a local file)."""


class SafeFetcher(URLFetcher):
    """Serve ``file:`` URLs that resolve inside one of ``roots``; refuse everything else.

    Symlinks are followed before the check, so neither ``..`` nor a link can escape.
    No network or ``data:`` URL is ever opened: WeasyPrint logs the refusal and
    skips the resource.
    """

    def __init__(self, *roots: Path) -> None:
        super().__init__()
        self.roots = tuple(root.resolve() for root in roots)

    def resolve(self, url: str) -> Path:
        """The local file ``url`` names, or :class:`RefusedURL`."""
        parts = urlsplit(url)
        if parts.scheme.lower() != "file" or parts.netloc not in ("", "localhost"):
            raise RefusedURL(f"not a catalogue file: {url[:200]}")
        try:
            path = Path(url2pathname(parts.path)).resolve()
            inside = any(path.is_relative_to(root) for root in self.roots) and path.is_file()
        except (OSError, ValueError) as error:  # e.g. a NUL byte or a symlink loop
            raise RefusedURL(f"unreadable path: {url[:200]}") from error
        if not inside:
            raise RefusedURL(f"outside the catalogue folder: {url[:200]}")
        return path

    def fetch(self, url: str, headers: Mapping[str, str] | None = None) -> URLFetcherResponse:
        """Read a catalogue file for WeasyPrint."""
        path = self.resolve(url)
        mime_type = _MIME_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0]
        return URLFetcherResponse(
            path.as_uri(), path.read_bytes(),
            {"Content-Type": mime_type or "application/octet-stream"},
        )
