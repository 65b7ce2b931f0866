"""Batch generation: prompts files, planning against the cache, generation, storing with provenance."""
