"""Writing ``extract``'s outputs: atomic files, and the layout of an ``.npz`` archive.

An archive holds ``names`` (N,) and ``embeddings`` (N, D); with windows also
``window_embeddings`` (W, D), ``timestamps`` (W,) and ``offsets`` (N + 1,): input i's windows
are rows ``offsets[i]:offsets[i + 1]``. A shard's archive adds ``indices`` (N,), each input's
position in the whole run's input list, and ``shard`` = ``[K, N_SHARDS]``.
"""
from __future__ import annotations

import csv
import errno
import io
import os
import re
import secrets
import socket
import time
import zipfile
import zlib
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from audioembed.errors import AudioembedError, UsageError

WINDOW_KEYS = ("window_embeddings", "timestamps", "offsets")

# Temporary files are named ".audioembed-HOST-PID-RANDOM.tmp": short, so that a legal 255-byte
# output name still has a legal temporary name beside it, and marked with the host and process
# that wrote them, so that a later run can tell its own stale files (from a killed run) from
# those another live process (a shard on this or another machine) is writing.
_TMP_RE = re.compile(r"^\.audioembed-([0-9a-f]{8})-(\d+)-[0-9a-f]{8}\.tmp$")
# Before the short names: ".NAME.npy.XXXXXXXX.tmp".
_OLD_TMP_RE = re.compile(r"^\..+\.npy\.[0-9a-f]{8}\.tmp$|^\..+\.npz\.[0-9a-f]{8}\.tmp$")
# A temporary file untouched for this long is stale whoever wrote it: even a large archive is
# written in seconds.
STALE_SECONDS = 3600


def _host_tag() -> str:
    return f"{zlib.crc32(socket.gethostname().encode()):08x}"


def temp_name() -> str:
    return f".audioembed-{_host_tag()}-{os.getpid()}-{secrets.token_hex(4)}.tmp"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as err:
        return err.errno == errno.EPERM  # exists, owned by someone else
    return True


def remove_stale_temp_files(folders: Iterable[Path]) -> list[Path]:
    """Remove audioembed's temporary files left in ``folders`` by killed runs; return them.

    A file is stale when the process that wrote it (on this host) is gone, or when nothing has
    touched it for ``STALE_SECONDS`` (another host's, or one of the older long names). Files of
    live processes, and anything not named like ours, are left alone.
    """
    removed = []
    host, now = _host_tag(), time.time()
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue  # not there yet, or unreadable: the write check reports the latter
        for entry in entries:
            m = _TMP_RE.match(entry.name)
            if m is None and not _OLD_TMP_RE.match(entry.name):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            dead = m is not None and m.group(1) == host and not _pid_alive(int(m.group(2)))
            if dead or now - st.st_mtime > STALE_SECONDS:
                try:
                    os.unlink(entry.path)
                except OSError:
                    continue
                removed.append(Path(entry.path))
    return removed


def _named(exc: OSError, tmp: Path, path: Path) -> None:
    """Make ``exc`` name ``path`` where it names its temporary file ``tmp``."""
    if exc.filename is not None and os.fspath(exc.filename) == os.fspath(tmp):
        exc.filename = os.fspath(path)


# What os.link raises where the file system has no hard links (FAT, some network mounts).
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.ENOSYS}


def _place(tmp: Path, path: Path, replace: bool) -> None:
    """Move the finished ``tmp`` to ``path``. Unless ``replace``, an existing ``path`` (say,
    written meanwhile by another run) raises FileExistsError and is left alone: the new name is
    created exclusively, as a hard link, where the file system has them."""
    if replace:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path, follow_symlinks=False)
    except FileExistsError as exc:
        raise FileExistsError(errno.EEXIST, "exists; pass --overwrite to replace it",
                              os.fspath(path)) from exc
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "exists; pass --overwrite to replace it",
                                  os.fspath(path)) from exc
        os.replace(tmp, path)
        return
    tmp.unlink()


def atomic_create_all(items: Sequence[tuple[Path, Callable[[Path], None]]], replace: bool = True) -> None:
    """Create several files as one: each ``create(tmp)`` makes its file at a temporary name
    beside its path, and only once all are made are they moved into place, in order. A crash
    or a full disk leaves the old files (or none), never a partial file nor a partial set.

    Unless ``replace``, a path that exists when its turn comes (another run wrote it since it
    was checked) raises FileExistsError naming it, and the files this call had already placed
    are removed again. An OSError names the final path, never a temporary file.
    """
    made, placed = [], []
    try:
        for path, create in items:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.parent / temp_name()
            made.append((tmp, path))
            create(tmp)
        for tmp, path in made:
            _place(tmp, path, replace)
            placed.append(path)
    except OSError as exc:
        _undo(made, placed, replace)
        for tmp, path in made:
            _named(exc, tmp, path)
        raise
    except BaseException:
        _undo(made, placed, replace)
        raise


def _undo(made: list[tuple[Path, Path]], placed: list[Path], replace: bool) -> None:
    for tmp, _ in made:
        tmp.unlink(missing_ok=True)
    if not replace:  # created exclusively by this call: nobody else's
        for path in placed:
            path.unlink(missing_ok=True)


def atomic_create(path: Path, create: Callable[[Path], None], replace: bool = True) -> None:
    """``create(tmp)`` makes the file at a temporary name beside ``path``; it is then renamed
    into place (:func:`atomic_create_all` of one file)."""
    atomic_create_all([(path, create)], replace)


def _writer(write: Callable, fsync: bool) -> Callable[[Path], None]:
    def create(tmp: Path) -> None:
        # os.open with 0o666 honours the umask, unlike mkstemp's 0o600.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
    return create


def atomic_write(path: Path, write: Callable, fsync: bool = False, replace: bool = True) -> None:
    """``write(fileobj)`` into a temporary file beside ``path``, then rename it into place
    (:func:`atomic_create`). ``fsync`` also flushes the data to disk before the rename, for
    files a resume relies on."""
    atomic_create(path, _writer(write, fsync), replace)


def write_csv(path: Path, rows: Iterable[Sequence], lineterminator: str = "\n") -> None:
    """``rows`` as a UTF-8 CSV file at ``path``, written whole or not at all (:func:`atomic_write`)."""
    buf = io.StringIO(newline="")
    csv.writer(buf, lineterminator=lineterminator).writerows(rows)
    atomic_write(Path(path), lambda f: f.write(buf.getvalue().encode("utf-8")))


def save_npys(files: Sequence[tuple[Path, np.ndarray]], replace: bool = True) -> None:
    """Several ``.npy`` files written as one (:func:`atomic_create_all`)."""
    atomic_create_all([(path, _writer(lambda f, a=array: np.save(f, a, allow_pickle=False), False))
                       for path, array in files], replace)


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


class ArchiveError(AudioembedError, ValueError):
    """A file that cannot be read as an npz archive; the message names it and says why."""


# What numpy raises on a truncated, corrupt (bad CRC, bad deflate data) or empty archive.
_ARCHIVE_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


def read_archive(path: str | os.PathLike, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The arrays of the npz archive at ``path``: all of them, or those of ``keys`` it holds."""
    try:
        z = np.load(path, allow_pickle=False)
    except _ARCHIVE_READ_ERRORS as exc:
        raise ArchiveError(f"{path}: cannot be read as an npz archive ({exc or type(exc).__name__})"
                           ) from exc
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ArchiveError(f"{path}: holds a single array (.npy), not an npz archive")
    try:
        with z:
            return {k: z[k] for k in z.files if keys is None or k in keys}
    except _ARCHIVE_READ_ERRORS as exc:
        raise ArchiveError(f"{path}: cannot be read as an npz archive, it is truncated or "
                           f"corrupt ({exc or type(exc).__name__})") from exc


def save_archive(path: Path, arrays: dict[str, np.ndarray], replace: bool = True) -> None:
    atomic_write(path, lambda f: np.savez(f, **arrays), replace=replace)


def check_writable(output: Path, mode: str) -> None:
    """Raise a UsageError, naming the real path, unless outputs can be created where ``output``
    says; checked before any work, by creating (and removing) a file there."""
    for path in (output, *output.parents):
        if path.is_symlink() and not path.exists():
            # Writing through it would fail for every input, after all the work.
            raise UsageError(f"-o {output}: {path} is a symbolic link to {os.readlink(path)}, "
                             "which does not exist")
    target = output if mode == "dir" else output.parent
    folder = target
    while not folder.exists():
        if folder.parent == folder:
            break
        folder = folder.parent
    if not folder.is_dir():
        raise UsageError(f"-o {output}: {folder} is a file, so {target} cannot be created as a folder")
    probe = folder / temp_name()
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        os.unlink(probe)
    except OSError as exc:
        where = "" if folder == target else f" (it would be created in {folder})"
        raise UsageError(f"-o {output}: cannot write to {folder}{where}: "
                         f"{exc.strerror or exc}") from exc
