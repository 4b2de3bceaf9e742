"""Schema-driven fuzzing of the whole API over real HTTP: no 5xx, every response as declared."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from itemflow.api.app import create_app
from itemflow.db import migrate
from itemflow.settings import Settings
from tests.conftest import clone_pg_database, drop_pg_database
from tests.credentials import bearer, make_key
from tests.servers import serve_in_thread

_headers: dict[str, str] = {}  # an admin credential for the server of the current module run


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def base_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("fuzz")
    database_url = None
    if request.param == "postgres":
        database_url = clone_pg_database(request.getfixturevalue("pg_template"), "fuzz")
    settings = Settings(_env_file=None, data_dir=data, database_url=database_url,  # type: ignore[call-arg]
                        secret_key="fuzz-secret", bootstrap_admin=False,
                        rate_limit_reads="1000000/minute", rate_limit_writes="1000000/minute",
                        rate_limit_automation_writes="1000000/minute", rate_limit_runs="1000000/minute",
                        rate_limit_token="1000000/minute")
    migrate.upgrade(settings.resolved_database_url)
    _headers.update(bearer(make_key(settings, ["admin"], name="fuzz").key))
    try:
        with serve_in_thread(create_app(settings)) as url:
            yield url
    finally:
        if database_url:
            drop_pg_database(database_url)


# The schema is the app's own, taken at collection time; the calls go to a live server.
schema = schemathesis.openapi.from_dict(create_app().openapi())


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case, base_url):
    # "Schema-valid request rejected" is left out: the API rightly answers 422 to requests a
    # JSON schema cannot rule out (an item_id naming no item, code that does not compile, an
    # invented cursor); those cases have their own tests. Every other check runs.
    case.call_and_validate(base_url=base_url, headers=_headers, excluded_checks=[positive_data_acceptance])
