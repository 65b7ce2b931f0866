"""Torch's CPU thread count, from `MUSICOPS_TORCH_THREADS`, applied by each process that runs a model.

Why explicit: torch's default (one thread per core) runs ~3.7x slower whenever another process holds
a core, so tests, benchmarks and busy hosts pin it. Unset means torch's default.
"""

from __future__ import annotations

from musicops.config import Settings, get_settings


def apply_torch_threads(settings: Settings | None = None) -> int | None:
    """Set torch's intra-op threads to `settings.torch_threads` when configured; returns the value."""
    threads = (settings or get_settings()).torch_threads
    if threads:
        import torch

        torch.set_num_threads(threads)
    return threads
