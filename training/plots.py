"""Plots shared by the experiment figures and the release card (matplotlib: the ``train`` extra)."""
from __future__ import annotations

from pathlib import Path

from audioembed.outputs import atomic_write

DPI = 100


class FiguresUnavailable(RuntimeError):
    """Figures cannot be drawn here (e.g. matplotlib is not installed)."""


def pyplot():
    try:
        import matplotlib
    except ModuleNotFoundError as exc:
        raise FiguresUnavailable("matplotlib is not installed (pip install -e '.[train]')") from exc
    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def plot_dev_curves(curves: list[tuple[str, list[dict]]], title: str, out: Path) -> Path:
    """Dev QbE mAP against triplets seen, one line per ``(label, points)``; points hold
    ``triplets_seen`` and ``qbe_map`` (train_log.jsonl's dev records, or a train summary's)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, curve in curves:
        ax.plot([p["triplets_seen"] for p in curve], [p["qbe_map"] for p in curve], marker=".", label=label)
    ax.set_xlabel("triplets seen")
    ax.set_ylabel("dev QbE mAP (tracking subset)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    atomic_write(out, lambda f: fig.savefig(f, format="png", dpi=DPI))
    plt.close(fig)
    return out
