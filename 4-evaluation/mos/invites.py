"""Invitation tokens and links: how a rater's token is stored and the URL the rater opens.

Why a module of its own: the service stores and looks up tokens, while the CLI and the campaign
runner print links; both sides need the same rules without depending on each other. One random
token per rater (`secrets.token_urlsafe(32)`) is returned once; only its sha256 is stored, so a
leaked database does not leak working links.
"""

from __future__ import annotations

import hashlib

from musicops.config import Settings, get_settings


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def invite_url(token: str, base: str | None = None, settings: Settings | None = None) -> str:
    """The link a rater opens: `{MUSICOPS_MOS_URL}/r/{token}` (default http://127.0.0.1:8765)."""
    base = (base or (settings or get_settings()).mos_url).rstrip("/")
    return f"{base}/r/{token}"
