"""Imports every model module so that ``Base.metadata`` knows all tables (Alembic, tests)."""
from bot.crm import models as crm_models  # noqa: F401
from bot.db import models  # noqa: F401
from bot.db.base import Base

metadata = Base.metadata
