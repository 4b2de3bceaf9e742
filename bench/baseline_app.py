"""Baseline: the original FastAPI tutorial ("SQL (Relational) Databases"), kept faithful.

Sync `def` routes run in Starlette's thread pool; each request gets its own sync SQLAlchemy
session from a `yield` dependency (`SessionLocal()` ... `db.close()`); SQLite file with
`check_same_thread=False`; default pool, default journal mode, no busy handling of its own.
Do not "fix" anything here: the point is to measure what the tutorial's design does.

The database file is $BASELINE_DB (default ./baseline.db).

    uvicorn baseline_app:app --app-dir bench
"""

from __future__ import annotations

import os

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Column, Integer, String, create_engine
from sqlalchemy.orm import Session, declarative_base, sessionmaker

# --- database.py -------------------------------------------------------------------------
SQLALCHEMY_DATABASE_URL = "sqlite:///" + os.environ.get("BASELINE_DB", "./baseline.db")

engine = create_engine(SQLALCHEMY_DATABASE_URL, connect_args={"check_same_thread": False})
SessionLocal = sessionmaker(autocommit=False, autoflush=False, bind=engine)

Base = declarative_base()


# --- models.py ---------------------------------------------------------------------------
class ItemModel(Base):
    __tablename__ = "items"

    id = Column(Integer, primary_key=True, index=True)
    name = Column(String, index=True)
    description = Column(String, nullable=True)


Base.metadata.create_all(bind=engine)


# --- schemas.py --------------------------------------------------------------------------
class ItemBase(BaseModel):
    name: str
    description: str | None = None


class ItemCreate(ItemBase):
    pass


class ItemUpdate(BaseModel):
    name: str | None = None
    description: str | None = None


class Item(ItemBase):
    id: int

    model_config = ConfigDict(from_attributes=True)  # the tutorial's `orm_mode = True`


# --- main.py -----------------------------------------------------------------------------
app = FastAPI()


def get_db():
    db = SessionLocal()
    try:
        yield db
    finally:
        db.close()


@app.get("/items/{item_id}", response_model=Item)
def read_item(item_id: int, db: Session = Depends(get_db)):
    db_item = db.query(ItemModel).filter(ItemModel.id == item_id).first()
    if db_item is None:
        raise HTTPException(status_code=404, detail="Item not found")
    return Item(**db_item.__dict__)


@app.post("/items", response_model=Item)
def create_item(item: ItemCreate, db: Session = Depends(get_db)):
    db_item = ItemModel(**item.model_dump())
    db.add(db_item)
    db.commit()
    db.refresh(db_item)
    return db_item


@app.patch("/items/{item_id}", response_model=Item)
def update_item(item_id: int, item: ItemUpdate, db: Session = Depends(get_db)):
    db_item = db.query(ItemModel).filter(ItemModel.id == item_id).first()
    if db_item is None:
        raise HTTPException(status_code=404, detail="Item not found")
    for key, value in item.model_dump(exclude_unset=True).items():
        setattr(db_item, key, value)
    db.commit()
    db.refresh(db_item)
    return db_item
