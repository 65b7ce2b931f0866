"""Server settings: one frozen object built from CLI flags (and env vars), read by every router.

Limits default to the prompts-file limits of `musicops.generation.prompts` (the API is a one-line
prompts file) and the global duration limits of `musicops.models.sampling`; a deployment may only
tighten them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from musicops.generation.prompts import MAX_PROMPT_CHARS, MAX_VARIATIONS
from musicops.models.sampling import MAX_DURATION_S, MIN_DURATION_S

DEFAULT_PORT = 8000
# Largest request body read. Requests are small JSON (a 1,000-character prompt of \u-escaped emoji
# is 12 kB; no endpoint takes uploads), so 1 MiB is ample; bodies are refused (413) while read.
DEFAULT_MAX_BODY_BYTES = 1 << 20
MIN_BODY_BYTES = 64 << 10  # every valid request fits


@dataclass(frozen=True)
class ServeConfig:
    model: str = "musicgen-tiny"
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    home: Path | None = None  # state directory; None = MUSICOPS_HOME / ./.musicops
    poll_interval_s: float = 30.0  # alias watch period; 0 = do not watch
    max_batch_size: int = 8
    max_wait_ms: float = 10.0
    job_concurrency: int = 16  # jobs handed to the batcher at once
    finish_processes: int = 1  # post-process + store in worker processes; 0 = a thread of the server
    max_duration_s: float = MAX_DURATION_S
    max_variations: int = 4
    max_prompt_chars: int = MAX_PROMPT_CHARS
    url_ttl_s: int = 3600
    webhook_hosts: tuple[str, ...] = ()  # host or host:port; empty = webhooks refused
    require_keys: bool = True
    public_url: str | None = None  # base of audio URLs behind a proxy; default: the request's
    formats: tuple[str, ...] = ("wav", "flac")
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    precision: str = "fp32"  # decoder precision (musicops.models.decode); not fp32 = its own cache entries
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from musicops.models.decode import check_precision

        check_precision(self.precision)
        if not 1 <= self.max_batch_size <= 256:
            raise ValueError(f"max_batch_size must be in [1, 256], got {self.max_batch_size}")
        if not 0 <= self.finish_processes <= 64:
            raise ValueError("finish_processes must be in [0, 64]")
        if self.max_wait_ms < 0:
            raise ValueError("max_wait_ms must be >= 0")
        if not MIN_DURATION_S <= self.max_duration_s <= MAX_DURATION_S:
            raise ValueError(f"max_duration_s must be in [{MIN_DURATION_S}, {MAX_DURATION_S:g}] "
                             "(the global limit, which --max-duration may only lower)")
        if not 1 <= self.max_variations <= MAX_VARIATIONS:
            raise ValueError(f"max_variations must be in [1, {MAX_VARIATIONS}]")
        if not 1 <= self.max_prompt_chars <= MAX_PROMPT_CHARS:
            raise ValueError(f"max_prompt_chars must be in [1, {MAX_PROMPT_CHARS}]")
        if self.url_ttl_s <= 0:
            raise ValueError("url_ttl_s must be > 0")
        if self.poll_interval_s < 0:
            raise ValueError("poll_interval_s must be >= 0")
        if not MIN_BODY_BYTES <= self.max_body_bytes <= 1 << 30:
            raise ValueError(f"max_body_bytes must be in [{MIN_BODY_BYTES}, {1 << 30}], got {self.max_body_bytes}")

