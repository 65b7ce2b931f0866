"""Secrets and signatures: the state directory's signing secrets and one itsdangerous signer.

Every signature the platform makes (signed asset URLs, MOS form CSRF tokens, webhook bodies) is an
HMAC-SHA256 through `itsdangerous`, with a salt per purpose: the key for one purpose is derived
from the secret and that purpose's salt, so a signature made for one purpose never verifies for
another, even under the same secret. Comparisons are constant-time (itsdangerous' `verify_signature`).

Secrets: a configured value (from `Settings`, e.g. `MUSICOPS_SERVE_SECRET`) wins; else a file in the
state directory, created 0600 with a random secret on first use; else, with no state directory,
a random secret for this process only.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import stat
from pathlib import Path

from itsdangerous import BadSignature, Signer, TimestampSigner
from itsdangerous.signer import HMACAlgorithm

from musicops.store.files import create_temp

log = logging.getLogger(__name__)
MIN_SECRET_BYTES = 32
# One salt per purpose; bump a purpose's version to invalidate everything it signed before.
PURPOSES = {"asset-url": "musicops.asset-url.v3", "mos-csrf": "musicops.mos-csrf.v2",
            "webhook": "musicops.webhook.v2"}


def load_secret(path: str | os.PathLike[str] | None, configured: str | None = None, *, name: str = "secret",
                min_bytes: int = MIN_SECRET_BYTES) -> bytes:
    """A signing secret: `configured` (a Settings value; `name` is its variable, for errors) if set,
    else the file at `path` (created 0600 with a random secret when missing), else (no path) a
    random one for this process only.

    One rule for every signer: a secret shorter than `min_bytes` is refused rather than used, and a
    secret file readable by others is restricted to 0600 with a warning. The file is written
    complete under a temp name and hard-linked into place, so processes starting at once agree on
    one secret and nobody reads a half-written one.
    """
    if configured:
        if len(configured.encode()) < min_bytes:
            raise ValueError(f"{name} is too short: use at least {min_bytes} random bytes")
        return configured.encode()
    if path is None:
        return secrets.token_bytes(max(min_bytes, 32))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return _read_secret(path, min_bytes)
    except FileNotFoundError:
        pass
    tmp = create_temp(path.parent, f".tmp-{path.name}-", "", 0o600)
    try:
        with open(tmp, "wb") as handle:
            handle.write(secrets.token_urlsafe(48).encode())
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # another process won: use its secret
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return _read_secret(path, min_bytes)


def _read_secret(path: Path, min_bytes: int) -> bytes:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("secret file %s was readable by others (mode %o); restricting it to 0600", path, mode)
        os.chmod(path, 0o600)
    data = path.read_bytes().strip()
    if len(data) < min_bytes:
        raise ValueError(f"secret file {path} is empty or shorter than {min_bytes} bytes; delete it to regenerate")
    return data


class PurposeSigner:
    """HMAC-SHA256 signatures for one purpose (a key in `PURPOSES`), over itsdangerous."""

    def __init__(self, secret: bytes, purpose: str) -> None:
        if purpose not in PURPOSES:
            raise ValueError(f"unknown signing purpose {purpose!r}; known: {sorted(PURPOSES)}")
        if not secret:
            raise ValueError("empty signing secret")
        self.purpose = purpose
        self._signer = Signer(secret, salt=PURPOSES[purpose], digest_method=hashlib.sha256)
        self._timed = TimestampSigner(secret, salt=PURPOSES[purpose], digest_method=hashlib.sha256)

    def signature(self, message: str | bytes) -> str:
        """A base64url signature of `message` (for URLs: sign the fields, send them beside it)."""
        return self._signer.get_signature(message).decode("ascii")

    def verify(self, message: str | bytes, signature: str) -> bool:
        """True when `signature` was made for `message` under this purpose (constant-time)."""
        try:
            return self._signer.verify_signature(message, signature.encode("ascii"))
        except (UnicodeEncodeError, BadSignature):
            return False

    def hex_digest(self, message: bytes) -> str:
        """The signature as lowercase hex: the `X-Musicops-Signature: sha256=<hex>` webhook wire format,
        which receivers check with any HMAC-SHA256 library using the derived key (`receiver_key`)."""
        return HMACAlgorithm(hashlib.sha256).get_signature(self.receiver_key(), message).hex()

    def receiver_key(self) -> bytes:
        """The purpose's derived key (what a webhook receiver is given to verify bodies)."""
        return self._signer.derive_key()

    def sign_timed(self, value: str) -> str:
        """`value` with a timestamp and signature appended (itsdangerous' `value.ts.sig` format)."""
        return self._timed.sign(value).decode("ascii")

    def unsign_timed(self, signed: str, max_age_s: int) -> str | None:
        """The value when the signature holds and it is at most `max_age_s` seconds old, else None."""
        try:
            return self._timed.unsign(signed, max_age=max_age_s).decode("utf-8")
        except (UnicodeEncodeError, BadSignature):  # SignatureExpired is a BadSignature
            return None
