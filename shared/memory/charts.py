"""Charts of memory sweeps (PNG and SVG, matplotlib's Agg backend)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, base: Path) -> list[Path]:
    base.parent.mkdir(parents=True, exist_ok=True)
    stem = base.with_suffix("")
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    for path in paths:
        fig.savefig(
            path, dpi=110, bbox_inches="tight", metadata={"Date": None} if path.suffix == ".svg" else None
        )
    return paths


def sweep_chart(
    rows: Sequence[dict[str, Any]], what: str, base: Path, title: str | None = None
) -> list[Path]:
    """Step chart of MEMORY USAGE and charged bytes against key or value length; returns PNG and SVG paths."""
    plt = _pyplot()
    lengths = [r["length"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 4.2))
    ax.step(lengths, [r["memory_usage"] for r in rows], where="post", label="MEMORY USAGE")
    ax.step(
        lengths, [r["used_memory_delta"] for r in rows], where="post", label="used_memory growth (charged)"
    )
    ax.plot(lengths, [r["length"] + 1 for r in rows], ":", label="logical bytes (key + value)")
    ax.set_xlabel(f"{what} length (bytes)")
    ax.set_ylabel("bytes")
    ax.set_title(title or f"One string key: cost against {what} length")
    ax.grid(alpha=0.3)
    ax.legend()
    paths = _save(fig, base)
    plt.close(fig)
    return paths
