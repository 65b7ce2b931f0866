"""The one signer: a salt per purpose, constant-time checks, the documented webhook wire format."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from musicops.signing import PURPOSES, PurposeSigner

SECRET = b"k" * 32


def test_a_signature_verifies_only_for_its_purpose_and_message() -> None:
    urls, csrf = PurposeSigner(SECRET, "asset-url"), PurposeSigner(SECRET, "mos-csrf")
    sig = urls.signature("t\na_1\nwav\n100")
    assert urls.verify("t\na_1\nwav\n100", sig)
    assert not csrf.verify("t\na_1\nwav\n100", sig)  # same secret, other purpose
    assert not urls.verify("t\na_1\nwav\n101", sig)
    assert not PurposeSigner(b"j" * 32, "asset-url").verify("t\na_1\nwav\n100", sig)
    assert not urls.verify("t\na_1\nwav\n100", "é")  # non-ASCII garbage is a plain refusal
    with pytest.raises(ValueError, match="unknown signing purpose"):
        PurposeSigner(SECRET, "nope")


def test_signatures_are_pinned() -> None:
    """A change here silently invalidates every signed URL and every receiver's webhook check."""
    assert PurposeSigner(SECRET, "asset-url").signature("t\na_1\nwav\n100") == \
        "6bd_PfIxqQm3T3olcIqNmGfGlLDZrn5j6o1Fd7uI2SE"
    assert PurposeSigner(SECRET, "webhook").hex_digest(b"{}") == \
        "f39f7d0164110c29e74c92edac84ff00e899cf94c6338b944b75e3217a864b7e"


def test_webhook_receivers_can_verify_with_plain_hmac_as_documented() -> None:
    """docs/serving.md: key = SHA256("musicops.webhook.v2" + "signer" + secret); HMAC-SHA256 of the body."""
    key = hashlib.sha256(PURPOSES["webhook"].encode() + b"signer" + SECRET).digest()
    assert PurposeSigner(SECRET, "webhook").receiver_key() == key
    body = b'{"job_id": "j_1", "state": "succeeded"}'
    assert PurposeSigner(SECRET, "webhook").hex_digest(body) == hmac.new(key, body, hashlib.sha256).hexdigest()


def test_timed_values_expire_and_cannot_be_moved(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    signer = PurposeSigner(SECRET, "mos-csrf")
    token = signer.sign_timed("rater-1\x00rate\x00nonce")
    assert signer.unsign_timed(token, 60) == "rater-1\x00rate\x00nonce"
    assert signer.unsign_timed(token.replace("rater-1", "rater-2"), 60) is None
    later = time.time() + 120
    monkeypatch.setattr(time, "time", lambda: later)
    assert signer.unsign_timed(token, 60) is None
