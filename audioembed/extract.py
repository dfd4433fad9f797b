"""``audioembed extract`` as a function: find the inputs, plan the outputs, embed, write.

The click layer (``cli.py``) parses options and prints; :func:`run` does the work and returns a
:class:`RunReport`, so everything the command does can be tested without a subprocess.

A bad input never stops a batch: its one-line reason goes into ``RunReport.failures`` and the
other inputs are still embedded and written. Problems with the command line itself (an
impossible output, a bad option, a model that cannot be loaded) raise :class:`UsageError` before
anything is written.
"""
from __future__ import annotations

import fnmatch
import glob
import os
import stat
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Iterable, Iterator, Sequence

import numpy as np
import soundfile as sf
import torch

from audioembed import api, frontend
from audioembed.audio_io import (STDIN_PATHS, AudioError, audio_files, check_regular_file, file_kind,
                                 is_audio_name, silence_message, walk_folders)
from audioembed.backends import choose_backend, default_workers, is_onnx_model, resolve_backend
from audioembed.errors import AudioembedError, InvalidArgumentError, MissingDependencyError, UsageError
from audioembed.outputs import (archive_arrays, check_writable, remove_stale_temp_files, save_archive,
                                save_npys)
from audioembed.precision import check_precision, precision_in_use, precision_on, with_precision
from audioembed.registry import DEFAULT_MODEL
from audioembed.shards import FINGERPRINT_KEY, Shard, run_fingerprint

FORMATS = ("npy", "npz")
WINDOWS_SUFFIX = ".windows.npy"
TIMESTAMPS_SUFFIX = ".timestamps.npy"
NAME_MAX = 255  # bytes in one file name on the usual file systems (ext4, XFS, APFS, NTFS)
# Seconds between progress lines when stderr is not a terminal (a log file, a job's output).
PROGRESS_INTERVAL = 30.0


@dataclass
class RunReport:
    """What a run did. ``failures`` and ``warnings`` are one-line messages naming their file."""

    total: int = 0  # audio inputs found, after folder and glob expansion
    succeeded: int = 0
    skipped: int = 0  # inputs whose outputs were already complete (skip_existing)
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # informational: skipped files, cleanup
    outputs: list[Path] = field(default_factory=list)
    destination: Path | None = None  # -o, or this shard's archive
    # Whether an interrupted run can go on with skip_existing: npy outputs are written as each
    # input is done, an npz archive only whole at the end.
    resumable: bool = True

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def exit_code(self) -> int:
        return 1 if self.failures else 0


class Interrupted(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt (see ``cli``)."""


@dataclass(frozen=True)
class Source:
    """One audio file to embed; ``rel`` is its name relative to the input it was found under."""

    path: Path
    rel: PurePath


def _scan_folder(root: Path, recursive: bool, failures: list[str], skipped: Counter,
                 repeated: list[Path]) -> list[Source]:
    """Audio files below ``root``; other visible files are counted in ``skipped`` by extension,
    linked folders not entered again in ``repeated``, and audio-named entries that are not
    regular files (a FIFO would block) fail."""
    def listing_failed(err: OSError) -> None:
        failures.append(f"{err.filename}: cannot list folder ({err.strerror or err})")

    found = []
    for path in audio_files(root, recursive, skipped=skipped, on_error=listing_failed,
                            repeated=repeated):
        try:
            mode = os.stat(path).st_mode
        except OSError:
            mode = None  # broken link or loop: reading it says which
        if mode is not None and not stat.S_ISREG(mode):
            failures.append(f"{path}: is {file_kind(mode)}, not a regular file; skipped")
            continue
        found.append(Source(path, path.relative_to(root)))
    return found


def skipped_note(skipped: Counter) -> str | None:
    """One line counting the files folder scans passed over, by extension."""
    if not skipped:
        return None
    n = sum(skipped.values())
    parts = ", ".join(f"{ext} {k}" for ext, k in sorted(skipped.items(), key=lambda e: (-e[1], e[0])))
    return (f"skipped {n} file{'s' * (n != 1)} without an audio extension in the folders searched "
            f"({parts}); name a file explicitly to try it anyway")


def _has_subfolders(folder: str) -> bool:
    try:
        return any(entry.is_dir() for entry in os.scandir(folder))
    except OSError:
        return False  # the listing failure is already reported


def repeated_note(repeated: list[Path]) -> str | None:
    """One line naming the linked folders that were not searched again."""
    if not repeated:
        return None
    n = len(repeated)
    names = ", ".join(str(p) for p in repeated[:5]) + (", ..." if n > 5 else "")
    return (f"did not search {n} linked folder{'s' * (n != 1)} again: {'they lead' if n != 1 else 'it leads'} "
            f"to a folder already searched (a link loop, or a second link to it): {names}")


def _glob_parts(pattern: str) -> tuple[str, list[str]]:
    """The folder part of ``pattern`` before its first wildcard (outputs mirror names below it),
    and the components after it."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return (str(Path(*fixed)) if fixed else "."), list(parts[len(fixed):])


def _glob_match(names: Sequence[str], pats: Sequence[str]) -> bool:
    """Whether the path components ``names`` match the pattern components ``pats`` as
    ``glob.glob(recursive=True)`` would: ``**`` spans any number of folders, and a wildcard
    never matches a leading ``.``."""
    if not pats:
        return not names
    if pats[0] == "**":
        for i in range(len(names) + 1):
            if _glob_match(names[i:], pats[1:]):
                return True
            if i < len(names) and names[i].startswith("."):
                return False
        return False
    if not names or (names[0].startswith(".") and not pats[0].startswith(".")):
        return False
    return fnmatch.fnmatchcase(names[0], pats[0]) and _glob_match(names[1:], pats[1:])


def _expand_glob(pattern: str, repeated: list[Path]) -> list[Source]:
    """The audio files ``pattern`` matches, found by the same loop-guarded walk as a folder
    (``glob.glob`` itself runs for ever on ``**`` over a link to ``.``)."""
    base, pats = _glob_parts(pattern)
    depth = None if "**" in pats else len(pats) - 1
    hidden = any(p.startswith(".") for p in pats)
    found = []
    for folder, names in walk_folders(base, depth, hidden=hidden, repeated=repeated):
        rel = folder.relative_to(base).parts if folder != Path(base) else ()
        for name in names:
            path = folder / name
            if is_audio_name(name) and _glob_match((*rel, name), pats) and path.is_file():
                found.append(Source(path, PurePath(*rel, name)))
    return sorted(found, key=lambda s: s.rel.as_posix())


def expand_inputs(inputs: Iterable[str | os.PathLike], recursive: bool = False,
                  skipped: Counter | None = None,
                  repeated: list[Path] | None = None) -> tuple[list[Source], list[str]]:
    """Files to embed, and one-line failures for inputs that name none.

    An existing file is taken whatever its extension; a folder (its top level, or every level
    with ``recursive``) and a glob give their files with an audio extension, sorted by name
    (``skipped`` counts the others of folders, by extension). Non-regular files (FIFOs,
    devices) fail, except ``/dev/stdin`` named explicitly. Arguments keep their order; a file
    reached twice is embedded once. Folders and globs follow links to folders, each real folder
    once (``repeated`` gets the links not entered again: loops, second links).
    """
    sources, failures, seen = [], [], set()
    skipped = Counter() if skipped is None else skipped
    repeated = [] if repeated is None else repeated
    for arg in inputs:
        arg = os.fsdecode(arg)
        if os.path.isdir(arg):
            found = _scan_folder(Path(arg), recursive, failures, skipped, repeated)
            if not found:
                hint = "" if recursive or not _has_subfolders(arg) else \
                    "; pass --recursive to search its subfolders"
                failures.append(f"{arg}: no audio files in this folder{hint}")
        elif os.path.lexists(arg):
            try:
                check_regular_file(arg)
            except AudioError as exc:
                failures.append(str(exc))
                continue
            found = [Source(Path(arg), PurePath(Path(arg).name))]
        elif glob.has_magic(arg):
            found = _expand_glob(os.path.expanduser(arg), repeated)
            if not found:
                failures.append(f"{arg}: no audio files match this pattern")
        else:
            failures.append(f"{arg}: no such file or folder")
            found = []
        for src in found:
            # /dev/stdin resolves to the pipe, or to whatever file the shell redirected.
            key = os.fspath(src.path) if os.fspath(src.path) in STDIN_PATHS else os.path.realpath(src.path)
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
    if dev.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"--device {device}: audioembed runs on cpu, cuda or mps")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: CUDA is not available on this machine")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {device}: MPS is not available on this machine")


def _check_precision(precision: str, backend: str, device: str | None) -> None:
    """A UsageError for a precision that cannot run with ``backend`` on ``device``."""
    try:
        check_precision(precision, backend)
        if backend == "torch":
            precision_on(precision, device or "cpu")
    except InvalidArgumentError as exc:
        raise UsageError(f"--precision: {exc}") from exc


# What loading a model raises for a missing, corrupt or unreachable model: ModelFormatError,
# ModelNotAvailableError and the option errors, all AudioembedErrors. Anything else is a bug.
MODEL_LOAD_ERRORS = (AudioembedError,)


def backend_for_cli(model, backend: str | None) -> str:
    """The backend that runs ``--model`` (:func:`audioembed.backends.choose_backend`: None
    picks onnx for an ``.onnx`` file, torch otherwise), or a UsageError naming the options."""
    if backend == "torch" and is_onnx_model(model):
        raise UsageError(f"--model {model}: an ONNX file runs with --backend onnx or onnx-int8 "
                         "(without --backend, onnx is chosen for it), not --backend torch")
    try:
        return choose_backend(model, backend)
    except InvalidArgumentError as exc:
        raise UsageError(f"--backend: {exc}") from exc


def load_model_for_cli(model, device: str | None, backend: str | None = "torch", *,
                       pooled: bool = False):
    """``model`` loaded for ``backend`` (None: :func:`backend_for_cli`'s choice; ``pooled`` as
    for :func:`audioembed.backends.resolve_backend`), or a UsageError naming ``--model`` and
    why it cannot be."""
    backend = backend_for_cli(model, backend)
    try:
        return resolve_backend(model, device, backend, pooled=pooled)
    except MissingDependencyError as exc:
        raise UsageError(str(exc)) from exc
    except MODEL_LOAD_ERRORS as exc:
        raise UsageError(f"--model {model or DEFAULT_MODEL}: {exc}") from exc


class Progress:
    """Progress in seconds of audio decoded: a tqdm bar on a terminal, else a plain line every
    ``interval`` seconds and one at the end (a log keeps lines, not carriage returns)."""

    def __init__(self, total_seconds: float, n_files: int, shard: Shard | None = None,
                 stream=None, interval: float = PROGRESS_INTERVAL):
        self.stream = sys.stderr if stream is None else stream
        self.total, self.n_files, self.done_files, self.seconds = total_seconds, n_files, 0, 0.0
        self.desc = "embedding" if shard is None else f"embedding (shard {shard})"
        self.interval, self._start = interval, time.monotonic()
        self._last = self._start
        self._bar = None
        isatty = getattr(self.stream, "isatty", None)
        if isatty is not None and isatty():
            from tqdm import tqdm
            self._bar = tqdm(total=round(total_seconds, 1), unit="s", desc=self.desc, file=self.stream,
                             dynamic_ncols=True, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s "
                             "of audio [{elapsed}<{remaining}]{postfix}")

    def advance(self, seconds: float) -> None:
        seconds = min(seconds, max(0.0, self.total - self.seconds))
        self.seconds += seconds
        if self._bar is not None:
            self._bar.update(round(seconds, 1))
        elif time.monotonic() - self._last >= self.interval:
            self._line()

    def file_done(self) -> None:
        self.done_files += 1
        if self._bar is not None:
            self._bar.set_postfix_str(f"{self.done_files}/{self.n_files} files", refresh=False)

    def _line(self) -> None:
        self._last = time.monotonic()
        pct = 100.0 * self.seconds / self.total if self.total else 100.0
        print(f"{self.desc}: {self.seconds:.1f} of {self.total:.1f} s of audio ({pct:.0f}%), "
              f"{self.done_files} of {self.n_files} files, {self._last - self._start:.0f} s elapsed",
              file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        else:
            self.seconds = self.total if self.done_files == self.n_files else self.seconds
            self._line()


def audio_seconds(path: Path) -> float:
    """The duration a file's header declares, or 0 when it cannot be read (or is a stream)."""
    if os.fspath(path) in STDIN_PATHS:
        return 0.0
    try:
        info = sf.info(os.fsencode(path))
        return info.frames / info.samplerate if info.samplerate > 0 and info.frames > 0 else 0.0
    except Exception:  # noqa: BLE001 - only a progress estimate; reading it reports the failure
        return 0.0


def _counted(chunks: Iterable, bar: Progress | None) -> Iterator:
    for chunk in chunks:
        if bar is not None:
            bar.advance(chunk.seconds)
        yield chunk


def run(inputs: Sequence[str | os.PathLike], output: str | os.PathLike, *, model=None,
        hop: float = frontend.DEFAULT_HOP_SECONDS, batch_size: int = api.DEFAULT_BATCH_SIZE,
        device: str | None = None, fmt: str | None = None, windows: bool = False,
        recursive: bool = False, overwrite: bool = False, progress: bool = False,
        shard: Shard | None = None, workers: int | None = None, backend: str | None = None,
        strict: bool = False, skip_existing: bool = False, progress_stream=None,
        layer: str = "embedding", precision: str = "auto") -> RunReport:
    """Embed ``inputs`` (files, folders, globs) and write them to ``output``.

    ``layer="pooled"`` writes the 2048-d pooled features per window and their mean and max
    (4096-d) per input instead of the 128-d embedding (``audioembed.api.segment_readout``).

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
    :func:`audioembed.backends.default_workers`); the outputs do not depend on it.
    ``backend="onnx"`` runs the network with onnxruntime (CPU; ``model`` may also be an ``.onnx``
    file from ``export-onnx``); None picks onnx for an ``.onnx`` file and torch otherwise.
    ``precision`` is :func:`audioembed.embed`'s (``"auto"``: bf16 on CUDA, fp32 elsewhere).

    With ``shard`` K/N, only inputs i with i % N == K of the expanded list are embedded (npy:
    their usual files; npz: ``OUT.shard-K-of-N.npz``, see ``audioembed.shards``).

    A file that holds less audio than its header declares is embedded from what it holds, with
    a warning; ``strict`` makes that, and all-zero audio, a failure of that input.
    ``skip_existing`` (npy) skips inputs whose outputs are all there and complete, to resume
    an interrupted folder job. Temporary files a killed run left in the output folders are
    removed first.

    Raises:
        UsageError: an impossible or unwritable output, a bad option, or a model that cannot
            be loaded; nothing has been written.
        KeyboardInterrupt: Ctrl-C, or :class:`Interrupted` (SIGTERM, see ``cli``): the file
            being written is finished or dropped; ``exc.report`` says what was done.
    """
    if not inputs:
        raise UsageError("no inputs given")
    if os.fspath(output) == "":
        raise UsageError("-o: the output path is empty; name a file (e.npy, all.npz) or a folder")
    output = Path(output)
    mode = _resolve_mode(output, fmt)
    _check_options(hop, batch_size, device, 0 if workers is None else workers)
    backend = backend_for_cli(model, backend)
    _check_precision(precision, backend, device)
    if skip_existing and overwrite:
        raise UsageError("--skip-existing and --overwrite contradict each other; pass one")
    if skip_existing and mode == "npz":
        raise UsageError("--skip-existing resumes npy outputs (one file per input); an npz "
                         "archive is written whole at the end")
    workers = default_workers(device, backend) if workers is None else workers
    skipped_ext: Counter = Counter()
    repeated: list[Path] = []
    sources, failures = expand_inputs(inputs, recursive, skipped_ext, repeated)
    if mode == "single" and len(sources) > 1:
        raise UsageError(f"-o {output} holds one embedding, but the inputs name {len(sources)} "
                         "files; pass -o FOLDER (one .npy per input) or -o embeddings.npz")
    check_writable(output, mode)
    mine = list(shard.positions(len(sources))) if shard is not None else range(len(sources))
    archive = shard.archive(output) if shard is not None and mode == "npz" else output
    report = RunReport(total=len(mine), failures=failures, destination=archive,
                       resumable=mode != "npz")
    report.notes.extend(n for n in (skipped_note(skipped_ext), repeated_note(repeated)) if n is not None)
    if mode == "npz":
        if archive.exists() and not overwrite:
            report.failures.append(f"{archive}: exists; pass --overwrite to replace it")
            return report
        tasks = [(sources[i], None, i) for i in mine]
        folders = {archive.parent}
    else:
        # Planned over every input, so that two inputs whose outputs collide are told apart the
        # same way whichever shards they fall in.
        planned = _plan(sources, output, mode, windows, overwrite, skip_existing)
        tasks = []
        for i in mine:
            stem, problem = planned[i]
            if problem is SKIP:
                report.skipped += 1
            elif problem is not None:
                report.failures.append(problem)
            else:
                tasks.append((sources[i], stem, i))
        folders = {output.parent if mode == "single" else output}
        folders.update(stem.parent for _, stem, _ in tasks)
    stale = remove_stale_temp_files(sorted(folders))
    if stale:
        report.notes.append(f"removed {len(stale)} temporary file{'s' * (len(stale) != 1)} left "
                            f"by an interrupted run in {', '.join(sorted({str(p.parent) for p in stale}))}")
    if report.skipped:
        report.notes.append(f"skipped {report.skipped} input{'s' * (report.skipped != 1)} whose "
                            "outputs are already complete (--skip-existing)")
    if not tasks and not (mode == "npz" and shard is not None):
        return report
    loaded = load_model_for_cli(model, device, backend, pooled=layer == "pooled")
    try:
        net = api.readout_network(loaded, layer)
    except InvalidArgumentError as exc:
        raise UsageError(f"--layer: {exc}") from exc
    net = with_precision(net, precision, backend)
    fingerprint = None
    if mode == "npz" and shard is not None:
        settings = {"model": model_identity(loaded, model), "backend": backend, "layer": layer,
                    "hop": hop, "frontend": frontend.config()}
        if precision_in_use(net) == "bf16":  # fp32 shards keep the fingerprint they always had
            settings["precision"] = "bf16"
        fingerprint = run_fingerprint([s.path for s in sources], settings)
    bar = None
    if progress:
        bar = Progress(sum(audio_seconds(t[0].path) for t in tasks), len(tasks), shard,
                       stream=progress_stream)
    features = _counted(api.iter_features([t[0].path for t in tasks], None, hop, workers), bar)
    done = []
    try:
        for res in api.iter_embeddings(features, net, batch_size, layer):
            src, stem, pos = tasks[res.index]
            problems = list(res.warnings) if res.error is None else []
            if res.error is None and res.silent:
                problems.append(silence_message(res.name, res.cancelled))
            if res.error is not None:
                report.failures.append(str(res.error))
            elif strict and problems:
                report.failures.extend(f"{line} (--strict)" for line in problems)
            else:
                report.warnings.extend(problems)
                if mode == "npz":
                    done.append((src, res, pos))
                else:
                    # --skip-existing rewrites an input's incomplete files.
                    _write_item(stem, res, windows, report, overwrite or skip_existing)
            if bar is not None:
                bar.file_done()
    except KeyboardInterrupt as exc:
        exc.report = report
        raise
    finally:
        if bar is not None:
            bar.close()
    # A shard writes its archive even when empty, so a merge can tell it ran.
    if mode == "npz" and (done or shard is not None):
        _write_archive(archive, done, windows, report, net.embedding_dim, shard, fingerprint,
                       overwrite)
    return report


def model_identity(net, model) -> str:
    """What tells one model's embeddings from another's: its weights' sha256 where known (a
    torch model, or an ONNX file exported from one), else the name it was given."""
    info = getattr(net, "info", None) or getattr(net, "metadata", None) or {}
    return info.get("sha256") or os.fspath(model or DEFAULT_MODEL)


SKIP = "skip"  # _plan's marker: the input's outputs are complete (skip_existing)


def npy_complete(path: Path) -> bool:
    """Whether ``path`` is a whole .npy file: its header parses and the data fills the rest."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read_header is None:
                return False
            shape, _, dtype = read_header(f)
            expected = f.tell() + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            return os.fstat(f.fileno()).st_size == expected
    except (OSError, ValueError, EOFError):
        return False


def _plan(sources: list[Source], output: Path, mode: str, windows: bool, overwrite: bool,
          skip_existing: bool = False) -> list[tuple[Path | None, str | None]]:
    """``(output stem, None)``, ``(None, reason)`` or ``(None, SKIP)`` per input: outputs that
    exist (unless overwritten or, complete, skipped), collide or cannot be named fail."""
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
        too_long = next((f for f in files if len(os.fsencode(f.name)) > NAME_MAX), None)
        if too_long is not None:
            planned.append((None, f"{src.path}: its output name {too_long.name} would be "
                                  f"{len(os.fsencode(too_long.name))} bytes, more than a file name "
                                  f"may hold ({NAME_MAX}); shorten the input's name"))
            continue
        existing = [f for f in files if f.exists()]
        if existing and skip_existing:
            # The segment embedding is written last, so its presence, whole, means the input's
            # other files were written before it.
            if all(npy_complete(f) for f in files):
                planned.append((None, SKIP))
                continue
        elif existing and not overwrite:
            planned.append((None, f"{existing[0]}: exists; pass --overwrite to replace it "
                                  f"(input {src.path})"))
            continue
        planned.append((stem, None))
    return planned


def _write_item(stem: Path, res: api.ItemResult, windows: bool, report: RunReport,
                replace: bool) -> None:
    """An input's npy files, written as one: a full disk leaves none of them, and unless
    ``replace`` a file another run wrote since the plan is not replaced (that input fails)."""
    arrays = [res.window_embeddings, res.timestamps] if windows else []
    arrays.append(res.embedding)
    files = output_files(stem, windows)
    try:
        save_npys(list(zip(files, arrays)), replace=replace)
    except Exception as exc:  # noqa: BLE001 - one output that cannot be written fails one input
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else f"{type(exc).__name__}: {exc}"
        target = exc.filename if isinstance(exc, OSError) and exc.filename else f"{stem}.npy"
        report.failures.append(f"{res.name}: cannot write {target}: {reason}")
        return
    report.succeeded += 1
    report.outputs.extend(files)


def _rescue_paths(output: Path) -> Iterator[Path]:
    """Where an archive that cannot be written at ``output`` is saved instead."""
    name = f"{output.stem}.rescued-{os.getpid()}{output.suffix}"
    yield Path(tempfile.gettempdir()) / name
    yield Path.cwd() / name


def _write_archive(output: Path, done: list, windows: bool, report: RunReport, dim: int,
                   shard: Shard | None, fingerprint: str | None = None, overwrite: bool = True) -> None:
    results = [res for _, res, _ in done]
    arrays = archive_arrays(
        [os.fspath(src.path) for src, _, _ in done], [res.embedding for res in results], dim,
        [res.window_embeddings for res in results] if windows else None,
        [res.timestamps for res in results] if windows else None)
    if shard is not None:
        arrays["indices"] = np.array([pos for _, _, pos in done], dtype=np.int64)
        arrays["shard"] = np.array([shard.index, shard.count], dtype=np.int64)
        arrays[FINGERPRINT_KEY] = np.array(fingerprint)
    try:
        save_archive(output, arrays, replace=overwrite)  # not over a file another run wrote since
    except OSError as exc:
        # The whole run's work is in this one file: save it elsewhere rather than lose it.
        for rescue in _rescue_paths(output):
            try:
                save_archive(rescue, arrays)
            except OSError:
                continue
            report.failures.append(f"{output}: cannot write: {exc.strerror or exc}; the "
                                   f"{len(done)} embeddings were saved to {rescue} instead")
            report.outputs.append(rescue)
            return
        report.failures.append(f"{output}: cannot write: {exc.strerror or exc}")
        return
    report.succeeded += len(done)
    report.outputs.append(output)
