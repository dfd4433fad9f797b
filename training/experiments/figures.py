"""PNG figures from an experiment's JSONs (matplotlib, in the ``train`` extra); drawn later."""
from __future__ import annotations


class FiguresUnavailable(RuntimeError):
    """Figures cannot be drawn here (e.g. matplotlib is not installed)."""


def draw_all(exp, log=print):
    raise FiguresUnavailable("not implemented yet")
