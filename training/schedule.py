"""Learning-rate schedules as pure functions of the triplets seen, so a resumed run (or one
resumed with another world size) gets exactly the rate an uninterrupted run would have had.

``constant`` (the paper's): the configured rate throughout.

``cosine``: a linear warmup from 0 over ``warmup_triplets``, then a cosine decay to
``min_lr_ratio * lr`` at ``total_triplets``, the run's planned budget, and ``min_lr_ratio * lr``
after it::

    f(t) = t / w                                                    for t < w
    f(t) = r + (1 - r) * (1 + cos(pi * (t - w) / (T - w))) / 2      for w <= t < T
    f(t) = r                                                        for t >= T
    lr(t) = lr * f(t)

The plan (``kind``, ``warmup_triplets``, ``total_triplets``, ``min_lr_ratio``) is fixed when a run
starts and kept in its checkpoints: a resumed run follows the plan it started with, whatever
``--max-triplets`` it is given, so stopping and resuming never reshapes the curve.

Example::

    [schedule]
    kind = "cosine"
    warmup_triplets = 5000
    total_triplets = 300000
    min_lr_ratio = 0.01

Reference: Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts",
ICLR 2017 (cosine annealing); Goyal et al., "Accurate, Large Minibatch SGD", 2017 (warmup).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

KINDS = ("constant", "cosine")


@dataclass(frozen=True)
class Schedule:
    kind: str = "constant"
    warmup_triplets: int = 0
    total_triplets: int = 0
    min_lr_ratio: float = 0.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"[schedule] kind must be one of {list(KINDS)}, got {self.kind!r}")
        if self.warmup_triplets < 0 or not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError("[schedule] warmup_triplets must be >= 0 and min_lr_ratio in [0, 1]")
        if self.kind == "cosine" and self.total_triplets <= self.warmup_triplets:
            raise ValueError(f"[schedule] cosine needs total_triplets ({self.total_triplets}) > "
                             f"warmup_triplets ({self.warmup_triplets})")

    def factor(self, triplets_seen: int) -> float:
        """The multiplier of the configured rate after ``triplets_seen`` triplets."""
        if self.kind == "constant":
            return 1.0
        t, w, total, r = triplets_seen, self.warmup_triplets, self.total_triplets, self.min_lr_ratio
        if t < w:
            return t / w
        if t >= total:
            return r
        return r + (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * (t - w) / (total - w)))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "Schedule":
        d = dict(d or {})
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"[schedule]: unknown keys {unknown}; allowed: {sorted(cls.__dataclass_fields__)}")
        return cls(kind=str(d.get("kind", "constant")), warmup_triplets=int(d.get("warmup_triplets", 0)),
                   total_triplets=int(d.get("total_triplets", 0)),
                   min_lr_ratio=float(d.get("min_lr_ratio", 0.0)))
