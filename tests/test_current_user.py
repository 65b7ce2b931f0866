"""One rule for who is acting (batch runs and alias moves record it)."""

from __future__ import annotations

import getpass

from musicops.config import current_user


def test_musicops_user_wins_then_the_login_then_unknown(monkeypatch) -> None:
    monkeypatch.setenv("MUSICOPS_USER", "ci-bot")
    assert current_user() == "ci-bot"
    monkeypatch.delenv("MUSICOPS_USER")
    monkeypatch.setattr(getpass, "getuser", lambda: "alice")
    assert current_user() == "alice"

    def no_passwd_entry() -> str:
        raise KeyError("uid 1234 not found")

    monkeypatch.setattr(getpass, "getuser", no_passwd_entry)
    assert current_user() == "unknown"
