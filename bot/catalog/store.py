"""Imported versions of the catalogue, under ``DATA_DIR/catalog/``: ``versions/<version>.json`` (the whole catalogue
data), ``pictures/`` (shared by every version, stored by content) and ``active.json`` naming the version in use and the
catalogue folder it was imported for (replaced atomically, so a reader sees the old version or the new, never half).

Without an active import the catalogue is the hand-edited ``CATALOG_DIR/catalog.yaml``.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from bot.catalog.model import CATALOG_FILE, COMPANY_FILE, MAPPING_FILE, Catalogue, read_yaml, build, fingerprint, load_catalogue

ACTIVE = "active.json"


class Store:
    """The catalogue in use for ``catalog_dir`` (its own data, or the version last imported for it)."""

    def __init__(self, catalog_dir: Path, data_dir: Path) -> None:
        self.catalog_dir = catalog_dir.resolve()
        self.root = (data_dir / "catalog").resolve()
        self._loaded: tuple[str, Catalogue] | None = None

    def base(self) -> dict[str, Any]:
        """``catalog.yaml``: the currency, tiers, units and labels an import keeps (its categories and products it replaces)."""
        return read_yaml(self.catalog_dir / CATALOG_FILE)

    def active(self) -> str | None:
        """The imported version in use, if any (one imported for another catalogue folder doesn't count)."""
        try:
            pointer = json.loads((self.root / ACTIVE).read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None
        if pointer.get("catalog_dir") != str(self.catalog_dir) or not (self.root / "versions" / f"{pointer.get('version')}.json").is_file():
            return None
        return str(pointer["version"])

    def stamp(self) -> str:
        """Changes whenever the catalogue in use may have: the folder's files and the active pointer."""
        files = sorted(p for p in self.catalog_dir.rglob("*") if p.is_file())
        pointer = self.root / ACTIVE
        return fingerprint([*files, *([pointer] if pointer.is_file() else [])])

    def current(self) -> Catalogue:
        """The catalogue in use, loaded again only when :meth:`stamp` changed."""
        stamp = self.stamp()
        if self._loaded is None or self._loaded[0] != stamp:
            version = self.active()
            self._loaded = (stamp, self.load(version) if version else load_catalogue(self.catalog_dir))
        return self._loaded[1]

    def load(self, version: str) -> Catalogue:
        """An imported version with the folder's company and mapping files."""
        data = json.loads((self.root / "versions" / f"{version}.json").read_text(encoding="utf-8"))
        return self.assemble(data)

    def assemble(self, data: dict[str, Any]) -> Catalogue:
        """Validate imported data (pictures relative to the store) with the folder's company and mapping."""
        return build(data, read_yaml(self.catalog_dir / COMPANY_FILE), read_yaml(self.catalog_dir / MAPPING_FILE), self.root)

    def save(self, catalogue: Catalogue) -> None:
        """Write ``catalogue`` as its version (idempotent: the same content is the same version)."""
        target = self.root / "versions" / f"{catalogue.version}.json"
        if not target.is_file():
            data = catalogue.model_dump(mode="json", exclude={"company", "mapping", "root", "version"})
            write_atomically(target, json.dumps(data, ensure_ascii=False).encode())

    def activate(self, version: str) -> None:
        """Switch to ``version`` (saved before) in one atomic rename."""
        write_atomically(self.root / ACTIVE, json.dumps({"version": version, "catalog_dir": str(self.catalog_dir)}).encode())


def write_atomically(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` through a temporary file and a rename (a reader sees the old file or the new)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".", suffix=".tmp")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, target)
