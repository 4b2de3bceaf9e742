"""Shared fixtures: the API on the embedded SQLite default and on the machine's PostgreSQL.

Every test gets its own database: a fresh SQLite file, or a PostgreSQL database cloned from
a migrated template (CREATE DATABASE ... TEMPLATE), so tests never see each other's rows.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from itemflow.api.app import create_app
from itemflow.db import migrate
from itemflow.settings import Settings
from tests.credentials import bearer, make_key

PG_ADMIN_URL = os.environ.get("ITEMFLOW_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
_counter = itertools.count()


def _pg_admin() -> psycopg.Connection:
    return psycopg.connect(PG_ADMIN_URL, autocommit=True)


def sqlalchemy_pg_url(dbname: str) -> str:
    base = psycopg.conninfo.conninfo_to_dict(PG_ADMIN_URL)
    user, host, port = base.get("user", "postgres"), base.get("host", "127.0.0.1"), base.get("port", 5432)
    return f"postgresql+psycopg://{user}@{host}:{port}/{dbname}"


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A database migrated once per test session, cloned for each test."""
    name = f"itemflow_tpl_{os.getpid()}"
    with _pg_admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    migrate.upgrade(sqlalchemy_pg_url(name))
    yield name
    with _pg_admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def clone_pg_database(template: str, label: str = "t") -> str:
    """A new database cloned from the migrated template; its SQLAlchemy URL."""
    name = f"itemflow_{label}_{os.getpid()}_{next(_counter)}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return sqlalchemy_pg_url(name)


def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with _pg_admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_database(pg_template: str) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for one test; its SQLAlchemy URL."""
    url = clone_pg_database(pg_template)
    yield url
    drop_pg_database(url)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "postgres":
        return request.getfixturevalue("pg_database")
    url = f"sqlite:///{tmp_path / 'data' / 'itemflow.db'}"
    migrate.upgrade(url)
    return url


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp_path / "data",
        database_url=database_url,
        secret_key="test-secret-key-not-for-production",
        bootstrap_admin=False,  # tests make their keys (tests/credentials.py); nothing printed
        # Suites other than tests/auth must not meet the rate limits (those tests set their own).
        rate_limit_reads="100000/minute",
        rate_limit_writes="100000/minute",
        rate_limit_automation_writes="100000/minute",
        rate_limit_runs="100000/minute",
    )


@pytest.fixture
def admin_key(settings: Settings) -> str:
    """An API key with the `admin` scope (implies all) in the test's database."""
    return make_key(settings, ["admin"], name="test admin").key


@pytest.fixture
def client(settings: Settings, admin_key: str) -> Iterator[TestClient]:
    """The API in-process, sending an admin credential on every request."""
    with TestClient(create_app(settings), headers=bearer(admin_key)) as c:
        yield c


@pytest.fixture
def anonymous_client(settings: Settings) -> Iterator[TestClient]:
    """The API in-process, sending no credentials."""
    with TestClient(create_app(settings)) as c:
        yield c
