"""Expiring signed asset URLs: `/v1/assets/{id}?fmt=wav&exp=<unix s>&sig=<base64url>`, and webhook bodies.

The secret comes from `MUSICOPS_SERVE_SECRET` or, failing that, from `<state>/serve/secret`
(generated on first start with mode 0600). Anyone holding a signed URL can fetch that one file
until it expires; nothing else is granted. Signatures come from the platform's one signer
(`musicops.signing.PurposeSigner`, purposes `asset-url` and `webhook`) and are compared in constant
time. URLs signed before the move to that signer no longer verify (they expire within the TTL anyway).

The HMAC covers the tenant the asset belongs to (read from its provenance record when verifying), so
a signature is bound to (tenant, asset, format, expiry): URLs are only minted for a key that may see
the asset, and one minted for tenant A's asset is no use for any other asset or tenant. Signatures
from before tenancy (`musicops-asset-v1`) no longer verify; `GET /v1/audit/{id}` mints fresh ones.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from musicops.config import Settings
from musicops.signing import PurposeSigner, load_secret

log = logging.getLogger(__name__)
SECRET_FILE = "secret"


def serve_secret(serve_dir: Path, settings: Settings) -> bytes:
    """The signing secret: `MUSICOPS_SERVE_SECRET` first, else the state dir's 0600 file (created if missing)."""
    configured = settings.serve_secret.get_secret_value() if settings.serve_secret else None
    return load_secret(Path(serve_dir) / SECRET_FILE, configured, name="MUSICOPS_SERVE_SECRET")


class UrlSigner:
    def __init__(self, secret: bytes, ttl_s: int = 3600) -> None:
        if not secret:
            raise ValueError("empty signing secret")
        self._urls = PurposeSigner(secret, "asset-url")
        self._webhooks = PurposeSigner(secret, "webhook")
        self.ttl_s = ttl_s

    def signature(self, asset_id: str, fmt: str, exp: int, tenant: str | None = None) -> str:
        """HMAC over (tenant, asset, format, expiry); tenant None = a batch/CLI asset (no tenant)."""
        return self._urls.signature(self._message(asset_id, fmt, exp, tenant))

    @staticmethod
    def _message(asset_id: str, fmt: str, exp: int, tenant: str | None) -> str:
        return f"{tenant or ''}\n{asset_id}\n{fmt}\n{int(exp)}"

    def sign(self, asset_id: str, fmt: str, now: float | None = None, tenant: str | None = None) -> tuple[str, int]:
        """(query string, expiry) for one file of an asset of `tenant`."""
        exp = int((now if now is not None else time.time()) + self.ttl_s)
        return f"fmt={fmt}&exp={exp}&sig={self.signature(asset_id, fmt, exp, tenant)}", exp

    @staticmethod
    def precheck(exp: int | None, sig: str | None, now: float | None = None) -> str | None:
        """What can be refused before the asset's record is read: no signature, or past its expiry."""
        if exp is None or not sig:
            return "missing signature: use the signed audio URL returned by the API"
        if (now if now is not None else time.time()) > exp:
            return "signed URL expired: request a fresh one (GET /v1/audit/{asset_id})"
        return None

    def verify(self, asset_id: str, fmt: str, exp: int | None, sig: str | None,
               now: float | None = None, tenant: str | None = None) -> str | None:
        """None when valid, else why not (never says which part of a signature was wrong)."""
        problem = self.precheck(exp, sig, now)
        if problem is not None or exp is None or sig is None:
            return problem
        if not self._urls.verify(self._message(asset_id, fmt, exp, tenant), sig):
            return "invalid signature"
        return None

    def webhook_signature(self, body: bytes) -> str:
        """`sha256=<hex HMAC-SHA256 of the body>` under the webhook purpose's key (docs/serving.md)."""
        return "sha256=" + self._webhooks.hex_digest(body)
