"""``optobot catalog import SOURCE [--mapping FILE] [--dry-run] [--force]``: a feed or price list as the new catalogue."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import httpx

from bot.catalog.importer import APPLIED, DRY_RUN, fetch_source, read_mapping, run_import
from bot.catalog.model import CatalogError
from bot.catalog.store import Store
from bot.config import ConfigError, Settings


async def import_command(settings: Settings, args: argparse.Namespace) -> int:
    """Import SOURCE (a file, or an http(s) URL); print the report; exit code 1 when it was not applied."""
    store = Store(settings.catalog_dir, settings.data_dir)
    source: str = args.source
    try:
        mapping = read_mapping(settings.catalog_dir, args.mapping)
        async with httpx.AsyncClient() as client:
            if source.lower().startswith(("http://", "https://")):
                data, base = (await fetch_source(client, source)).data or b"", None
            else:
                path = Path(source)
                if not path.is_file():
                    raise CatalogError(f"{source}: no such file")
                data, base = path.read_bytes(), path.resolve().parent
            report = await run_import(store, source, data, mapping=mapping, base=base, client=client,
                                      dry_run=args.dry_run, force=args.force)
    except CatalogError as error:
        raise ConfigError(f"optobot: catalog import: {error}") from None
    print(report.text(settings.default_language))
    return 0 if report.status in (APPLIED, DRY_RUN) else 1


def register(commands: Any) -> None:
    catalog = commands.add_parser("catalog", help="the supplier's catalogue").add_subparsers(dest="catalog_command", required=True)
    importing = catalog.add_parser("import", help="import a YML feed, an XLSX or CSV price list (a file or an http(s) URL)")
    importing.add_argument("source", help="the file or URL")
    importing.add_argument("--mapping", type=Path, help="which column or <param> holds what (default: CATALOG_DIR/import.yaml)")
    importing.add_argument("--dry-run", action="store_true", help="only check and report; change nothing")
    importing.add_argument("--force", action="store_true", help="apply even if most products would vanish")
    importing.set_defaults(func=import_command)
