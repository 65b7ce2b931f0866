"""The asset store on S3-compatible object storage (AWS S3, MinIO, Ceph, GCS's XML interop API).

Same names as the local store (prefix/ab/cd/<sha256>.<fmt>), same guarantees by other means:
- atomic: an S3 PUT makes the object visible whole or not at all, so a killed writer leaves nothing
  to sweep (single PUTs only, never multipart: assets are clips of a few MB);
- content-addressed and idempotent: a key already holding an object of the right size is not
  written again; each PUT carries the SHA-256 checksum (x-amz-checksum-sha256), so AWS S3 and MinIO
  refuse a body that was damaged on the way (moto, the test server, does not check it);
- checked reads: `read` hashes what came back and raises AssetCorruptError on a mismatch.
Delivery goes straight from the bucket through presigned GET URLs (`presigned_url`).

boto3 is imported when a store is opened, never at import time (`musicops --help` stays fast).
Errors become one line naming the problem: missing bucket, rejected credentials, unreachable
endpoint (`S3StoreError`); secrets never appear in them.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
import uuid
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote, urlparse

from musicops.errors import MusicopsError
from musicops.store.assets import MEDIA_TYPES, AssetBackend, StoredFile, asset_name, check_content

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX_PART = re.compile(r"^[A-Za-z0-9._=-]+$")
PROBE_OK_S = 5.0
_MISSING = {"404", "NoSuchKey", "NotFound"}
_NO_BUCKET = {"NoSuchBucket"}
_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
           "403", "AuthorizationHeaderMalformed"}


class S3StoreError(MusicopsError, OSError):
    """The object store cannot be used (no bucket, credentials refused, endpoint unreachable)."""


def parse_s3_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of "s3://bucket/prefix"; the prefix may be empty, its parts are plain names."""
    parsed = urlparse(url)
    bucket = parsed.netloc
    if parsed.scheme.lower() != "s3" or not _BUCKET.fullmatch(bucket or ""):
        raise ValueError(f"asset store {url!r}: expected s3://BUCKET/PREFIX with a valid bucket name "
                         "(3-63 lowercase letters, digits, dots, hyphens)")
    if parsed.query or parsed.fragment or parsed.params:
        raise ValueError(f"asset store {url!r}: no query or fragment allowed in an s3:// URL")
    parts = [p for p in parsed.path.split("/") if p]
    for part in parts:
        if part in (".", "..") or not _PREFIX_PART.fullmatch(part):
            raise ValueError(f"asset store {url!r}: prefix part {part!r} is not a plain name "
                             "(letters, digits, '.', '_', '-', '=')")
    return bucket, "/".join(parts)


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    error = response.get("Error", {}) if isinstance(response, dict) else {}
    return str(error.get("Code") or response.get("ResponseMetadata", {}).get("HTTPStatusCode") or "")


class S3AssetStore(AssetBackend):
    """Assets as objects s3://bucket/prefix/ab/cd/<sha256>.<fmt>."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 region: str | None = None, access_key_id: str | None = None,
                 secret_access_key: str | None = None, session_token: str | None = None,
                 addressing_style: str = "auto", checksum: bool = True) -> None:
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.endpoint_url = endpoint_url
        self._credentials = {"aws_access_key_id": access_key_id, "aws_secret_access_key": secret_access_key,
                             "aws_session_token": session_token}
        self._region = region
        # A custom endpoint (MinIO, a test server on an IP) rarely resolves bucket subdomains.
        self._addressing = addressing_style if addressing_style != "auto" or not endpoint_url else "path"
        self._checksum = checksum
        self._client: Any = None
        self._probe_ok_until = 0.0

    @classmethod
    def from_settings(cls, url: str, settings: Any) -> S3AssetStore:
        bucket, prefix = parse_s3_url(url)

        def secret(name: str) -> str | None:
            value = getattr(settings, name, None)
            return value.get_secret_value() if value is not None else None

        return cls(bucket, prefix, endpoint_url=getattr(settings, "s3_endpoint_url", None),
                   region=getattr(settings, "s3_region", None), access_key_id=secret("s3_access_key_id"),
                   secret_access_key=secret("s3_secret_access_key"), session_token=secret("s3_session_token"),
                   addressing_style=getattr(settings, "s3_addressing_style", "auto"),
                   checksum=getattr(settings, "s3_checksum", True))

    def __repr__(self) -> str:  # never the credentials
        return f"S3AssetStore({self.url!r}, endpoint={self.endpoint_url!r})"

    def __getstate__(self) -> dict[str, Any]:
        """Picklable for worker processes: each opens its own client."""
        return {**self.__dict__, "_client": None}

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    @property
    def client(self) -> Any:
        """The boto3 S3 client (thread-safe once made), made on first use."""
        if self._client is None:
            import boto3  # type: ignore[import-untyped]
            from botocore.config import Config  # type: ignore[import-untyped]

            session = boto3.session.Session(region_name=self._region or None,
                                            **{k: v for k, v in self._credentials.items() if v})
            # Without checksums botocore's own default CRC32 headers go too (only sent when required).
            when = {} if self._checksum else {"request_checksum_calculation": "when_required",
                                              "response_checksum_validation": "when_required"}
            config = Config(s3={"addressing_style": self._addressing}, connect_timeout=5, read_timeout=60,
                            retries={"max_attempts": 3, "mode": "standard"}, signature_version="s3v4", **when)
            self._client = session.client("s3", endpoint_url=self.endpoint_url or None, config=config)
        return self._client

    def key_for(self, sha256: str, fmt: str) -> str:
        """The object key, validating hash and format like the local store's paths."""
        name = asset_name(sha256, fmt)
        return f"{self.prefix}/{name}" if self.prefix else name

    def describe(self, sha256: str, fmt: str) -> str:
        return f"s3://{self.bucket}/{self.key_for(sha256, fmt)}"

    def problem(self, exc: Exception, action: str) -> S3StoreError:
        """One line for an S3 failure: what went wrong, where, and what to check (no secrets)."""
        from botocore.exceptions import (  # type: ignore[import-untyped]
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        where = f"{self.url} (endpoint {self.endpoint_url or 'AWS default'})"
        code = _code(exc) if isinstance(exc, ClientError) else ""
        if code in _NO_BUCKET:
            text = f"bucket {self.bucket!r} does not exist at {self.endpoint_url or 'AWS'}; create it or fix MUSICOPS_ASSET_STORE"
        elif code in _DENIED:
            text = (f"credentials were refused ({code}) for {where}; check AWS_ACCESS_KEY_ID / "
                    "AWS_SECRET_ACCESS_KEY and the bucket policy")
        elif isinstance(exc, NoCredentialsError | PartialCredentialsError):
            text = f"no S3 credentials for {where}; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or an AWS profile)"
        elif isinstance(exc, EndpointConnectionError):
            text = f"cannot reach the S3 endpoint for {where}; check MUSICOPS_S3_ENDPOINT_URL"
        elif isinstance(exc, ClientError):
            text = f"S3 refused to {action} in {where}: {code or 'error'}"
        else:
            text = f"S3 failed to {action} in {where}: {type(exc).__name__}"
        return S3StoreError(f"asset store: {text}")

    def _call(self, action: str, method: str, **params: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, method)(Bucket=self.bucket, **params)
        except ClientError as exc:
            if _code(exc) in _MISSING and "Key" in params:
                raise FileNotFoundError(2, "asset missing from the store",
                                        f"s3://{self.bucket}/{params['Key']}") from None
            raise self.problem(exc, action) from None
        except BotoCoreError as exc:
            raise self.problem(exc, action) from None

    def _size(self, key: str) -> int | None:
        try:
            return int(self._call("look up an asset", "head_object", Key=key)["ContentLength"])
        except FileNotFoundError:
            return None

    def put(self, data: bytes, fmt: str) -> StoredFile:
        """Store bytes in one PUT (atomic), unless an object of the same size already has this name."""
        data = bytes(data)
        digest = hashlib.sha256(data)
        sha = digest.hexdigest()
        key = self.key_for(sha, fmt)
        stored = StoredFile(sha, PurePosixPath(key), len(data), fmt)
        if self._size(key) == len(data):
            return stored
        checksum = {"ChecksumSHA256": base64.b64encode(digest.digest()).decode("ascii")} if self._checksum else {}
        self._call("store an asset", "put_object", Key=key, Body=data, ContentType=MEDIA_TYPES[fmt], **checksum)
        return stored

    def exists(self, sha256: str, fmt: str) -> bool:
        return self._size(self.key_for(sha256, fmt)) is not None

    def read(self, sha256: str, fmt: str) -> bytes:
        key = self.key_for(sha256, fmt)
        body = self._call("read an asset", "get_object", Key=key)["Body"]
        try:
            data = body.read()
        finally:
            body.close()
        return check_content(data, sha256, f"s3://{self.bucket}/{key}")

    def presigned_url(self, sha256: str, fmt: str, ttl_s: int, filename: str | None = None) -> str | None:
        """A presigned GET (SigV4, local computation: no request) valid for `ttl_s` seconds."""
        params = {"Bucket": self.bucket, "Key": self.key_for(sha256, fmt), "ResponseContentType": MEDIA_TYPES[fmt]}
        if filename:
            params["ResponseContentDisposition"] = f"inline; filename=\"{quote(filename)}\""
        return str(self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=int(ttl_s)))

    def write_problem(self) -> str | None:
        """Why an object cannot be written now (None when it can): a probe object is put and deleted.
        A success is trusted for PROBE_OK_S (readiness probes every few seconds would otherwise cost
        two requests each); a failure is never cached."""
        if time.monotonic() < self._probe_ok_until:
            return None
        key = f"{self.prefix}/.probe-{uuid.uuid4().hex}" if self.prefix else f".probe-{uuid.uuid4().hex}"
        try:
            self._call("write a probe object", "put_object", Key=key, Body=b"probe")
            self._call("delete a probe object", "delete_object", Key=key)
        except (S3StoreError, FileNotFoundError) as exc:
            return str(exc)
        self._probe_ok_until = time.monotonic() + PROBE_OK_S
        return None

    def sweep_partials(self, min_age_s: float = 60.0) -> int:
        """Nothing to sweep: single PUTs leave no partial objects behind."""
        return 0
