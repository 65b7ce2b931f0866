"""Plain helper modules shared by the tests and conftest files (importable as `helpers.*`).

pytest puts `tests/` on sys.path (`pythonpath = ["tests"]` in pyproject.toml); the repo root stays
off it, so the top-level source folders (`1-datasets/`, `2-training/`, ...) shadow nothing.

- `helpers.net`: `free_port()`.
- `helpers.servers`: `ServerProcess` (a real server process on 127.0.0.1) and its launchers for
  `musicops serve`, `musicops mos serve` and `mlflow server`.
- `helpers.registry`: `register_tiny()`, the tiny model registered under an alias.
- `helpers.postgres`: a throwaway PostgreSQL cluster.
- `helpers.layout`: which folder holds which `musicops.*` package (pyproject `package-dir`).
"""
