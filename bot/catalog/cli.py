"""``optobot catalog import SOURCE [--mapping FILE] [--dry-run] [--force]``: a feed or price list as the new catalogue."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bot.catalog.importer import APPLIED, DRY_RUN
from bot.catalog.imports import Imports
from bot.catalog.model import CatalogError
from bot.catalog.store import Store
from bot.config import ConfigError, Settings
from bot.db.session import database


async def import_command(settings: Settings, args: argparse.Namespace) -> int:
    """Import SOURCE (a file, or an http(s) URL), recorded in the catalogue's import history; print the report; exit code 1
    when it was not applied."""
    async with database(settings.database_url, upgrade=True) as db:
        imports = Imports(settings, db, Store(settings.catalog_dir, settings.data_dir), notify=_nobody)
        try:
            report = await imports.command(args.source, args.mapping, dry_run=args.dry_run, force=args.force)
        except CatalogError as error:
            raise ConfigError(f"optobot: catalog import: {error}") from None
    print(report.text(settings.default_language))
    return 0 if report.status in (APPLIED, DRY_RUN) else 1


async def _nobody(_: str) -> None:
    """The command prints its report; no admin is told (only a scheduled refresh tells them)."""


def register(commands: Any) -> None:
    catalog = commands.add_parser("catalog", help="the supplier's catalogue").add_subparsers(dest="catalog_command", required=True)
    importing = catalog.add_parser("import", help="import a YML feed, an XLSX or CSV price list (a file or an http(s) URL)")
    importing.add_argument("source", help="the file or URL")
    importing.add_argument("--mapping", type=Path, help="which column or <param> holds what (default: CATALOG_DIR/import.yaml)")
    importing.add_argument("--dry-run", action="store_true", help="only check and report (recorded in the import history); the catalogue stays as it is")
    importing.add_argument("--force", action="store_true", help="apply even if most products would vanish")
    importing.set_defaults(func=import_command)
