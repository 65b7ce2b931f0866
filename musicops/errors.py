"""The one root of musicops's expected failures, and the exit code each one means.

An expected failure (bad input, a missing model or asset, a refused gate) derives from
`MusicopsError`; the CLI catches it in one place and prints one red `error:` line with no traceback,
exiting with the error's `exit_code`. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

# Exit codes the CLI uses: 0 ok, 1 a check ran and failed (gate refused, regression), 2 could not
# evaluate (bad input, missing thing) -- the default for an error.
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


class MusicopsError(Exception):
    """An expected failure the user can act on; `exit_code` is what the CLI exits with."""

    exit_code: int = EXIT_BAD_INPUT
