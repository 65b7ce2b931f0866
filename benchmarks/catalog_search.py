"""Catalog search: recall@10 of the catalog's index vs exact search, and QPS of `VectorIndex.search`
vs raw faiss on the very same index (goal: within 1.2x). Synthetic *clustered* vectors: uniform
random vectors make every approximate index look broken.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def clustered(n: int, dim: int, clusters: int, rng: np.random.Generator) -> np.ndarray:
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    points = centres[rng.integers(0, clusters, n)] + 0.35 * rng.standard_normal((n, dim)).astype(np.float32)
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()

    import faiss

    from musicops.evaluation.catalog.index import VectorIndex

    rng = np.random.default_rng(0)
    report = []
    for n in (int(s) for s in args.sizes.split(",")):
        data = clustered(n, args.dim, max(64, n // 500), rng)
        queries = data[rng.choice(n, args.queries, replace=False)] + 0.05 * rng.standard_normal(
            (args.queries, args.dim)).astype(np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        started = time.perf_counter()
        index = VectorIndex(args.dim)
        index.add(data, np.arange(n, dtype=np.int64))
        build_s = time.perf_counter() - started
        exact = faiss.IndexFlatIP(args.dim)
        exact.add(data)
        _, truth = exact.search(queries, args.k)

        started = time.perf_counter()
        _, ours = index.search(queries, args.k)
        ours_s = time.perf_counter() - started
        raw_index = index._search_index()  # the same faiss object our wrapper searches
        started = time.perf_counter()
        _, raw = raw_index.search(queries, args.k)
        raw_s = time.perf_counter() - started
        recall = float(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(ours, truth, strict=True)]))
        report.append({"n": n, "dim": args.dim, "kind": index.kind, "build_s": round(build_s, 2),
                       "recall_at_10": round(recall, 4), "qps_ours": round(args.queries / ours_s, 1),
                       "qps_raw_faiss": round(args.queries / raw_s, 1),
                       "ours_over_raw_time": round(ours_s / raw_s, 3), "goal": 1.2})
        print(json.dumps(report[-1]), flush=True)


if __name__ == "__main__":
    main()
