"""Reference catalog and copyright-similarity gate.

- `fingerprint`: landmark-hash fingerprints (literal reuse: shift, gain, noise, lossy re-encode).
- `index`: FAISS cosine index over window embeddings (flat, IVF past 50k vectors, GPU when usable).
- `store`: versioned catalogs under `HOME/catalog/NAME/vNNNN/` (atomic, incremental adds).
- `gate`: `search` / `check_asset` fuse both channels into one score and a block/pass verdict.
- `calibrate`: threshold for a target false-positive rate, measured on transformed catalog excerpts.

Everything here imports numpy only; faiss, scipy and torch load inside the functions that use them.
The submodule names (`fingerprint`, `index`, ...) stay unshadowed: no function is re-exported under them.
"""

from musicops.evaluation.catalog.calibrate import CalibrationReport, calibrate
from musicops.evaluation.catalog.fingerprint import Fingerprint, FingerprintMatch
from musicops.evaluation.catalog.gate import CatalogMatch, CopyrightVerdict, check_asset, search
from musicops.evaluation.catalog.store import (
    CatalogError,
    CatalogVersion,
    add_works,
    list_versions,
    load_catalog,
)

__all__ = [
    "CalibrationReport",
    "CatalogError",
    "CatalogMatch",
    "CatalogVersion",
    "CopyrightVerdict",
    "Fingerprint",
    "FingerprintMatch",
    "add_works",
    "calibrate",
    "check_asset",
    "list_versions",
    "load_catalog",
    "search",
]
