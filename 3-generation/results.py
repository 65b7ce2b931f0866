"""What a batch produced: one `ClipOutcome` per work item and the `BatchResult` around them.

Its own module because the run, its metrics, its MLflow record, delivery and the serving engine
all read these, and none of them should have to import the others to get at them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from musicops.generation.planning import BatchPlan
from musicops.generation.prompts import WorkItem


@dataclass
class ClipOutcome:
    item: WorkItem
    record: Any  # AssetRecord
    cache_hit: bool
    created: bool  # False when another writer had stored the same cache key first
    latency_s: float = 0.0
    identical: bool = True  # regenerated audio matched the stored asset bit for bit


@dataclass
class BatchResult:
    plan: BatchPlan
    outcomes: list[ClipOutcome]
    metrics: dict[str, float]
    mlflow_run_id: str | None = None

    @property
    def failed(self) -> list[ClipOutcome]:
        return [o for o in self.outcomes if not o.record.passed]

    @property
    def delivered(self) -> list[ClipOutcome]:
        return [o for o in self.outcomes if o.record.passed]
