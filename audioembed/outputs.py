"""Writing ``extract``'s outputs: atomic files, and the layout of an ``.npz`` archive.

An archive holds ``names`` (N,) and ``embeddings`` (N, D); with windows also
``window_embeddings`` (W, D), ``timestamps`` (W,) and ``offsets`` (N + 1,): input i's windows
are rows ``offsets[i]:offsets[i + 1]``. A shard's archive adds ``indices`` (N,), each input's
position in the whole run's input list, and ``shard`` = ``[K, N_SHARDS]``.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

WINDOW_KEYS = ("window_embeddings", "timestamps", "offsets")


def atomic_write(path: Path, write: Callable, fsync: bool = False) -> None:
    """``write(fileobj)`` into a temporary file beside ``path``, then rename it into place.

    A crash or a full disk leaves the old file (or none), never a partial one. ``fsync``
    also flushes the data to disk before the rename, for files a resume relies on.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    # os.open with 0o666 honours the umask, unlike mkstemp's 0o600.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, array, allow_pickle=False))


def archive_arrays(names: Sequence[str], embeddings: Sequence[np.ndarray], dim: int,
                   window_embeddings: Sequence[np.ndarray] | None = None,
                   timestamps: Sequence[np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The arrays of an archive of ``names`` (one ``(D,)`` embedding each, and with windows one
    ``(n, D)`` and ``(n,)`` pair each); ``dim`` shapes an archive of no inputs."""
    arrays = {
        "names": np.array([str(n) for n in names], dtype=str),
        "embeddings": np.stack(embeddings) if len(embeddings) else np.zeros((0, dim), np.float32),
    }
    if window_embeddings is not None:
        counts = [w.shape[0] for w in window_embeddings]
        arrays["window_embeddings"] = (np.concatenate(window_embeddings) if counts
                                       else np.zeros((0, dim), np.float32))
        arrays["timestamps"] = np.concatenate(timestamps) if counts else np.zeros(0, np.float64)
        arrays["offsets"] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return arrays


def save_archive(path: Path, arrays: dict[str, np.ndarray]) -> None:
    atomic_write(path, lambda f: np.savez(f, **arrays))
