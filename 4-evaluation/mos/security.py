"""Security helpers for the MOS rating app: CSRF tokens, the signing secret, admin checks, log redaction.

CSRF tokens are stateless: ``<nonce>.<timestamp>.<signature>`` from the platform's one signer
(itsdangerous, purpose ``mos-csrf``), where the signature covers the rater id, the form's name, the
nonce and the issue time. A token minted for one rater's consent form is
therefore useless for another rater or another form, and verifying it needs no storage. Tokens are
not single-use on purpose: a double-POST of the same rating form must reach the service, which
answers it idempotently via the form's ``submission_id``.

The signing secret comes from ``MUSICOPS_MOS_SECRET`` or, when that is unset, from a random secret
persisted (mode 0600) in the state directory, so restarts and several worker processes agree on it.
"""

from __future__ import annotations

import base64
import hmac
import logging
import re
import secrets
from pathlib import Path

from musicops.config import Settings, get_settings

SECRET_FILE = "mos-secret"
# A rating page left open over lunch must still submit; a leaked token must not live forever.
DEFAULT_CSRF_MAX_AGE_S = 24 * 3600
_MIN_SECRET_BYTES = 16

log = logging.getLogger(__name__)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def load_secret(home: Path | None = None, settings: Settings | None = None) -> bytes:
    """The HMAC key: ``MUSICOPS_MOS_SECRET`` if set, else ``<home>/mos-secret`` (created 0600 when missing).

    Without ``home`` (and without the variable) the secret is random per process: forms rendered by
    one process do not verify in another.
    """
    from musicops.signing import load_secret as load

    configured = (settings or get_settings()).mos_secret
    return load(None if home is None else Path(home) / SECRET_FILE,
                configured.get_secret_value() if configured else None, name="MUSICOPS_MOS_SECRET")


class CsrfSigner:
    """Mint and check CSRF tokens bound to (rater id, form name), with the platform's one signer
    (`musicops.signing.PurposeSigner`, purpose `mos-csrf`). A token is `<nonce>.<timestamp>.<signature>`;
    the rater id and form are signed with it but not carried, so a token verifies only for them."""

    def __init__(self, secret: bytes, max_age_s: float = DEFAULT_CSRF_MAX_AGE_S) -> None:
        from musicops.signing import PurposeSigner

        if len(secret) < _MIN_SECRET_BYTES:
            raise ValueError("CSRF secret too short")
        self._signer = PurposeSigner(secret, "mos-csrf")
        self.max_age_s = max_age_s

    @staticmethod
    def _bound(rater_id: str, form: str) -> str:
        return f"{rater_id}\x00{form}\x00"

    def issue(self, rater_id: str, form: str) -> str:
        bound = self._bound(str(rater_id), form)
        return self._signer.sign_timed(bound + _b64(secrets.token_bytes(12)))[len(bound):]

    def verify(self, token: str | None, rater_id: str, form: str) -> bool:
        """True only for an untampered, unexpired token minted for this rater and form (constant-time)."""
        if not token or not isinstance(token, str) or len(token) > 200 or token.count(".") != 2:
            return False
        return self._signer.unsign_timed(self._bound(str(rater_id), form) + token, int(self.max_age_s)) is not None


def admin_token(settings: Settings | None = None) -> str | None:
    """The results-page admin token (``MUSICOPS_MOS_ADMIN_TOKEN``), or None when unset."""
    configured = (settings or get_settings()).mos_admin_token
    return configured.get_secret_value() if configured else None


def check_admin(supplied: str | None, client_host: str | None, expected: str | None) -> bool:
    """Admin access: with a token configured, the supplied one must match (constant-time); without one,
    only loopback clients are allowed."""
    if expected:
        return supplied is not None and hmac.compare_digest(supplied.encode(), expected.encode())
    return client_host in {"127.0.0.1", "::1", "localhost"}


_TOKEN_IN_PATH = re.compile(r"(/r/)[^/?#\s\"]+")
_ADMIN_IN_QUERY = re.compile(r"((?:^|[?&])admin=)[^&#\s\"]*")


def redact(text: str) -> str:
    """Replace invite tokens (``/r/<token>/...``) and ``admin=`` query values in a URL or log line."""
    return _ADMIN_IN_QUERY.sub(r"\1<redacted>", _TOKEN_IN_PATH.sub(r"\1<token>", text))


class RedactTokensFilter(logging.Filter):
    """Logging filter that scrubs tokens from records (uvicorn's access log puts the path in ``args``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def install_log_redaction(logger_names: tuple[str, ...] = ("uvicorn.access", "uvicorn.error")) -> None:
    """Attach one RedactTokensFilter to each named logger (idempotent)."""
    for name in logger_names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokensFilter) for f in logger.filters):
            logger.addFilter(RedactTokensFilter())
