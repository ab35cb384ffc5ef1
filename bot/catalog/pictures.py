"""Product pictures at import (never at render time): local files or http(s) URLs, downloaded with a timeout, a size cap
and a content-type check, normalised with Pillow (EXIF rotation, RGB, longest side 800 px, JPEG) and stored by content
under ``DATA_DIR/catalog/pictures/``; downloads are cached by URL and revalidated with their ETag."""
from __future__ import annotations

import asyncio
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import httpx

from bot.catalog.store import write_atomically

MAX_BYTES = 10 * 1024 * 1024
TIMEOUT = httpx.Timeout(10.0, connect=5.0)
LONGEST_SIDE = 800
PICTURES = "pictures"


class PictureError(ValueError):
    """One picture could not be used; the message says why."""


async def read_capped(response: httpx.Response, limit: int, url: str, error: type[ValueError]) -> bytes:
    """A streamed response's body, refused with ``error`` as soon as it grows past ``limit`` bytes."""
    chunks, size = [], 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise error(f"{url[:120]}: larger than {limit // 1024 // 1024} MB")
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass
class Pictures:
    """Turns picture references into files under ``store/pictures``; counts what it fetched and what failed."""

    store: Path
    base: Path | None  # where relative paths of the source point (its folder); None: a URL source, paths refused
    fetched: int = 0
    reused: int = 0
    failed: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        (self.store / PICTURES).mkdir(parents=True, exist_ok=True)
        (self.store / "downloads").mkdir(parents=True, exist_ok=True)

    async def get(self, client: httpx.AsyncClient, reference: str) -> str:
        """The stored picture (a path relative to ``store``) for ``reference``; :class:`PictureError` when unusable."""
        scheme = urlsplit(reference).scheme.lower()
        if scheme in ("http", "https"):
            data = await self._download(client, reference)
        elif scheme:
            raise PictureError(f"{reference[:120]}: only http and https URLs or files")
        else:
            data = self._local(reference)
        return await asyncio.to_thread(self._store, data, PurePosixPath(urlsplit(reference).path).suffix.lower())

    def _local(self, reference: str) -> bytes:
        if self.base is None:
            raise PictureError(f"{reference[:120]}: a file path in a feed fetched by URL")
        path = (self.base / reference).resolve()
        if not path.is_relative_to(self.base.resolve()) or not path.is_file():
            raise PictureError(f"{reference[:120]}: no such file in {self.base}")
        if path.stat().st_size > MAX_BYTES:
            raise PictureError(f"{reference[:120]}: larger than {MAX_BYTES // 1024 // 1024} MB")
        self.fetched += 1
        return path.read_bytes()

    async def _download(self, client: httpx.AsyncClient, url: str) -> bytes:
        key = hashlib.sha256(url.encode()).hexdigest()
        body, meta = self.store / "downloads" / key, self.store / "downloads" / f"{key}.json"
        headers = {}
        if body.is_file() and meta.is_file():
            etag = json.loads(meta.read_text()).get("etag")
            if etag:
                headers["If-None-Match"] = etag
        try:
            async with client.stream("GET", url, headers=headers, timeout=TIMEOUT, follow_redirects=True) as response:
                if response.status_code == 304 and body.is_file():
                    self.reused += 1
                    return body.read_bytes()
                if response.status_code != 200:
                    raise PictureError(f"{url[:120]}: HTTP {response.status_code}")
                kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
                if not kind.startswith("image/"):
                    raise PictureError(f"{url[:120]}: not an image ({kind or 'no content type'})")
                if int(response.headers.get("content-length") or 0) > MAX_BYTES:
                    raise PictureError(f"{url[:120]}: larger than {MAX_BYTES // 1024 // 1024} MB")
                data = await read_capped(response, MAX_BYTES, url, PictureError)
                etag = response.headers.get("etag")
        except httpx.HTTPError as error:
            raise PictureError(f"{url[:120]}: {type(error).__name__}") from None
        write_atomically(body, data)
        write_atomically(meta, json.dumps({"etag": etag}).encode())
        self.fetched += 1
        return data

    def _store(self, data: bytes, suffix: str) -> str:
        """Normalise (SVG is kept as drawn) and store by content; the stored path relative to ``store``."""
        if suffix == ".svg" or data.lstrip()[:5] in (b"<?xml", b"<svg "):
            name, output = hashlib.sha256(data).hexdigest()[:24] + ".svg", data
        else:
            name = hashlib.sha256(data).hexdigest()[:24] + ".jpg"
            if (self.store / PICTURES / name).is_file():
                return f"{PICTURES}/{name}"
            output = _normalise(data)
        target = self.store / PICTURES / name
        if not target.is_file():
            write_atomically(target, output)
        return f"{PICTURES}/{name}"


def _normalise(data: bytes) -> bytes:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (LONGEST_SIDE, LONGEST_SIDE))  # a JPEG is decoded at the smallest scale still big enough
            image = ImageOps.exif_transpose(image).convert("RGB")
            image.thumbnail((LONGEST_SIDE, LONGEST_SIDE), reducing_gap=2.0)
            out = io.BytesIO()
            image.save(out, "JPEG", quality=85)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
        raise PictureError(f"not a picture Pillow can read ({type(error).__name__})") from None
    return out.getvalue()

