"""Hugging Face hub ids (`facebook/musicgen-small`, `laion/clap-htsat-unfused@<revision>`) resolved
through `huggingface_hub` into the standard HF cache, pinned to the commit they resolved to.

A reference is a hub id when it reads `owner/name`, optionally with `@revision` (a branch, tag or
commit sha) or the `hub:` prefix that pinned URIs carry (`hub:facebook/musicgen-small@<sha>`).
Presets (`musicgen-tiny`), `models:/` URIs and paths (`./x`, `/x`, `~/x`, `a/b/c`) never are; an
existing local directory called `owner/name` wins over the hub id, as in transformers.

The environment is read when a snapshot is asked for, not when `huggingface_hub` was imported (it
reads its constants once, at import): `HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`) means the cache
only; the cache is `HF_HUB_CACHE`, else `HUGGINGFACE_HUB_CACHE`, else `HF_HOME/hub`, else
`XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub` -- the hub client's own order.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from musicops.errors import MusicopsError

HUB_PREFIX = "hub:"
DEFAULT_REVISION = "main"
# The hub's repo-id rules (huggingface_hub.utils.validate_repo_id): ASCII letters, digits, '-', '_',
# '.', at most 96 characters a part, no '--' or '..'. Exactly one '/': an owner is required, so a
# bare word (a preset such as musicgen-tiny) is never taken for a hub id.
_PART = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
_REPO_ID = re.compile(rf"(?P<owner>{_PART})/(?P<name>{_PART})", re.ASCII)
# branch / tag names may hold '/' (refs/pr/1); never whitespace, ':' or '..'
_REVISION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]{0,199}", re.ASCII)
COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
# Weights in formats transformers on torch never reads: not worth downloading with a snapshot.
IGNORE_PATTERNS = ["*.msgpack", "*.h5", "*.onnx", "*.onnx_data", "*.ot", "*.tflite", "*.mlmodel",
                   "flax_model*", "tf_model*", "onnx/*", "coreml/*"]


class HubModelNotFoundError(MusicopsError, LookupError):
    """A hub id that cannot be had: not in the cache offline, unknown on the hub, no such revision."""


@dataclass(frozen=True)
class HubRef:
    """A parsed hub id; `revision` None means the repository's default branch."""

    repo_id: str
    revision: str | None = None

    @property
    def requested(self) -> str:
        return self.revision or DEFAULT_REVISION

    def __str__(self) -> str:
        return self.repo_id if self.revision is None else f"{self.repo_id}@{self.revision}"


@dataclass(frozen=True)
class HubSnapshot:
    """A hub id resolved to one immutable commit and its local snapshot directory."""

    repo_id: str
    revision: str  # what was asked for: a branch, tag or sha ("main" by default)
    commit: str  # the 40-hex commit sha it resolved to
    directory: Path  # <cache>/models--owner--name/snapshots/<commit>
    cache_dir: Path

    @property
    def uri(self) -> str:
        """The pinned reference: resolving it again gives this very snapshot."""
        return f"{HUB_PREFIX}{self.repo_id}@{self.commit}"

    def tags(self, prefix: str = "musicops.hub.") -> dict[str, str]:
        return {f"{prefix}repo_id": self.repo_id, f"{prefix}revision": self.revision,
                f"{prefix}commit": self.commit}


def parse_hub_id(reference: str) -> HubRef | None:
    """The hub id a reference spells (`owner/name[@revision]`, optionally `hub:`-prefixed), else None.

    Purely syntactic: whether a local directory of that name exists is the caller's question
    (`is_hub_id` asks it).
    """
    text = reference.strip()
    if text.startswith(HUB_PREFIX):
        text = text[len(HUB_PREFIX):]
    repo_id, at, revision = text.partition("@")
    match = _REPO_ID.fullmatch(repo_id)
    if match is None or "--" in repo_id or ".." in repo_id or repo_id.endswith(".git"):
        return None
    if at and (not _REVISION.fullmatch(revision) or ".." in revision):
        return None
    return HubRef(repo_id, revision if at else None)


def is_hub_id(reference: str) -> bool:
    """True for `owner/name[@revision]` (or `hub:...`) that is not an existing local path."""
    if parse_hub_id(reference) is None:
        return False
    return reference.strip().startswith(HUB_PREFIX) or not Path(reference.strip()).expanduser().exists()


def with_revision(reference: str, revision: str | None) -> str:
    """`reference` with a `--revision` option folded in as `@revision` (a hub id only)."""
    if not revision:
        return reference
    ref = parse_hub_id(reference)
    if ref is None or not is_hub_id(reference):
        raise ValueError(f"--revision {revision!r} applies to hub ids (owner/name) only, not {reference!r}")
    if ref.revision is not None and ref.revision != revision:
        raise ValueError(f"{reference!r} already names revision {ref.revision!r}; --revision says {revision!r}")
    if parse_hub_id(f"{ref.repo_id}@{revision}") is None:
        raise ValueError(f"--revision {revision!r} is not a valid branch, tag or commit sha")
    return f"{ref.repo_id}@{revision}"


# ------------------------------------------------------------------ environment
def _true(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}  # huggingface_hub's _is_true


def hub_offline(env: Mapping[str, str] | None = None) -> bool:
    """`HF_HUB_OFFLINE` (or transformers' `TRANSFORMERS_OFFLINE`) as set now."""
    env = os.environ if env is None else env
    return _true(env.get("HF_HUB_OFFLINE") or env.get("TRANSFORMERS_OFFLINE"))


def hub_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """The hub cache as the environment names it now, in huggingface_hub's order of precedence."""
    env = os.environ if env is None else env

    def expand(value: str) -> Path:
        return Path(os.path.expandvars(os.path.expanduser(value)))

    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(name):
            return expand(env[name])
    if env.get("HF_HOME"):
        return expand(env["HF_HOME"]) / "hub"
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return expand(base) / "huggingface" / "hub"


# -------------------------------------------------------------------- download
def snapshot(reference: str | HubRef, *, env: Mapping[str, str] | None = None,
             ignore_patterns: list[str] | None = None) -> HubSnapshot:
    """Download (or, offline, find in the cache) a hub id's snapshot; returns it pinned to its commit.

    Online, files are fetched into the standard cache on first use and reused after; offline
    (`HF_HUB_OFFLINE=1`) only the cache is read, and a missing id raises `HubModelNotFoundError`
    naming the id, the revision and the cache directory.
    """
    ref = reference if isinstance(reference, HubRef) else parse_hub_id(reference)
    if ref is None:
        raise ValueError(f"not a hub id: {reference!r} (expected owner/name or owner/name@revision)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    cache_dir = hub_cache_dir(env)
    offline = hub_offline(env)
    revision = ref.requested
    what = f"hub model {ref.repo_id!r} (revision {revision!r})"
    fetch = (f"run once with hub access (HF_HUB_OFFLINE unset), or fetch it with `hf download {ref.repo_id} "
             f"--revision {revision}` (`huggingface-cli download` on older clients) with HF_HOME/HF_HUB_CACHE "
             "pointing at this cache")
    try:
        path = snapshot_download(ref.repo_id, revision=revision, cache_dir=str(cache_dir),
                                 local_files_only=offline,
                                 ignore_patterns=IGNORE_PATTERNS if ignore_patterns is None else ignore_patterns)
    except LocalEntryNotFoundError as exc:  # also IncompleteSnapshotError: a partial snapshot
        why = "HF_HUB_OFFLINE is set" if offline else "the hub could not be reached"
        raise HubModelNotFoundError(f"{what} is not in the Hugging Face cache {cache_dir} and {why}; {fetch}. "
                                    f"({type(exc).__name__}: {_first_line(exc)})") from exc
    except RevisionNotFoundError as exc:
        raise HubModelNotFoundError(f"{what}: the hub has no revision {revision!r} of {ref.repo_id!r}") from exc
    except GatedRepoError as exc:
        raise HubModelNotFoundError(f"{what} is gated: accept its terms on the hub and log in (`hf auth login`)"
                                    ) from exc
    except RepositoryNotFoundError as exc:
        raise HubModelNotFoundError(f"{what}: no such repository on the hub, or it is private (log in with "
                                    "`hf auth login`), and no local directory of that name exists") from exc
    except (HfHubHTTPError, HFValidationError, OSError) as exc:
        raise HubModelNotFoundError(f"{what} could not be fetched into {cache_dir} "
                                    f"({type(exc).__name__}: {_first_line(exc)})") from exc
    directory = Path(path)
    commit = directory.name  # the cache keeps each commit in snapshots/<sha>
    if not COMMIT_SHA.fullmatch(commit) or directory.parent.name != "snapshots":
        raise HubModelNotFoundError(f"{what}: {directory} is not a commit snapshot of the hub cache")
    return HubSnapshot(ref.repo_id, revision, commit, directory, cache_dir)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
