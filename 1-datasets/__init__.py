"""Datasets: synthetic music, ingest into versioned manifests, Great Expectations validation."""
