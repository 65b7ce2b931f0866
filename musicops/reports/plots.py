"""Report plots as PNG bytes, drawn on matplotlib's Agg canvas (imported lazily, no pyplot state).

The object API with an explicit Agg canvas is thread-safe (the MOS app renders plots in request
threads) and never touches the process-wide backend the way `matplotlib.use` does.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class MosPoint(NamedTuple):
    """One error bar: a label (model version, reference, anchor), its MOS and confidence interval."""

    label: str
    mos: float
    ci_low: float
    ci_high: float


def _figure(width: float, height: float, dpi: int) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def b64(png: bytes) -> str:
    """PNG bytes as base64 text for a `data:image/png;base64,` URL in an HTML report."""
    return base64.b64encode(png).decode("ascii")


def mos_errorbar_png(points: Sequence[MosPoint], *, title: str = "", ylabel: str = "MOS (95% CI)",
                     scale: tuple[float, float] | None = None, dpi: int = 100) -> bytes:
    """One point with its CI error bar per label; a non-finite MOS is left out, a non-finite CI bound
    draws no bar on that side. `scale` (the rating scale) fixes the y axis so campaigns compare."""
    n = len(points)
    fig = _figure(max(4.0, 1.4 * n + 2.0), 3.6, dpi)
    ax = fig.subplots()
    positions = list(range(n))
    mos = [p.mos if math.isfinite(p.mos) else math.nan for p in points]
    lower = [p.mos - p.ci_low if math.isfinite(p.mos) and math.isfinite(p.ci_low) else 0.0 for p in points]
    upper = [p.ci_high - p.mos if math.isfinite(p.mos) and math.isfinite(p.ci_high) else 0.0 for p in points]
    ax.errorbar(positions, mos, yerr=[lower, upper], fmt="o", capsize=6, markersize=7, color="#2b6cb0",
                ecolor="#444")
    crowded = n > 3
    ax.set_xticks(positions, [p.label for p in points], rotation=15 if crowded else 0,
                  ha="right" if crowded else "center")
    ax.set_xlim(-0.6, n - 0.4)
    if scale is not None:
        low, high = scale
        pad = (high - low) * 0.05
        ax.set_ylim(low - pad, high + pad)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def distributions_png(baseline: Sequence[float], candidate: Sequence[float], ids: Sequence[str],
                      drift: Sequence[float]) -> bytes:
    """Regression report: CLAP score histograms (baseline vs candidate) and embedding drift per prompt."""
    fig = _figure(11, 3.6, 100)
    left, right = fig.subplots(1, 2)
    left.hist(list(baseline), bins=12, alpha=0.6, label="baseline")
    left.hist(list(candidate), bins=12, alpha=0.6, label="candidate")
    left.set_title("CLAP text-audio score")
    left.set_xlabel("cosine similarity")
    left.legend()
    right.bar(list(ids), list(drift), color="tab:purple")
    right.set_title("embedding drift per prompt (1 - cos)")
    right.tick_params(axis="x", rotation=60, labelsize=7)
    return _png(fig)


def loss_curve_png(losses: Sequence[float], title: str) -> bytes:
    """Training loss per step (markers while there are few enough steps to tell apart)."""
    fig = _figure(6, 3.5, 100)
    ax = fig.subplots()
    ax.plot(range(1, len(losses) + 1), list(losses), marker="." if len(losses) < 60 else None)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _png(fig)
