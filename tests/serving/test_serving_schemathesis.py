"""Schemathesis against the served OpenAPI spec of a real server (the real tiny model, no mocks):
no 5xx, documented status codes, responses that match the spec. Bounded: 20 examples per
operation; the spec's own limits (this server: clips <= 2 s, <= 2 variations) keep generation cheap.

(Driven through hypothesis directly: schemathesis' lazy pytest fixture loader does not run on
pytest 9.)
"""

from __future__ import annotations

import time

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

pytestmark = pytest.mark.slow  # the musicops serve process

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


def test_api_has_no_server_errors(server, keys) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    headers = {"Authorization": f"Bearer {keys.main}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    before = server.log().count("musicops.serving.access")
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)
        def run(case) -> None:
            case.call_and_validate(headers=headers, timeout=60, checks=CHECKS)

        run()
    deadline = time.monotonic() + 60  # the access log flushes when it flushes on a busy machine
    while (calls := server.log().count("musicops.serving.access") - before) < 10 * len(operations):
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert calls >= 10 * len(operations), f"only {calls} requests reached the server"
