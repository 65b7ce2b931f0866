"""Fixtures for the store tests: one real S3-API server (moto) for the whole session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.s3server import S3Server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(Path(tmp_path_factory.mktemp("moto"))).start()
    try:
        yield server
    finally:
        server.stop()
