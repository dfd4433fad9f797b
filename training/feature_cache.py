"""A memory-mapped cache of mel energies, computed once per file (paper section 4.1 frontend).

The triplet samplers of section 3.2 work in the linear mel-energy domain and draw millions of
random windows, so decoding and resampling each file on every draw would dominate training.
``build_cache`` decodes every file once and appends ``frontend.mel_energies`` to fp16 blocks.

Layout of a cache folder::

    cache.json              format, CACHE_SCALE, frontend config, manifest sha256, totals
    block-00000.f16         raw little-endian float16, (frames, N_MELS), C order
    block-00000.json        index of that block: per file key, recording, labels, offset, frames
    failures.json           files that could not be decoded (one-line reasons)

("Blocks", not "shards": ``audioembed extract --shard`` shards are outputs of parallel jobs.
Caches built before the rename hold ``shard-*`` files of the same format; they are read as they
are, and a resumed build appends ``block-*`` files numbered after them.)

A block is finalized atomically: its data is written to a ``.tmp`` file, flushed, renamed, and
only then is its index written (itself via a temp file and ``os.replace``). A block without an
index is unfinished; a rerun deletes it and redoes its files, and skips every file listed in a
finalized index, so an interrupted build resumes where it stopped.

fp16 tops out at 65504, and a loud signal's mel energies exceed 1e4 per band (a full-scale sine
peaks near 1e4, clipped square waves go higher), so energies are stored multiplied by
``CACHE_SCALE = 2**-8`` and multiplied back on read. Being a power of two, the scale itself
costs no precision. Values that still overflow are clipped to the fp16 maximum and counted.
At the bottom end, an energy of ``frontend.LOG_OFFSET`` (1e-4) is stored as a subnormal with
about 8% relative error, which moves ``log(e + LOG_OFFSET)`` by at most about 4%; quieter
frames are dominated by the offset anyway.

A *recording* groups files for temporal proximity (section 3.2): its frames are the
concatenation of its files' frames in manifest order. By default every file is its own
recording (as in the Debian corpus).
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import sys
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from audioembed import frontend
from audioembed.audio_io import audio_files
from audioembed.errors import AudioembedError
from audioembed.model_folder import sha256_file
from audioembed.outputs import atomic_write

CACHE_FORMAT = 1
CACHE_SCALE = 2.0 ** -8
FP16_MAX = float(np.finfo(np.float16).max)
META_NAME = "cache.json"
FAILURES_NAME = "failures.json"
BLOCK_FRAMES = 1 << 20  # 128 MiB of fp16 per block: ~2.9 h of audio
# Block files are named PREFIX-NNNNN.*; "shard" is the name caches had before the rename.
BLOCK_PREFIXES = ("block", "shard")
LABEL_SEPARATOR = ";"
# Frames computed per STFT call, so an hour-long file does not need a 1 GB complex spectrogram.
CHUNK_FRAMES = 6000


class CacheError(AudioembedError, ValueError):
    """A cache folder or manifest that cannot be used."""


@dataclass(frozen=True)
class ManifestEntry:
    """One audio file to cache: where it is, its key in the cache, labels, and recording id."""

    path: str
    key: str
    recording: str
    labels: tuple[str, ...] = ()
    order: int = 0


def _split_labels(text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    return tuple(sorted({t.strip() for t in text.split(LABEL_SEPARATOR) if t.strip()}))


def read_manifest(manifest: str | os.PathLike, root: str | os.PathLike | None = None) -> list[ManifestEntry]:
    """Entries of a manifest CSV, or of every audio file under a folder.

    CSV forms (with a header row):

    - ``path[,label][,recording]``: ``path`` relative to ``root`` (or absolute); ``label`` holds
      zero or more labels separated by ``;``; ``recording`` defaults to the path.
    - ``package,path,duration_s`` (the corpus manifests): the file is ``root/package/path`` and
      its recording id is ``package/path``.
    """
    manifest = Path(manifest)
    root_dir = Path(root) if root is not None else None
    if manifest.is_dir():
        base = manifest
        files = audio_files(base)
        out = []
        for i, p in enumerate(files):
            key = p.relative_to(base).as_posix()
            out.append(ManifestEntry(path=str(p), key=key, recording=key, order=i))
        return out
    if not manifest.is_file():
        raise CacheError(f"{manifest}: no such manifest file or folder")
    base = root_dir if root_dir is not None else manifest.parent
    with open(manifest, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = set(reader.fieldnames or ())
        if "path" not in fields:
            raise CacheError(f"{manifest}: needs a 'path' column (header row), got {sorted(fields)}")
        corpus_form = "package" in fields
        out = []
        for i, row in enumerate(reader):
            rel = (row.get("path") or "").strip()
            if not rel:
                raise CacheError(f"{manifest}: row {i + 2} has an empty path")
            if corpus_form:
                key = f"{row['package'].strip()}/{rel}"
            else:
                key = rel
            full = Path(key) if Path(key).is_absolute() else base / key
            recording = (row.get("recording") or "").strip() or key
            out.append(ManifestEntry(path=str(full), key=key, recording=recording,
                                     labels=_split_labels(row.get("label")), order=i))
    keys = [e.key for e in out]
    if len(set(keys)) != len(keys):
        raise CacheError(f"{manifest}: the same file is listed more than once")
    return out


def sha256_of(path: str | os.PathLike) -> str | None:
    """sha256 of a manifest file; for a folder, of its sorted file list (names and sizes)."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_dir():
        for p in sorted(q for q in path.rglob("*") if q.is_file()):
            h.update(f"{p.relative_to(path).as_posix()}\t{p.stat().st_size}\n".encode())
        return h.hexdigest()
    return sha256_file(path) if path.is_file() else None


def chunked_mel_energies(waveform) -> np.ndarray:
    """``frontend.mel_energies`` of a long waveform, computed ``CHUNK_FRAMES`` frames at a time.

    ``audioembed.streaming.FrameStream`` gives each chunk the samples its frames read on both
    sides, so the frames equal one whole-file call's.
    """
    import torch

    from audioembed.streaming import FrameStream

    stream, step = FrameStream(), CHUNK_FRAMES * frontend.HOP_LENGTH
    parts = [stream.push(waveform[a:a + step]) for a in range(0, waveform.shape[-1], step)]
    return torch.cat(parts + [stream.finish()]).numpy()


def to_stored(energies: np.ndarray) -> tuple[np.ndarray, int]:
    """Scale float energies into the fp16 storage domain; returns (fp16 array, clipped count)."""
    scaled = np.asarray(energies, dtype=np.float32) * np.float32(CACHE_SCALE)
    clipped = int(np.count_nonzero(scaled > FP16_MAX))
    if clipped:
        np.minimum(scaled, FP16_MAX, out=scaled)
    return scaled.astype(np.float16), clipped


def _init_worker() -> None:
    import torch

    # Each decode worker is one process; letting each spawn a full thread pool oversubscribes.
    torch.set_num_threads(1)


def _process(path: str) -> tuple[np.ndarray | None, int, str | None]:
    """Decode, resample and analyse one file: (fp16 stored energies, clipped count, error)."""
    import warnings

    from audioembed.audio_io import AudioError, SilentAudioWarning, load_waveform

    try:
        with warnings.catch_warnings():
            # A silent file is valid training data (it gives zero-energy windows).
            warnings.simplefilter("ignore", SilentAudioWarning)
            wav = load_waveform(path)
    except AudioError as exc:
        return None, 0, str(exc)
    stored, clipped = to_stored(chunked_mel_energies(wav))
    return stored, clipped, None


def _atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")), fsync=True)


class CacheWriter:
    """Appends files' stored energies to blocks; finalizes a block when it is full or on close.

    Usable directly to build a cache from arrays (tests, benchmarks)::

        with CacheWriter(out) as w:
            w.add("a.wav", energies)          # float32 (frames, N_MELS)
    """

    def __init__(self, out: str | os.PathLike, block_frames: int = BLOCK_FRAMES, meta: dict | None = None):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.block_frames = int(block_frames)
        self.clipped = 0
        self._done = self._finalized_keys()
        self._next_block = self._next_block_number()
        self._file = None
        self._entries: list[dict] = []
        self._frames = 0
        for tmp in _block_files(self.out, "tmp"):
            tmp.unlink()  # an unfinished block from an interrupted run; its files are redone
        self._meta = {"format": CACHE_FORMAT, "cache_scale": CACHE_SCALE, "n_mels": frontend.N_MELS,
                      "dtype": "float16", "frontend": frontend.config(), **(meta or {})}
        _atomic_write_text(self.out / META_NAME, json.dumps(self._meta, indent=2, sort_keys=True) + "\n")

    def _finalized_keys(self) -> set[str]:
        keys = set()
        for idx in _block_files(self.out, "json"):
            keys.update(e["key"] for e in json.loads(idx.read_text())["files"])
        return keys

    def _next_block_number(self) -> int:
        nums = [int(p.stem.split("-", 1)[1]) for p in _block_files(self.out, "json")]
        return max(nums) + 1 if nums else 0

    def is_done(self, key: str) -> bool:
        """Whether ``key`` is already in a finalized block (so a resumed build skips it)."""
        return key in self._done

    def add(self, key: str, energies: np.ndarray, recording: str | None = None,
            labels: Iterable[str] = (), order: int | None = None, stored: bool = False,
            clipped: int = 0) -> None:
        """Append one file's energies (float32, or already-stored fp16 with ``stored=True``)."""
        if stored:
            data = np.ascontiguousarray(energies, dtype=np.float16)
        else:
            data, clipped = to_stored(energies)
        if data.ndim != 2 or data.shape[1] != frontend.N_MELS:
            raise CacheError(f"{key}: expected (frames, {frontend.N_MELS}) energies, got {data.shape}")
        if self._file is None:
            name = f"{BLOCK_PREFIXES[0]}-{self._next_block:05d}"
            self._tmp = self.out / f"{name}.tmp"
            self._name = name
            self._file = open(self._tmp, "wb")
        self._file.write(data.tobytes())
        self._entries.append({"key": key, "recording": recording if recording is not None else key,
                              "labels": sorted(labels), "order": len(self._done) if order is None else order,
                              "offset": self._frames, "frames": int(data.shape[0]), "clipped": int(clipped)})
        self._done.add(key)
        self._frames += int(data.shape[0])
        self.clipped += int(clipped)
        if self._frames >= self.block_frames:
            self.finalize_block()

    def finalize_block(self) -> None:
        """Make the current block durable and visible to readers and to resumed builds."""
        if self._file is None:
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        os.replace(self._tmp, self.out / f"{self._name}.f16")
        index = {"data": f"{self._name}.f16", "frames": self._frames, "files": self._entries}
        _atomic_write_text(self.out / f"{self._name}.json", json.dumps(index) + "\n")
        self._next_block += 1
        self._entries, self._frames = [], 0

    def close(self, extra_meta: dict | None = None) -> None:
        self.finalize_block()
        if extra_meta:
            self._meta.update(extra_meta)
            _atomic_write_text(self.out / META_NAME, json.dumps(self._meta, indent=2, sort_keys=True) + "\n")

    def __enter__(self) -> "CacheWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif self._file is not None:
            # Interrupted: leave the partial block as .tmp, which the next run discards.
            self._file.close()
            self._file = None


@dataclass
class BuildReport:
    """What ``build_cache`` did: counts, failures (one-line reasons), clipped fp16 values."""

    total: int = 0
    skipped: int = 0
    added: int = 0
    failures: list[str] = field(default_factory=list)
    clipped: int = 0
    frames: int = 0


def _results(paths: list[str], jobs: int) -> Iterator[tuple[np.ndarray | None, int, str | None]]:
    """Results of ``_process`` in input order, with at most ``2 * jobs`` files in flight so memory
    stays bounded however far the decoders run ahead of the writer."""
    if jobs <= 1:
        for p in paths:
            yield _process(p)
        return
    with ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker) as pool:
        pending: deque = deque()
        it = iter(paths)
        for p in it:
            pending.append(pool.submit(_process, p))
            if len(pending) >= 2 * jobs:
                break
        while pending:
            yield pending.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(_process, nxt))


def build_cache(manifest: str | os.PathLike, out: str | os.PathLike, root: str | os.PathLike | None = None,
                jobs: int = 1, block_frames: int = BLOCK_FRAMES, progress: bool = True) -> BuildReport:
    """Decode every manifest file once into the cache at ``out``; resumes an interrupted build."""
    entries = read_manifest(manifest, root)
    meta = {"manifest": str(Path(manifest).resolve()), "manifest_sha256": sha256_of(manifest),
            "root": str(Path(root).resolve()) if root is not None else None}
    writer = CacheWriter(out, block_frames=block_frames, meta=meta)
    report = BuildReport(total=len(entries))
    todo = [e for e in entries if not writer.is_done(e.key)]
    report.skipped = len(entries) - len(todo)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(todo), unit="file", desc="caching", file=sys.stderr)
    try:
        for entry, (stored, clipped, error) in zip(todo, _results([e.path for e in todo], jobs)):
            if error is not None:
                report.failures.append(error)
            else:
                writer.add(entry.key, stored, recording=entry.recording, labels=entry.labels,
                           order=entry.order, stored=True, clipped=clipped)
                report.added += 1
                report.frames += int(stored.shape[0])
                report.clipped += clipped
            if bar is not None:
                bar.update(1)
    except BaseException:
        writer.__exit__(*sys.exc_info())
        raise
    finally:
        if bar is not None:
            bar.close()
    _atomic_write_text(Path(out) / FAILURES_NAME, json.dumps(report.failures, indent=1) + "\n")
    writer.finalize_block()
    indexes = _load_indexes(Path(out))
    # Totals over all finalized blocks, so a resumed build reports the whole cache.
    writer.close(extra_meta={"files": sum(len(i["files"]) for i in indexes),
                             "frames": sum(i["frames"] for i in indexes),
                             "files_failed": len(report.failures),
                             "clipped_values": sum(f["clipped"] for i in indexes for f in i["files"]),
                             "complete": True})
    return report


def _block_files(folder: Path, suffix: str) -> list[Path]:
    """The ``*.suffix`` files of every block, old ``shard-`` ones first, each in number order."""
    return [p for prefix in reversed(BLOCK_PREFIXES) for p in sorted(folder.glob(f"{prefix}-*.{suffix}"))]


def _load_indexes(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in _block_files(folder, "json")]


class FeatureCache:
    """Read access to a cache folder: float32 mel energies via memory maps.

    Recordings are numbered ``0..num_recordings-1`` in sorted order of their ids; a recording's
    frames are its files' frames concatenated in manifest order. Memory maps open lazily, so a
    ``FeatureCache`` pickles cheaply into DataLoader workers.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        meta_path = self.path / META_NAME
        if not meta_path.is_file():
            raise CacheError(f"{self.path}: no {META_NAME}; not a feature cache (build one with "
                             "python -m training cache)")
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format") != CACHE_FORMAT:
            raise CacheError(f"{meta_path}: cache format {self.meta.get('format')!r} is not {CACHE_FORMAT}")
        mismatches = frontend.config_mismatches(self.meta.get("frontend", {}))
        if mismatches:
            raise CacheError(f"{meta_path}: built with a different frontend: " + "; ".join(mismatches))
        self.scale = float(self.meta["cache_scale"])
        files = []
        self._block_names: list[str] = []
        for idx in _load_indexes(self.path):
            block = len(self._block_names)
            self._block_names.append(idx.get("data") or idx["shard"])  # "shard": the old key
            files += [dict(f, block=block) for f in idx["files"]]
        if not files:
            raise CacheError(f"{self.path}: the cache holds no files")
        files.sort(key=lambda f: (f["recording"], f["order"], f["key"]))
        self.recording_ids: list[str] = []
        self.file_keys = [f["key"] for f in files]
        self.file_labels: list[frozenset[str]] = [frozenset(f["labels"]) for f in files]
        self.file_block = np.array([f["block"] for f in files], dtype=np.int64)
        self.file_offset = np.array([f["offset"] for f in files], dtype=np.int64)
        self.file_frames = np.array([f["frames"] for f in files], dtype=np.int64)
        rec_of_file, start_in_rec = [], []
        self._rec_files: list[np.ndarray] = []
        lengths = []
        for i, f in enumerate(files):
            if not self.recording_ids or self.recording_ids[-1] != f["recording"]:
                self.recording_ids.append(f["recording"])
                self._rec_files.append([])
                lengths.append(0)
            rec_of_file.append(len(self.recording_ids) - 1)
            start_in_rec.append(lengths[-1])
            self._rec_files[-1].append(i)
            lengths[-1] += f["frames"]
        self.file_recording = np.array(rec_of_file, dtype=np.int64)
        self.file_start = np.array(start_in_rec, dtype=np.int64)  # first frame within its recording
        self.lengths = np.array(lengths, dtype=np.int64)
        self._rec_files = [np.array(r, dtype=np.int64) for r in self._rec_files]
        self._maps: list[np.memmap | None] = [None] * len(self._block_names)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_maps"] = [None] * len(self._block_names)
        return state

    @property
    def num_recordings(self) -> int:
        return len(self.recording_ids)

    @property
    def num_files(self) -> int:
        return len(self.file_keys)

    def _map(self, block: int) -> np.memmap:
        m = self._maps[block]
        if m is None:
            p = self.path / self._block_names[block]
            n = p.stat().st_size // (2 * frontend.N_MELS)
            m = np.memmap(p, dtype=np.float16, mode="r", shape=(n, frontend.N_MELS))
            self._maps[block] = m
        return m

    def _file_slice(self, f: int, a: int, b: int) -> np.ndarray:
        """Stored fp16 frames ``[a, b)`` of file ``f`` (clamped to the file)."""
        off = self.file_offset[f]
        return self._map(self.file_block[f])[off + a:off + b]

    def fingerprint(self) -> str:
        """sha256 of what the cache holds, however it was built (blocks, order, resumes): each
        file's key, recording, labels and stored energies, in key order."""
        h = hashlib.sha256()
        for f in sorted(range(self.num_files), key=self.file_keys.__getitem__):
            frames = int(self.file_frames[f])
            head = [self.file_keys[f], self.recording_ids[self.file_recording[f]],
                    sorted(self.file_labels[f]), frames]
            h.update(json.dumps(head).encode("utf-8"))
            h.update(np.ascontiguousarray(self._file_slice(f, 0, frames), dtype="<f2").tobytes())
        return h.hexdigest()

    def seconds(self) -> float:
        """The audio the cache holds, in seconds (frames of ``frontend.HOP_LENGTH`` samples)."""
        return float(self.file_frames.sum()) * frontend.HOP_LENGTH / frontend.SAMPLE_RATE

    def _decode(self, stored: np.ndarray, out: np.ndarray) -> None:
        np.multiply(stored, np.float32(1.0 / self.scale), out=out, casting="unsafe")

    def frames(self, rec_id: int) -> np.ndarray:
        """All mel energies of a recording, float32 ``(n_frames, N_MELS)``."""
        n = int(self.lengths[rec_id])
        out = np.empty((n, frontend.N_MELS), dtype=np.float32)
        for f in self._rec_files[rec_id]:
            s, k = int(self.file_start[f]), int(self.file_frames[f])
            self._decode(self._file_slice(f, 0, k), out[s:s + k])
        return out

    def window(self, rec_id: int, start_frame: int) -> np.ndarray:
        """A ``(WINDOW_FRAMES, N_MELS)`` float32 window of a recording; zero energy past its end."""
        out = np.zeros((frontend.WINDOW_FRAMES, frontend.N_MELS), dtype=np.float32)
        start = int(start_frame)
        end = start + frontend.WINDOW_FRAMES
        files = self._rec_files[rec_id]
        if len(files) == 1:
            f = files[0]
            lo, hi = max(start, 0), min(end, int(self.file_frames[f]))
            if hi > lo:
                self._decode(self._file_slice(f, lo, hi), out[lo - start:hi - start])
            return out
        for f in files:
            fs, fk = int(self.file_start[f]), int(self.file_frames[f])
            lo, hi = max(start, fs), min(end, fs + fk)
            if hi > lo:
                self._decode(self._file_slice(f, lo - fs, hi - fs), out[lo - start:hi - start])
        return out

    def file_window(self, file_id: int, start_frame: int) -> np.ndarray:
        """A window within one file (zero energy past the file's end, not its recording's)."""
        out = np.zeros((frontend.WINDOW_FRAMES, frontend.N_MELS), dtype=np.float32)
        start = int(start_frame)
        lo, hi = max(start, 0), min(start + frontend.WINDOW_FRAMES, int(self.file_frames[file_id]))
        if hi > lo:
            self._decode(self._file_slice(file_id, lo, hi), out[lo - start:hi - start])
        return out

    @cached_property
    def long_recording_files(self) -> np.ndarray:
        """Files whose recording is longer than one window (temporal proximity's anchors)."""
        return np.flatnonzero(self.lengths[self.file_recording] > frontend.WINDOW_FRAMES)

    @cached_property
    def files_by_label(self) -> dict[str, np.ndarray]:
        """Label -> the files that carry it, in label order (explicit-label sampling)."""
        by_label: dict[str, list[int]] = {}
        for i, labs in enumerate(self.file_labels):
            for lab in labs:
                by_label.setdefault(lab, []).append(i)
        return {k: np.array(v) for k, v in sorted(by_label.items())}

    @cached_property
    def labelled_files(self) -> np.ndarray:
        """Files with at least one label."""
        return np.array([i for i, labs in enumerate(self.file_labels) if labs])
