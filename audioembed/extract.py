"""``audioembed extract`` as a function: find the inputs, plan the outputs, embed, write.

The click layer (``cli.py``) parses options and prints; :func:`run` does the work and returns a
:class:`RunReport`, so everything the command does can be tested without a subprocess.

A bad input never stops a batch: its one-line reason goes into ``RunReport.failures`` and the
other inputs are still embedded and written. Problems with the command line itself (an
impossible output, a bad option, a model that cannot be loaded) raise :class:`UsageError` before
anything is written.
"""
from __future__ import annotations

import glob
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Iterable, Sequence

import numpy as np
import torch
from safetensors import SafetensorError

from audioembed import api, frontend
from audioembed.audio_io import AUDIO_EXTENSIONS, silence_message
from audioembed.outputs import archive_arrays, atomic_write, save_archive, save_npy  # noqa: F401 (atomic_write: API)
from audioembed.shards import Shard

FORMATS = ("npy", "npz")
WINDOWS_SUFFIX = ".windows.npy"
TIMESTAMPS_SUFFIX = ".timestamps.npy"


class UsageError(ValueError):
    """The command line asks for something impossible; nothing has been written."""


@dataclass
class RunReport:
    """What a run did. ``failures`` and ``warnings`` are one-line messages naming their file."""

    total: int = 0  # audio inputs found, after folder and glob expansion
    succeeded: int = 0
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)
    destination: Path | None = None  # -o, or this shard's archive

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def exit_code(self) -> int:
        return 1 if self.failures else 0


@dataclass(frozen=True)
class Source:
    """One audio file to embed; ``rel`` is its name relative to the input it was found under."""

    path: Path
    rel: PurePath


def is_audio_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower().lstrip(".") in AUDIO_EXTENSIONS


def _scan_folder(root: Path, recursive: bool, failures: list[str]) -> list[Source]:
    def listing_failed(err: OSError) -> None:
        failures.append(f"{err.filename}: cannot list folder ({err.strerror or err})")

    found = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=listing_failed):
        # Hidden entries are skipped: macOS "._x.wav" resource forks are not audio.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
        found += [Source(Path(dirpath) / f, (Path(dirpath) / f).relative_to(root))
                  for f in filenames if is_audio_name(f) and not f.startswith(".")]
    return sorted(found, key=lambda s: s.rel.as_posix())


def _has_subfolders(folder: str) -> bool:
    try:
        return any(entry.is_dir() for entry in os.scandir(folder))
    except OSError:
        return False  # the listing failure is already reported


def _glob_base(pattern: str) -> str:
    """The folder part of ``pattern`` before its first wildcard: outputs mirror names below it."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return str(Path(*fixed)) if fixed else "."


def _expand_glob(pattern: str) -> list[Source]:
    base = _glob_base(pattern)
    found = [Source(Path(m), PurePath(os.path.relpath(m, base)))
             for m in glob.glob(pattern, recursive=True)
             if os.path.isfile(m) and is_audio_name(m)]
    return sorted(found, key=lambda s: s.rel.as_posix())


def expand_inputs(inputs: Iterable[str | os.PathLike], recursive: bool = False
                  ) -> tuple[list[Source], list[str]]:
    """Files to embed, and one-line failures for inputs that name none.

    An existing file is taken whatever its extension; a folder (its top level, or every level
    with ``recursive``) and a glob give their files with an audio extension, sorted by name.
    Arguments keep their order; a file reached twice is embedded once.
    """
    sources, failures, seen = [], [], set()
    for arg in inputs:
        arg = os.fspath(arg)
        if os.path.isdir(arg):
            found = _scan_folder(Path(arg), recursive, failures)
            if not found:
                hint = "" if recursive or not _has_subfolders(arg) else \
                    "; pass --recursive to search its subfolders"
                failures.append(f"{arg}: no audio files in this folder{hint}")
        elif os.path.lexists(arg):
            found = [Source(Path(arg), PurePath(Path(arg).name))]
        elif glob.has_magic(arg):
            found = _expand_glob(os.path.expanduser(arg))
            if not found:
                failures.append(f"{arg}: no audio files match this pattern")
        else:
            failures.append(f"{arg}: no such file or folder")
            found = []
        for src in found:
            key = os.path.realpath(src.path)
            if key not in seen:
                seen.add(key)
                sources.append(src)
    return sources, failures


def output_files(stem: Path, windows: bool) -> list[Path]:
    """Files written for one input in npy mode; the segment embedding ``STEM.npy`` comes last."""
    files = [Path(f"{stem}{WINDOWS_SUFFIX}"), Path(f"{stem}{TIMESTAMPS_SUFFIX}")] if windows else []
    return files + [Path(f"{stem}.npy")]


def _resolve_mode(output: Path, fmt: str | None) -> str:
    """``"single"`` (-o X.npy), ``"dir"`` (-o DIR) or ``"npz"`` (-o X.npz)."""
    suffix = output.suffix.lower()
    if fmt is None:
        fmt = "npz" if suffix == ".npz" else "npy"
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "npz":
        if suffix == ".npy":
            raise UsageError(f"-o {output}: --format npz writes one archive; name it e.g. embeddings.npz")
        if output.is_dir():
            raise UsageError(f"-o {output}: is a folder; --format npz writes one archive file, "
                             "e.g. -o embeddings.npz")
        return "npz"
    if suffix == ".npz":
        raise UsageError(f"-o {output}: --format npy cannot write an .npz archive; "
                         "drop --format or pass --format npz")
    if suffix == ".npy":
        if output.is_dir():
            raise UsageError(f"-o {output}: is a folder, but its name ends in .npy")
        return "single"
    if output.exists() and not output.is_dir():
        raise UsageError(f"-o {output}: exists and is not a folder; for many inputs -o names a "
                         "folder (one .npy per input), for one input end it in .npy")
    return "dir"


def _check_options(hop: float, batch_size: int, device: str | None, workers: int = 0) -> None:
    try:
        frontend.hop_frames(hop)
    except ValueError as exc:
        raise UsageError(f"--hop: {exc}") from exc
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise UsageError(f"--batch-size must be a positive integer, got {batch_size!r}")
    if not (isinstance(workers, int) and workers >= 0):
        raise UsageError(f"--workers must be a non-negative integer, got {workers!r}")
    if device is None:
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise UsageError(f"--device {device!r}: {exc}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: CUDA is not available on this machine")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {device}: MPS is not available on this machine")


# What loading a model raises for a missing, corrupt or unreachable model (ModelNotAvailableError
# is a RuntimeError, ModelFormatError a ValueError, Hub and file errors OSErrors).
MODEL_LOAD_ERRORS = (OSError, ValueError, RuntimeError, SafetensorError)


def default_workers(device: str | None, backend: str = "torch") -> int:
    """Feature threads when none are asked for: one, except for a CPU network on a machine
    with two cores or fewer, where the thread only competes with the network's own. (On the
    2-core development machines, ``benchmarks/bench_scale.py`` measured 0.909 of model-only
    throughput without it and 0.885 with it.)"""
    on_cpu = backend == "onnx" or device is None or torch.device(device).type == "cpu"
    return 0 if on_cpu and (os.cpu_count() or 1) <= 2 else 1


def load_model_for_cli(model, device: str | None, backend: str = "torch"):
    """``model`` loaded for ``backend``, or a UsageError naming ``--model`` and why it cannot be."""
    if backend not in api.BACKENDS:
        raise UsageError(f"--backend must be one of {', '.join(api.BACKENDS)}, got {backend!r}")
    if backend == "torch" and model is not None and os.fspath(model).endswith(".onnx"):
        raise UsageError(f"--model {model}: an ONNX file runs with --backend onnx")
    try:
        return api.resolve_backend(model, device, backend)
    except ImportError as exc:
        raise UsageError(str(exc)) from exc
    except MODEL_LOAD_ERRORS as exc:
        from audioembed.registry import DEFAULT_MODEL
        raise UsageError(f"--model {model or DEFAULT_MODEL}: {exc}") from exc


def _progress(total: int, enabled: bool, shard: Shard | None = None):
    if not enabled:
        return None
    from tqdm import tqdm
    desc = "embedding" if shard is None else f"embedding (shard {shard})"
    return tqdm(total=total, unit="file", desc=desc, file=sys.stderr, dynamic_ncols=True)


def run(inputs: Sequence[str | os.PathLike], output: str | os.PathLike, *, model=None,
        hop: float = frontend.DEFAULT_HOP_SECONDS, batch_size: int = api.DEFAULT_BATCH_SIZE,
        device: str | None = None, fmt: str | None = None, windows: bool = False,
        recursive: bool = False, overwrite: bool = False, progress: bool = False,
        shard: Shard | None = None, workers: int | None = None, backend: str = "torch") -> RunReport:
    """Embed ``inputs`` (files, folders, globs) and write them to ``output``.

    Output layout (``fmt`` None infers it from ``output``: ``.npz`` -> npz, otherwise npy):

    - ``X.npy``: one input; the ``(128,)`` segment embedding.
    - a folder: one ``.npy`` per input, mirroring its path below the folder or glob it was
      found under (a file argument gives its base name).
    - ``X.npz`` (npz): ``names`` (N,), ``embeddings`` (N, 128).

    With ``windows``, npy mode also writes ``STEM.windows.npy`` (n, 128) and
    ``STEM.timestamps.npy`` (n,) seconds beside each ``STEM.npy``; npz adds
    ``window_embeddings`` (W, 128), ``timestamps`` (W,) and ``offsets`` (N + 1,): input i's
    windows are rows ``offsets[i]:offsets[i + 1]``.

    ``workers`` threads read and analyse the files while the network runs (0: none; None:
    :func:`default_workers`); the outputs do not depend on it. ``backend="onnx"`` runs the
    network with onnxruntime (CPU; ``model`` may also be an ``.onnx`` file from ``export-onnx``).

    With ``shard`` K/N, only inputs i with i % N == K of the expanded list are embedded (npy:
    their usual files; npz: ``OUT.shard-K-of-N.npz``, see ``audioembed.shards``).

    Raises:
        UsageError: an impossible output, a bad option, or a model that cannot be loaded.
    """
    if not inputs:
        raise UsageError("no inputs given")
    output = Path(output)
    mode = _resolve_mode(output, fmt)
    _check_options(hop, batch_size, device, 0 if workers is None else workers)
    workers = default_workers(device, backend) if workers is None else workers
    sources, failures = expand_inputs(inputs, recursive)
    if mode == "single" and len(sources) > 1:
        raise UsageError(f"-o {output} holds one embedding, but the inputs name {len(sources)} "
                         "files; pass -o FOLDER (one .npy per input) or -o embeddings.npz")
    mine = list(shard.positions(len(sources))) if shard is not None else range(len(sources))
    archive = shard.archive(output) if shard is not None and mode == "npz" else output
    report = RunReport(total=len(mine), failures=failures, destination=archive)
    if mode == "npz":
        if archive.exists() and not overwrite:
            report.failures.append(f"{archive}: exists; pass --overwrite to replace it")
            return report
        tasks = [(sources[i], None, i) for i in mine]
    else:
        # Planned over every input, so that two inputs whose outputs collide are told apart the
        # same way whichever shards they fall in.
        planned = _plan(sources, output, mode, windows, overwrite)
        tasks = []
        for i in mine:
            stem, problem = planned[i]
            if problem is not None:
                report.failures.append(problem)
            else:
                tasks.append((sources[i], stem, i))
    if not tasks and not (mode == "npz" and shard is not None):
        return report
    net = load_model_for_cli(model, device, backend)
    features = api.iter_features([t[0].path for t in tasks], None, hop, workers)
    bar = _progress(len(tasks), progress, shard)
    done = []
    try:
        for res in api.iter_embeddings(features, net, batch_size):
            src, stem, pos = tasks[res.index]
            if res.silent:
                report.warnings.append(silence_message(res.name))
            if res.error is not None:
                report.failures.append(str(res.error))
            elif mode == "npz":
                done.append((src, res, pos))
            else:
                _write_item(stem, res, windows, report)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    # A shard writes its archive even when empty, so a merge can tell it ran.
    if mode == "npz" and (done or shard is not None):
        _write_archive(archive, done, windows, report, net.embedding_dim, shard)
    return report


def _plan(sources: list[Source], output: Path, mode: str, windows: bool, overwrite: bool
          ) -> list[tuple[Path | None, str | None]]:
    """``(output stem, None)`` or ``(None, reason)`` per input: outputs that exist or collide fail."""
    planned, claimed = [], {}
    for src in sources:
        stem = output.with_suffix("") if mode == "single" else output / src.rel.with_suffix("")
        files = output_files(stem, windows)
        clash = next((claimed[f] for f in files if f in claimed), None)
        if clash is not None:
            planned.append((None, f"{src.path}: its output {stem}.npy would also be written for "
                                  f"{clash}; rename one of them, or use --format npz"))
            continue
        # Claimed even when it exists and is not overwritten, so that which input owns a name
        # does not depend on what an earlier run (or another shard) has written.
        claimed.update((f, src.path) for f in files)
        existing = [f for f in files if f.exists()]
        if existing and not overwrite:
            planned.append((None, f"{existing[0]}: exists; pass --overwrite to replace it "
                                  f"(input {src.path})"))
            continue
        planned.append((stem, None))
    return planned


def _write_item(stem: Path, res: api.ItemResult, windows: bool, report: RunReport) -> None:
    arrays = [res.window_embeddings, res.timestamps] if windows else []
    arrays.append(res.embedding)
    files = output_files(stem, windows)
    try:
        for path, array in zip(files, arrays):
            save_npy(path, array)
    except OSError as exc:
        report.failures.append(f"{res.name}: cannot write {exc.filename or stem}: "
                               f"{exc.strerror or exc}")
        return
    report.succeeded += 1
    report.outputs.extend(files)


def _write_archive(output: Path, done: list, windows: bool, report: RunReport, dim: int,
                   shard: Shard | None) -> None:
    results = [res for _, res, _ in done]
    arrays = archive_arrays(
        [os.fspath(src.path) for src, _, _ in done], [res.embedding for res in results], dim,
        [res.window_embeddings for res in results] if windows else None,
        [res.timestamps for res in results] if windows else None)
    if shard is not None:
        arrays["indices"] = np.array([pos for _, _, pos in done], dtype=np.int64)
        arrays["shard"] = np.array([shard.index, shard.count], dtype=np.int64)
    try:
        save_archive(output, arrays)
    except OSError as exc:
        report.failures.append(f"{output}: cannot write: {exc.strerror or exc}")
        return
    report.succeeded += len(done)
    report.outputs.append(output)
