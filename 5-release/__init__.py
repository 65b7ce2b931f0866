"""Release: run every gate on a candidate model version, then move the `champion` alias (or not)."""
