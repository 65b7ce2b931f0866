"""Aliases as the release mechanism: `champion` is what serves, `previous` is one command away.

Only `promote` moves `champion`; a failed gate never calls it, and an override needs a reason that
is recorded on the version with the user's name.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from datetime import UTC, datetime

from musicops.config import Settings

CHAMPION, PREVIOUS = "champion", "previous"
NON_COMMERCIAL = ("cc-by-nc", "cc by-nc", "non-commercial", "noncommercial")


class PromotionError(RuntimeError):
    """Promotion refused (e.g. an override without a reason, or a licence conflict)."""


@dataclass(frozen=True)
class Promotion:
    name: str
    version: str
    alias: str
    previous: str | None
    overridden: bool


def commercial_aliases() -> set[str]:
    """Aliases whose models are used commercially (MUSICOPS_COMMERCIAL_ALIASES, comma-separated)."""
    raw = os.environ.get("MUSICOPS_COMMERCIAL_ALIASES", "")
    return {alias.strip() for alias in raw.split(",") if alias.strip()}


def licence_blocks(licence: str | None, alias: str) -> str | None:
    """A reason when non-commercial weights would be promoted to a commercial alias, else None."""
    text = (licence or "").lower()
    if alias in commercial_aliases() and any(marker in text for marker in NON_COMMERCIAL):
        return (f"licence {licence!r} is non-commercial (MusicGen's released weights are CC-BY-NC-4.0) and "
                f"alias {alias!r} is configured as commercial (MUSICOPS_COMMERCIAL_ALIASES)")
    return None


def current_alias(name: str, alias: str) -> str | None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return str(MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def promote(name: str, version: str, settings: Settings | None = None, alias: str = CHAMPION,
            gates_passed: bool = True, override_reason: str | None = None, user: str | None = None) -> Promotion:
    """Point `alias` at `version`; the version it left keeps the `previous` alias for rollback."""
    from mlflow import MlflowClient

    from musicops.registry import ModelRef, configure_mlflow, resolve_version

    configure_mlflow(settings)
    client = MlflowClient()
    target = resolve_version(ModelRef(name, str(version)), client)  # unknown versions fail here
    overridden = not gates_passed
    if overridden and not (override_reason or "").strip():
        raise PromotionError("a gate failed: promotion needs --override-reason TEXT (recorded on the version)")
    reason = licence_blocks(target.tags.get("musicops.licence"), alias)
    if reason:
        raise PromotionError(reason)
    user = user or _user()
    now = datetime.now(UTC).isoformat(timespec="seconds")
    if overridden:
        client.set_model_version_tag(name, target.version, "musicops.override_reason", override_reason.strip())
        client.set_model_version_tag(name, target.version, "musicops.override_by", user)
        client.set_model_version_tag(name, target.version, "musicops.override_at", now)
    old = current_alias(name, alias)
    if old == str(target.version):
        return Promotion(name, str(target.version), alias, None, overridden)
    if old is not None:
        client.set_registered_model_alias(name, PREVIOUS, old)
    client.set_registered_model_alias(name, alias, target.version)
    client.set_model_version_tag(name, target.version, "musicops.promoted", f"{alias} at {now} by {user}")
    return Promotion(name, str(target.version), alias, old, overridden)


def rollback(name: str, settings: Settings | None = None, alias: str = CHAMPION) -> Promotion:
    """Swap `alias` and `previous`: one command undoes the last promotion."""
    from mlflow import MlflowClient

    from musicops.registry import configure_mlflow

    configure_mlflow(settings)
    client = MlflowClient()
    previous, current = current_alias(name, PREVIOUS), current_alias(name, alias)
    if previous is None:
        raise PromotionError(f"{name!r} has no {PREVIOUS!r} alias to roll back to")
    client.set_registered_model_alias(name, alias, previous)
    if current is not None:
        client.set_registered_model_alias(name, PREVIOUS, current)
    client.set_model_version_tag(name, previous, "musicops.rolled_back_to",
                                 f"{datetime.now(UTC).isoformat(timespec='seconds')} by {_user()}")
    return Promotion(name, previous, alias, current, False)


def _user() -> str:
    try:
        return os.environ.get("MUSICOPS_USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
