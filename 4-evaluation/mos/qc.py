"""Rater screening rules: pure functions over one rater's answers to the check items.

Why these rules:
- Trap questions ("attention check: please rate this clip 1") have one right answer; a wrong one
  means the rater is not reading the page (crowd-sourcing practice, ITU-T P.808).
- Gold clips have a known score; a rater whose mean absolute error on them exceeds the tolerance
  (ACR: 1 point, MUSHRA: 20 points) is not using the scale like the panel that scored them.
- MUSHRA only (ITU-R BS.1534-3 post-screening): a rater who scores the hidden reference below 90
  in more than 15 % of the trials cannot tell the reference apart.
Each rule is judged only once the rater has answered every item it looks at, so an early mistake
is not judged on one answer and the verdict does not change later (ratings are immutable).
Screened raters are never deleted: their ratings stay, flagged, and are left out of statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

GOLD_TOLERANCE = {"acr": 1.0, "mushra": 20.0}
MUSHRA_REFERENCE_MIN = 90.0
MUSHRA_REFERENCE_MAX_FRACTION = 0.15
_EPS = 1e-9


@dataclass(frozen=True)
class CheckAnswer:
    """One check item for one rater: what was expected and what they answered (None: not yet)."""

    item_id: str
    kind: str  # "gold" | "trap" | "reference"
    expected: float | None  # known gold score / trap answer; unused for "reference"
    answer: float | None


def trap_failures(answers: Sequence[CheckAnswer]) -> list[str]:
    """One message per answered trap whose answer differs from the instructed one."""
    return [f"trap item {a.item_id} answered {a.answer:g}, instructed {a.expected:g}"
            for a in answers
            if a.kind == "trap" and a.answer is not None and a.expected is not None
            and abs(a.answer - a.expected) > _EPS]


def gold_mean_error(answers: Sequence[CheckAnswer]) -> float | None:
    """Mean absolute error over answered gold clips (None when there are none)."""
    errors = [abs(a.answer - a.expected) for a in answers
              if a.kind == "gold" and a.answer is not None and a.expected is not None]
    return sum(errors) / len(errors) if errors else None


def _complete(answers: Sequence[CheckAnswer], kinds: tuple[str, ...]) -> bool:
    return all(a.answer is not None for a in answers if a.kind in kinds)


def screening_reason(answers: Sequence[CheckAnswer], method: str) -> str | None:
    """Why this rater fails screening ("; "-joined), or None (passed, or not all checks answered yet)."""
    if method not in GOLD_TOLERANCE:
        raise ValueError(f"unknown rating method {method!r}")
    reasons: list[str] = []
    if _complete(answers, ("gold", "trap")):
        reasons.extend(trap_failures(answers))
        error = gold_mean_error(answers)
        tolerance = GOLD_TOLERANCE[method]
        if error is not None and error > tolerance + _EPS:
            n_gold = sum(a.kind == "gold" for a in answers)
            reasons.append(f"gold: mean absolute error {error:.2f} > tolerance {tolerance:g} "
                           f"over {n_gold} clip(s)")
    references = [a.answer for a in answers if a.kind == "reference"]
    if method == "mushra" and references and _complete(answers, ("reference",)):
        low = sum(score < MUSHRA_REFERENCE_MIN for score in references if score is not None)
        if low / len(references) > MUSHRA_REFERENCE_MAX_FRACTION:
            reasons.append(f"hidden reference rated below {MUSHRA_REFERENCE_MIN:g} in {low} of "
                           f"{len(references)} trials (> {MUSHRA_REFERENCE_MAX_FRACTION:.0%})")
    return "; ".join(reasons) or None
