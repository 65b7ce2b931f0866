"""Aliases as the release mechanism: `champion` is what serves, `previous` is one command away.

Only `promote` moves `champion`; a failed gate never calls it, and an override needs a reason that
is recorded on the version with the user's name and the gates it overruled.

Every alias keeps a history of its holders (a JSON list in a registered-model tag). `rollback` pops
it: the alias goes back to the holder before, and the version rolled back from is dropped from the
history, so no number of rollbacks ever re-promotes it (the old champion/previous swap did, on the
second call, without any gate).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from musicops.config import Settings, current_user, get_settings
from musicops.errors import MusicopsError

CHAMPION, PREVIOUS = "champion", "previous"
NON_COMMERCIAL = ("cc-by-nc", "cc by-nc", "non-commercial", "noncommercial")
HISTORY_TAG = "musicops.alias_history.{alias}"
HISTORY_LIMIT = 50  # entries kept; MLflow tag values are size-limited


class PromotionError(MusicopsError, RuntimeError):
    """Promotion refused (e.g. an override without a reason, or a licence conflict)."""


@dataclass(frozen=True)
class Promotion:
    name: str
    version: str
    alias: str
    previous: str | None
    overridden: bool
    override: dict[str, Any] | None = None  # reason, by, at, failed_gates when overridden
    history: tuple[str, ...] = field(default_factory=tuple)  # the alias's holders, oldest first


def previous_alias(alias: str) -> str:
    """The alias that names the holder before `alias`'s current one (`previous` for `champion`)."""
    return PREVIOUS if alias == CHAMPION else f"{alias}-{PREVIOUS}"


def commercial_aliases(settings: Settings | None = None) -> set[str]:
    """Aliases whose models are used commercially (MUSICOPS_COMMERCIAL_ALIASES, comma-separated)."""
    return set((settings or get_settings()).commercial_aliases)


def licence_blocks(licence: str | None, alias: str, settings: Settings | None = None) -> str | None:
    """A reason when non-commercial weights would be promoted to a commercial alias, else None."""
    text = (licence or "").lower()
    if alias in commercial_aliases(settings) and any(marker in text for marker in NON_COMMERCIAL):
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


def alias_history(name: str, alias: str = CHAMPION, client: Any | None = None) -> list[str]:
    """The alias's holders, oldest first, ending with the current holder.

    Registries from before the history was kept start from `previous` + current, unless the current
    holder was itself restored by the old swap-style rollback (then `previous` is the version rolled
    back from, which must not come back). A holder set outside musicops is appended.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = client or MlflowClient()
    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        raise PromotionError(f"no registered model named {name!r}") from exc
    raw = (model.tags or {}).get(HISTORY_TAG.format(alias=alias))
    try:
        history = [str(v) for v in json.loads(raw)] if raw else []
    except (json.JSONDecodeError, TypeError) as exc:
        raise PromotionError(f"{name!r}: unreadable alias history tag {HISTORY_TAG.format(alias=alias)!r} "
                             f"({exc}); fix or delete the tag") from exc
    current = current_alias(name, alias)
    if not history and current is not None:
        before = current_alias(name, previous_alias(alias))
        restored = "musicops.rolled_back_to" in (client.get_model_version(name, current).tags or {})
        history = [before] if before and before != current and not restored else []
    if current is not None and (not history or history[-1] != current):
        history.append(current)
    return history


def _save_history(client: Any, name: str, alias: str, history: list[str]) -> None:
    client.set_registered_model_tag(name, HISTORY_TAG.format(alias=alias), json.dumps(history[-HISTORY_LIMIT:]))


def _set_previous(client: Any, name: str, alias: str, history: list[str]) -> str | None:
    """Point `previous` at the holder before the current one, or remove it when there is none."""
    import contextlib

    from mlflow.exceptions import MlflowException

    before = history[-2] if len(history) >= 2 else None
    if before is not None:
        client.set_registered_model_alias(name, previous_alias(alias), before)
    else:
        with contextlib.suppress(MlflowException):  # there was none
            client.delete_registered_model_alias(name, previous_alias(alias))
    return before


def promote(name: str, version: str, settings: Settings | None = None, alias: str = CHAMPION,
            gates_passed: bool = True, override_reason: str | None = None, user: str | None = None,
            failed_gates: list[str] | None = None) -> Promotion:
    """Point `alias` at `version` and push it on the alias history; the old holder becomes `previous`.

    `failed_gates` names the gates an override overrules (None: promoted by hand, no gates run).
    """
    from mlflow import MlflowClient

    from musicops.registry import ModelRef, configure_mlflow, resolve_version

    configure_mlflow(settings)
    client = MlflowClient()
    target = resolve_version(ModelRef(name, str(version)), client)  # unknown versions fail here
    overridden = not gates_passed
    if overridden and not (override_reason or "").strip():
        raise PromotionError("a gate failed: promotion needs --override-reason TEXT (recorded on the version)")
    reason = licence_blocks(target.tags.get("musicops.licence"), alias, settings)
    if reason:
        raise PromotionError(reason)
    user = user or current_user(settings)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    record = None
    if overridden:
        overruled = ", ".join(failed_gates) if failed_gates is not None else "none run (promoted by hand)"
        record = {"reason": (override_reason or "").strip(), "by": user, "at": now, "alias": alias,
                  "failed_gates": list(failed_gates or [])}
        client.set_model_version_tag(name, target.version, "musicops.override_reason", record["reason"])
        client.set_model_version_tag(name, target.version, "musicops.override_by", user)
        client.set_model_version_tag(name, target.version, "musicops.override_at", now)
        client.set_model_version_tag(name, target.version, "musicops.override_failed_gates", overruled)
    history = alias_history(name, alias, client)
    old = history[-1] if history else None
    if old == str(target.version):
        return Promotion(name, str(target.version), alias, None, overridden, record, tuple(history))
    history.append(str(target.version))
    client.set_registered_model_alias(name, alias, target.version)
    _save_history(client, name, alias, history)
    _set_previous(client, name, alias, history)
    client.set_model_version_tag(name, target.version, "musicops.promoted", f"{alias} at {now} by {user}"
                                 + (" (override)" if overridden else ""))
    return Promotion(name, str(target.version), alias, old, overridden, record, tuple(history))


def rollback(name: str, settings: Settings | None = None, alias: str = CHAMPION) -> Promotion:
    """Move `alias` back to the holder before the current one, once per call, never forward.

    The version rolled back from leaves the history entirely, so a second rollback goes further
    back (or says there is nothing further) instead of re-promoting it.
    """
    from mlflow import MlflowClient

    from musicops.registry import ModelRef, configure_mlflow, resolve_version

    configure_mlflow(settings)
    client = MlflowClient()
    resolve_version(ModelRef(name, alias=alias), client)  # no such model or alias: ModelNotFoundError
    history = alias_history(name, alias, client)
    current = history[-1]
    remaining = [v for v in history if v != current]
    remaining = [v for i, v in enumerate(remaining) if i == 0 or remaining[i - 1] != v]
    if not remaining:
        raise PromotionError(f"nothing further to roll back to: @{alias} of {name!r} is v{current} and no earlier "
                             "holder is recorded (versions already rolled back from are not re-promoted)")
    target = remaining[-1]
    now, user = datetime.now(UTC).isoformat(timespec="seconds"), current_user(settings)
    client.set_registered_model_alias(name, alias, target)
    _save_history(client, name, alias, remaining)
    _set_previous(client, name, alias, remaining)
    client.set_model_version_tag(name, current, "musicops.rolled_back_from", f"{alias} at {now} by {user}")
    client.set_model_version_tag(name, target, "musicops.rolled_back_to", f"{alias} at {now} by {user}")
    return Promotion(name, target, alias, current, False, None, tuple(remaining))


