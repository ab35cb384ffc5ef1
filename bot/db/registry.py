"""Imports every model module so that ``Base.metadata`` knows all tables (Alembic, tests)."""
from bot.analytics import models as analytics_models  # noqa: F401
from bot.catalog import models as catalog_models  # noqa: F401
from bot.crm import models as crm_models  # noqa: F401
from bot.db import models  # noqa: F401
from bot.db.base import Base
from bot.followups import models as followup_models  # noqa: F401
from bot.relay import models as relay_models  # noqa: F401
from broadcasts import models as broadcast_models  # noqa: F401

metadata = Base.metadata
