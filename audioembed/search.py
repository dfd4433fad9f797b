"""Query-by-example search: rank the segments of an index by cosine similarity to a query.

The paper's headline task (section 4.3) as a tool. An index is an ``.npz`` archive with
``names`` (N,) and ``embeddings`` (N, D): exactly what ``audioembed extract DIR -o X.npz``
writes, and what ``audioembed index DIR -o X.npz`` writes for a folder. Rows are re-normalised
on load, so the score is the cosine similarity.

A query is an audio file, or a time range of one: ``clip.wav@12.5-14.0`` averages the window
embeddings whose centres lie in [12.5 s, 14.0 s] (the window nearest the range when none does;
a range that starts after the audio ends warns, :class:`QueryRangeWarning`, or with ``strict``
fails).

Ranking is exact and blocked: the index is scored ``block_rows`` rows at a time with one
matrix product per block, keeping a running top-k, so memory stays at ``Q x block_rows``
scores whatever the index size (1M x 128 in a few hundred ms on 2 cores). For indexes far
beyond memory, or many queries per second, an approximate nearest-neighbour library (FAISS,
hnswlib, Annoy) takes the same ``embeddings`` matrix as its database (inner product on these
unit vectors = cosine) and ``names`` as the id map.
"""
from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from audioembed import frontend
from audioembed.api import embed, segment_readout
from audioembed.errors import InvalidArgumentError
from audioembed.outputs import ArchiveError, read_archive

DEFAULT_BLOCK_ROWS = 1 << 17
_RANGE = re.compile(r"^(?P<start>\d+(?:\.\d*)?)-(?P<end>\d+(?:\.\d*)?)$")


# What a range that is not START-END looks like: digits, signs, points, exponents.
_RANGE_LIKE = re.compile(r"^[-+0-9.eE\s]+$")


class SearchError(InvalidArgumentError):
    """An index or a query that cannot be used; the message says which and why."""


class QueryRangeWarning(UserWarning):
    """A query's time range starts after its audio ends: the last window is used."""


@dataclass
class Index:
    """Segment names and their unit-norm embeddings ``(N, D)`` float32."""

    names: np.ndarray
    embeddings: np.ndarray

    def __post_init__(self):
        if self.embeddings.ndim != 2 or len(self.names) != len(self.embeddings):
            raise SearchError(f"index: {len(self.names)} names for embeddings of shape "
                              f"{self.embeddings.shape}")
        if not np.isfinite(self.embeddings).all():
            raise SearchError("index: embeddings hold NaN or infinite values")

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Index":
        """An index (or ``extract`` npz archive); rows are re-normalised to unit length."""
        try:
            z = read_archive(path, ("names", "embeddings"))
        except ArchiveError as exc:
            raise SearchError(f"{exc}; an index is what audioembed index or extract -o X.npz "
                              "writes") from exc
        if "names" not in z or "embeddings" not in z:
            raise SearchError(f"{path}: not an index (needs 'names' and 'embeddings'; has "
                              f"{sorted(z)})")
        names, emb = z["names"], np.asarray(z["embeddings"], dtype=np.float32)
        return cls(names, normalise(emb))


def normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32, copy=False)


def top_k(queries: np.ndarray, embeddings: np.ndarray, k: int, block_rows: int = DEFAULT_BLOCK_ROWS
          ) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, rows)``, both ``(Q, min(k, N))``: the ``k`` rows of ``embeddings`` with the
    highest inner product with each query, best first (ties: lower row first)."""
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    n = len(embeddings)
    k = min(int(k), n)
    if k < 1:
        raise SearchError("k must be at least 1 and the index non-empty")
    best_s = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), 0), dtype=np.int64)
    for lo in range(0, n, block_rows):
        s = queries @ embeddings[lo:lo + block_rows].T
        if s.shape[1] > k:
            part = np.argpartition(-s, k - 1, axis=1)[:, :k]
            s = np.take_along_axis(s, part, axis=1)
            idx = part + lo
        else:
            idx = np.broadcast_to(np.arange(lo, lo + s.shape[1]), s.shape)
        best_s, best_i = np.concatenate([best_s, s], 1), np.concatenate([best_i, idx], 1)
        if best_s.shape[1] > k:
            part = np.argpartition(-best_s, k - 1, axis=1)[:, :k]
            best_s, best_i = np.take_along_axis(best_s, part, 1), np.take_along_axis(best_i, part, 1)
    order = np.lexsort((best_i, -best_s), axis=-1)
    return np.take_along_axis(best_s, order, 1), np.take_along_axis(best_i, order, 1)


def parse_query(spec: str) -> tuple[str, float | None, float | None]:
    """``(path, start, end)``; ``start``/``end`` are None for a whole file. ``a.wav@1.5-3`` is a
    range unless a file of that exact name exists."""
    path, sep, rng = spec.rpartition("@")
    m = _RANGE.match(rng) if sep else None
    if os.path.exists(spec) or not sep:
        return spec, None, None
    if m is None:
        if os.path.exists(path) or _RANGE_LIKE.match(rng):
            raise SearchError(f"{spec}: {rng!r} is not a time range: write START-END in seconds, "
                              "both 0 or more, e.g. clip.wav@12.5-14.0")
        return spec, None, None
    start, end = float(m.group("start")), float(m.group("end"))
    if end <= start:
        raise SearchError(f"{spec}: the range's end must be after its start")
    return path, start, end


def range_mean(window_embeddings: np.ndarray, timestamps: np.ndarray, start: float, end: float,
               layer: str = "embedding") -> np.ndarray:
    """The segment of the windows centred in ``[start, end]`` (else of the nearest one), read out
    as ``layer``'s segments are (``api.segment_readout``: for ``embedding`` their mean), unit norm."""
    inside = (timestamps >= start) & (timestamps <= end)
    if not inside.any():
        inside = np.zeros(len(timestamps), bool)
        inside[int(np.argmin(np.abs(timestamps - (start + end) / 2)))] = True
    return normalise(segment_readout(window_embeddings[inside], layer))


def range_past_end(spec: str, timestamps: np.ndarray, start: float) -> str | None:
    """Why the range of ``spec``, starting at ``start``, lies past the end of the audio its
    windows (centred at ``timestamps``) cover; or None."""
    covered = float(timestamps[-1]) + frontend.WINDOW_FRAMES / frontend.FRAMES_PER_SECOND / 2
    if start < covered:
        return None
    return (f"{spec}: the range starts after the audio ends (its windows cover 0-{covered:.2f} s); "
            f"the last window, centred at {float(timestamps[-1]):.2f} s, is used")


def query_embedding(spec: str, model=None, backend: str | None = None, strict: bool = False,
                    layer: str = "embedding") -> np.ndarray:
    """The ``(D,)`` embedding of a query (a file, or ``file@start-end``); ``model``,
    ``backend`` and ``layer`` as for :func:`audioembed.embed`, and as the index was made.

    A range that starts after the audio ends warns (:class:`QueryRangeWarning`) and uses the
    last window; with ``strict`` it raises :class:`SearchError`."""
    path, start, end = parse_query(spec)
    if not Path(path).exists():
        raise SearchError(f"{path}: no such query file")
    if start is None:
        return np.asarray(embed(path, model=model, backend=backend, layer=layer), dtype=np.float32)
    got = embed(path, model=model, backend=backend, windows=True, layer=layer)
    timestamps = np.asarray(got.timestamps)
    problem = range_past_end(spec, timestamps, start)
    if problem is not None and strict:
        raise SearchError(f"{problem} (--strict)")
    if problem is not None:
        warnings.warn(problem, QueryRangeWarning, stacklevel=2)
    return range_mean(np.asarray(got.window_embeddings), timestamps, start, end, layer)


@dataclass(frozen=True)
class SearchHit:
    """One ranked segment: ``rank`` (1 = best), ``score`` (cosine to the query), ``name`` and
    ``row`` (its row in the index). ``hit["name"]`` also works, as for the dicts ``search``
    returned before."""

    rank: int
    score: float
    name: str
    row: int

    def __getitem__(self, key: str):
        if key not in ("rank", "score", "name", "row"):
            raise KeyError(key)
        return getattr(self, key)

    def to_dict(self) -> dict:
        """``{"rank", "score", "name"}``, as ``audioembed search --json`` prints a result."""
        return {"rank": self.rank, "score": self.score, "name": self.name}


@dataclass(frozen=True)
class SearchResults:
    """What :func:`search` returns: its :class:`SearchHit` s, best first.

    A sequence of them (``len``, iteration, ``results[0]``; a slice such as ``results[1:3]`` is
    a ``SearchResults`` too), with the columns as ``names``, ``scores`` and ``rows``, and
    ``to_dicts()`` for JSON.
    """

    hits: tuple[SearchHit, ...]

    def __len__(self) -> int:
        return len(self.hits)

    def __iter__(self) -> Iterator[SearchHit]:
        return iter(self.hits)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return SearchResults(self.hits[i])
        return self.hits[i]

    @property
    def names(self) -> list[str]:
        return [h.name for h in self.hits]

    @property
    def scores(self) -> np.ndarray:
        """``(k,)`` float32 cosines, best first."""
        return np.array([h.score for h in self.hits], dtype=np.float32)

    @property
    def rows(self) -> np.ndarray:
        """``(k,)`` int64 rows of the index, best first."""
        return np.array([h.row for h in self.hits], dtype=np.int64)

    def to_dicts(self) -> list[dict]:
        """``[{rank, score, name}, ...]``: what ``search`` returned before, and ``--json`` prints."""
        return [h.to_dict() for h in self.hits]


def search(index: Index, query: np.ndarray, k: int = 10) -> SearchResults:
    """The ``k`` best segments of ``index`` for one query embedding, best first (ties: the
    lower row first), as :class:`SearchResults`."""
    scores, rows = top_k(normalise(np.asarray(query, np.float32))[None], index.embeddings, k)
    return SearchResults(tuple(SearchHit(rank=r + 1, score=float(s), name=str(index.names[i]), row=int(i))
                               for r, (s, i) in enumerate(zip(scores[0], rows[0]))))
