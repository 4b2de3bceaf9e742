from itemflow.db.base import Base
from itemflow.db.database import Database

__all__ = ["Base", "Database"]
