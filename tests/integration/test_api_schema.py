"""Property-based run of schemathesis against the API's OpenAPI schema: no 5xx, every status documented."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance
from test_api import seed

from serve.api import ApiConfig, create_app, ensure_token

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
def api_schema(engine: sa.Engine, db_url: str, tmp_path: Path) -> schemathesis.BaseSchema:
    seed(engine)
    config = ApiConfig(database_url=db_url, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                       data_dir=tmp_path / "data", token_file=tmp_path / "token")  # fmt: skip
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(config))
    schema.config.headers = {"Authorization": f"Bearer {ensure_token(config.token_file)}"}
    return schema


def test_api_conforms_to_its_schema(api_schema: schemathesis.BaseSchema) -> None:
    statuses: list[int] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 20
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=3, deadline=None, phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck), database=None)  # fmt: skip
        def check(case: schemathesis.Case) -> None:
            response = case.call_and_validate(checks=[not_a_server_error, status_code_conformance])
            statuses.append(response.status_code)

        check()
    assert 200 in statuses and 202 in statuses, statuses  # the token was sent: not everything is a 401
