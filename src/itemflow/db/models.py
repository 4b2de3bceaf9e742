"""Every ORM model, imported in one place for Alembic's autogenerate and metadata."""

from itemflow.auth.models import ApiKey, User
from itemflow.automations.models import Automation
from itemflow.db.base import Base
from itemflow.items.models import Item
from itemflow.runs.models import Run

__all__ = ["ApiKey", "Automation", "Base", "Item", "Run", "User"]
