"""Serving: the registry champion behind a generation API (see issue 7)."""
