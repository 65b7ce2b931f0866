"""A real S3-API server on 127.0.0.1 for the object-store tests: moto's standalone server.

`moto_server` (moto[server] from PyPI; no MinIO package is reachable here) runs as its own process
on a free port through `helpers.servers.ServerProcess`; `S3Server` creates buckets with boto3 and
hands tests the endpoint, the dummy credentials moto accepts, and the environment / settings values
that point musicops (and MLflow) at it.
"""

from __future__ import annotations

import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers.servers import PORT, ServerProcess

ACCESS_KEY, SECRET_KEY, REGION = "test", "test", "us-east-1"


@dataclass
class S3Server:
    root: Path
    process: ServerProcess | None = None
    buckets: list[str] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        assert self.process is not None, "start() first"
        return self.process.url

    def start(self, free_actions: int | None = None) -> S3Server:
        """Start the server; with `free_actions`, moto checks credentials after that many requests
        (INITIAL_NO_AUTH_ACTION_COUNT): the dummy keys are then refused like wrong ones."""
        exe = Path(sys.executable).with_name("moto_server")
        env = {} if free_actions is None else {"INITIAL_NO_AUTH_ACTION_COUNT": str(free_actions)}
        self.process = ServerProcess([str(exe), "-H", "127.0.0.1", "-p", PORT], self.root, env=env,
                                     ready_path="/moto-api/", name="moto", grace=10.0).start(timeout=60)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, config=Config(s3={"addressing_style": "path"}))

    def new_bucket(self) -> str:
        """A fresh, empty bucket (one per test keeps tests independent on one server)."""
        name = f"musicops-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        self.buckets.append(name)
        return name

    def env(self, url: str) -> dict[str, str]:
        """Environment for a subprocess whose asset store is `url` on this server."""
        return {"MUSICOPS_ASSET_STORE": url, "MUSICOPS_S3_ENDPOINT_URL": self.endpoint,
                "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": REGION}

    def settings_values(self, url: str) -> dict[str, Any]:
        """`Settings.from_values` fields for an asset store `url` on this server."""
        return {"asset_store_url": url, "s3_endpoint_url": self.endpoint, "s3_region": REGION,
                "s3_access_key_id": ACCESS_KEY, "s3_secret_access_key": SECRET_KEY}

    def objects(self, bucket: str, prefix: str = "") -> dict[str, bytes]:
        """Every object under `prefix`: {key: bytes}."""
        client = self.client()
        found: dict[str, bytes] = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                found[item["Key"]] = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        return found
