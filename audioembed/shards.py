"""One batch run over many processes or machines: shard K of N takes inputs i with i % N == K.

The shard comes from ``--shard K/N`` (job arrays: SLURM's ``$SLURM_ARRAY_TASK_ID``) or from
torchrun's ``RANK`` and ``WORLD_SIZE``. The input list is expanded and sorted the same way in
every process, so the shards are disjoint and cover it. npy outputs are one set of files per
input as usual; an npz run writes ``OUT.shard-K-of-N.npz`` per shard, and :func:`merge`
gathers those into ``OUT.npz`` in the order of the whole run.

Each shard archive carries a fingerprint of the whole run (:func:`run_fingerprint`): the
expanded input list and what shapes the embeddings (model, backend, frontend, layer, hop).
Shards whose fingerprints differ are from different runs, and are not merged.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from audioembed.errors import AudioembedError, UsageError
from audioembed.outputs import (WINDOW_KEYS, ArchiveError, archive_arrays, check_writable,
                                read_archive, save_archive)

FINGERPRINT_KEY = "run_fingerprint"
_SHARD_RE = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


class ShardError(AudioembedError, ValueError):
    """A ``--shard`` (or torchrun rank) that does not name one shard of a run."""


class MergeError(AudioembedError, ValueError):
    """The shard archives cannot be merged: missing, unreadable, or not from one run."""


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __post_init__(self):
        if not (0 <= self.index < self.count):
            raise ShardError(f"shard {self.index}/{self.count}: K must be in 0..N-1")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def positions(self, n: int) -> range:
        """Positions, in a list of ``n`` inputs, that this shard processes."""
        return range(self.index, n, self.count)

    def archive(self, output: Path) -> Path:
        """``OUT.npz`` -> ``OUT.shard-K-of-N.npz``."""
        return output.with_name(f"{output.stem}.shard-{self.index}-of-{self.count}{output.suffix}")


def parse_shard(text: str) -> Shard:
    """``"K/N"`` -> ``Shard(K, N)``; raises ValueError with the expected form."""
    m = _SHARD_RE.fullmatch(text)
    if m is None:
        raise ShardError(f"expected K/N with 0 <= K < N (e.g. 0/4), got {text!r}")
    return Shard(int(m.group(1)), int(m.group(2)))


def shard_from_env(environ: Mapping[str, str] = os.environ) -> Shard | None:
    """The shard torchrun assigns (``RANK`` of ``WORLD_SIZE``); None outside a multi-process run."""
    world = environ.get("WORLD_SIZE")
    if world is None:
        return None
    try:
        count, rank = int(world), int(environ.get("RANK", ""))
    except ValueError as exc:
        raise ShardError(f"WORLD_SIZE={world!r} and RANK={environ.get('RANK')!r} must be "
                         "integers") from exc
    return Shard(rank, count) if count > 1 else None


def resolve_shard(option: str | None, environ: Mapping[str, str] = os.environ) -> Shard | None:
    """``--shard`` if given, otherwise torchrun's rank; both at once is refused."""
    from_env = shard_from_env(environ)
    if option is None:
        return from_env
    shard = parse_shard(option)
    if from_env is not None:
        # Every rank would process the same --shard: almost surely not what was meant.
        raise ShardError(f"--shard {option} given inside a {from_env.count}-process torchrun "
                         "run (WORLD_SIZE is set); use one or the other")
    return shard


def rank_device(device: str | None, environ: Mapping[str, str] = os.environ) -> str | None:
    """``cuda`` under torchrun is this process's GPU, ``cuda:LOCAL_RANK``; anything else as given."""
    if device == "cuda" and "LOCAL_RANK" in environ and shard_from_env(environ) is not None:
        return f"cuda:{int(environ['LOCAL_RANK'])}"
    return device


def run_fingerprint(inputs: Sequence[str | os.PathLike], settings: Mapping[str, object]) -> str:
    """sha256 of a run's whole input list, in order, and of ``settings`` (JSON-able): every shard
    of one run computes the same one, whichever inputs it embeds."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for name in inputs:
        # NUL cannot occur in a path, so no two lists give the same bytes.
        h.update(os.fsencode(name) + b"\0")
    return h.hexdigest()


def _read(path: Path) -> dict[str, np.ndarray]:
    try:
        return read_archive(path)
    except ArchiveError as exc:
        raise MergeError(str(exc)) from exc


def merge(paths: Sequence[str | os.PathLike]) -> tuple[dict[str, np.ndarray], int]:
    """One archive's arrays from the shard archives of one run, and the number of shards.

    Inputs come out in the whole run's order (``indices``); the result has exactly the keys of
    an unsharded run's archive.
    """
    if not paths:
        raise MergeError("no shard archives given")
    shards: dict[int, dict] = {}
    count = None
    for path in map(Path, paths):
        z = _read(path)
        missing = [k for k in ("names", "embeddings", "indices", "shard") if k not in z]
        if missing:
            raise MergeError(f"{path}: not a shard archive of audioembed extract (no "
                             f"{', '.join(missing)})")
        if FINGERPRINT_KEY not in z:
            raise MergeError(f"{path}: has no {FINGERPRINT_KEY} (written by an older audioembed), "
                             "so it cannot be checked to be from the same run; extract it again")
        k, n = (int(v) for v in z["shard"])
        if count is not None and n != count:
            raise MergeError(f"{path}: shard {k} of {n}, but other archives are shards of {count}")
        if k in shards:
            raise MergeError(f"{path}: shard {k} of {n} given twice (also {shards[k]['path']})")
        count = n
        shards[k] = dict(z, path=path)
    first = next(iter(shards.values()))
    for z in shards.values():
        if str(z[FINGERPRINT_KEY]) != str(first[FINGERPRINT_KEY]):
            raise MergeError(f"{z['path']} and {first['path']} are from different runs: the input "
                             "list (files added, removed or renamed between the shards), the model, "
                             "the backend, the layer or the hop differ; run every shard again")
    absent = sorted(set(range(count)) - set(shards))
    if absent:
        raise MergeError(f"missing shard{'s' * (len(absent) > 1)} {', '.join(map(str, absent))} "
                         f"of {count}")
    windowed = {all(key in z for key in WINDOW_KEYS) for z in shards.values()}
    if len(windowed) > 1:
        raise MergeError("some shards were written with --windows and some without")
    with_windows = windowed.pop()

    rows = []  # (position in the whole run, shard, row)
    for k, z in shards.items():
        rows += [(int(pos), k, i) for i, pos in enumerate(z["indices"])]
    rows.sort()
    positions = [pos for pos, _, _ in rows]
    if len(set(positions)) != len(positions):
        raise MergeError("two shards hold the same input: they are not from one run")
    dim = next(z["embeddings"].shape[1] for z in shards.values())

    def window_rows(key: str) -> list[np.ndarray]:
        return [shards[k][key][shards[k]["offsets"][i]:shards[k]["offsets"][i + 1]]
                for _, k, i in rows]

    arrays = archive_arrays(
        [shards[k]["names"][i] for _, k, i in rows], [shards[k]["embeddings"][i] for _, k, i in rows],
        dim, window_rows("window_embeddings") if with_windows else None,
        window_rows("timestamps") if with_windows else None)
    return arrays, count


def merge_files(paths: Sequence[str | os.PathLike], output: str | os.PathLike, overwrite: bool = False
                ) -> tuple[int, int]:
    """Merge shard archives into ``output`` (atomically); returns (inputs, shards).

    Raises:
        MergeError: the shards are missing, unreadable or not of one run; ``output`` exists.
        UsageError: ``output`` cannot be written (nothing is left there).
    """
    output = Path(output)
    if output.is_dir():
        raise UsageError(f"-o {output}: is a folder; merge writes one archive file, e.g. all.npz")
    if output.exists() and not overwrite:
        raise MergeError(f"{output}: exists; pass --overwrite to replace it")
    check_writable(output, "npz")
    arrays, count = merge(paths)
    try:
        save_archive(output, arrays)
    except OSError as exc:
        raise UsageError(f"-o {output}: cannot write: {exc.strerror or exc}") from exc
    return len(arrays["names"]), count
