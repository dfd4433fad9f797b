"""Reading and checking audio: soundfile decode, mono downmix by averaging, 16 kHz resampling.

Every failure is an :class:`AudioError` whose one-line message names the input, so a batch
run can list it and go on.
"""
from __future__ import annotations

import errno
import math
import mmap
import os
import re
import stat
import struct
import warnings
from collections import Counter
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import soundfile as sf
import torch

from audioembed.errors import AudioError, AudioembedError  # noqa: F401 (AudioError: API)
from audioembed.resample import check_rate, resample


class SilentAudioWarning(UserWarning):
    """The input is all zeros: it is embedded, but its embedding carries no information."""


class TruncatedAudioWarning(UserWarning):
    """The file holds less audio than its header declares: the readable part is embedded."""


# Sample rates an input may have. Below 1 kHz nothing in the frontend's 125-7500 Hz band
# survives; above 768 kHz (twice the fastest common converters) the resampling filter of an
# odd rate would need hundreds of MB. Within the range any integer rate is resampled.
MIN_RATE = 1_000
MAX_RATE = 768_000

# Named explicitly, this pipe is read like a file; any other non-regular file is refused,
# since opening a FIFO (or a device) can block forever.
STDIN_PATHS = frozenset({"/dev/stdin", "/dev/fd/0", "/proc/self/fd/0"})


# Extensions a folder or glob is searched for: the formats libsndfile (soundfile) decodes.
# An input named explicitly on the command line is tried whatever its extension.
AUDIO_EXTENSIONS = frozenset({
    "wav", "wave", "flac", "ogg", "oga", "opus", "mp3", "aiff", "aif", "aifc", "au", "snd",
    "caf", "w64", "rf64",
})

def is_audio_name(name: str | os.PathLike) -> bool:
    """Whether a file name has one of the :data:`AUDIO_EXTENSIONS`."""
    return os.path.splitext(os.fspath(name))[1].lower().lstrip(".") in AUDIO_EXTENSIONS


def walk_folders(root: str | os.PathLike, max_depth: int | None = None, *, hidden: bool = False,
                 on_error: Callable[[OSError], None] | None = None,
                 repeated: list[Path] | None = None) -> Iterator[tuple[Path, list[str]]]:
    """``(folder, file names)`` for ``root`` and the folders below it, top-down in name order,
    down to ``max_depth`` levels below ``root`` (None: every level).

    Symbolic links to folders are followed, and each real folder (its ``st_dev, st_ino``) is
    searched once: a link back to a folder already searched (a loop such as ``ln -s . again``,
    or a second link to the same place) is not entered again, and goes into ``repeated``. So
    every file is listed once and a loop ends. Hidden entries (a leading ``.``) are skipped
    unless ``hidden``; ``on_error`` gets the OSError of a folder that cannot be listed.
    """
    root = Path(root)
    try:
        st = os.stat(root)
    except OSError:
        st = None  # os.walk reports it to on_error
    visited = set() if st is None else {(st.st_dev, st.st_ino)}
    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error, followlinks=True):
        here = Path(dirpath)
        depth = len(here.relative_to(root).parts)
        keep = []
        for name in sorted(dirnames):
            if (not hidden and name.startswith(".")) or (max_depth is not None and depth >= max_depth):
                continue
            try:
                st = os.stat(here / name)
            except OSError as exc:
                if on_error is not None:
                    on_error(exc)
                continue
            if (st.st_dev, st.st_ino) in visited:
                if repeated is not None:
                    repeated.append(here / name)
                continue
            visited.add((st.st_dev, st.st_ino))
            keep.append(name)
        dirnames[:] = keep
        yield here, [n for n in filenames if hidden or not n.startswith(".")]


def audio_files(folder: str | os.PathLike, recursive: bool = True, *,
                skipped: Counter | None = None,
                on_error: Callable[[OSError], None] | None = None,
                repeated: list[Path] | None = None) -> list[Path]:
    """The files with an audio extension below ``folder`` (every level, or with
    ``recursive=False`` its top level), sorted by their path relative to it.

    Hidden files and folders are skipped (macOS ``._x.wav`` resource forks are not audio).
    Linked folders are followed, each real folder once (:func:`walk_folders`; the links not
    entered again go into ``repeated``). ``skipped`` counts the other visible files by
    extension; ``on_error`` gets the OSError of a folder that cannot be listed (default:
    ignored). Entries are not opened: one that is not a regular file (a FIFO) is listed, and
    reading it says what it is.
    """
    root = Path(folder)
    found = []
    for dirpath, filenames in walk_folders(root, None if recursive else 0, on_error=on_error,
                                           repeated=repeated):
        for name in filenames:
            if is_audio_name(name):
                found.append(dirpath / name)
            elif skipped is not None:
                skipped[os.path.splitext(name)[1].lower() or "(no extension)"] += 1
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


# Signatures of containers libsndfile reads: a file that starts with one yet cannot be opened
# has a corrupt header (re-export it), which is a different fix from an unsupported format.
_SIGNATURES = ((0, b"RIFF", "WAV"), (0, b"RIFX", "WAV"), (0, b"RF64", "RF64"), (0, b"riff", "W64"),
               (0, b"fLaC", "FLAC"), (0, b"OggS", "Ogg"), (0, b"FORM", "AIFF"), (0, b".snd", "AU"),
               (0, b"caff", "CAF"), (0, b"ID3", "MP3"))
# Common formats libsndfile cannot read, so the message can say what the file is.
_FOREIGN = ((4, b"ftyp", "MP4/M4A/AAC"), (0, b"\x1aE\xdf\xa3", "Matroska/WebM"),
            (0, b"0&\xb2u", "ASF/WMA"), (0, b"wvpk", "WavPack"), (0, b"MAC ", "Monkey's Audio"),
            (0, b"#!AMR", "AMR"), (0, b"MThd", "MIDI"))
_READABLE = "WAV, FLAC, Ogg Vorbis/Opus, MP3, AIFF, AU, CAF, W64"


def _sniff(head: bytes, table) -> str | None:
    for offset, magic, fmt in table:
        if head[offset:offset + len(magic)] == magic:
            return fmt
    return None


def _looks_like_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # The 512-byte sample may end inside a multi-byte character.
        if exc.start < len(head) - 3:
            return False
        text = head[:exc.start].decode("utf-8")
    return all(c.isprintable() or c in "\t\r\n\f" for c in text)


def _libsndfile_reason(exc: Exception) -> str:
    reason = getattr(exc, "error_string", None) or str(exc).strip() or type(exc).__name__
    # soundfile prefixes "Error opening 'PATH': "; the caller names the file already.
    return re.sub(r"^Error opening .*?: ", "", reason.splitlines()[-1]).rstrip(".")


def file_kind(mode: int) -> str:
    """What a non-regular file is, for a message."""
    for test, kind in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a directory")):
        if test(mode):
            return kind
    return "not a regular file"


def check_regular_file(path: str) -> None:
    """Refuse a path that is not a regular file (after links), unless it is stdin: opening a
    FIFO waits for a writer, possibly forever, and a device may never end."""
    if path in STDIN_PATHS:
        return
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # missing, looping, unreadable: the open fails and describe_read_failure says why
    if stat.S_ISDIR(mode):
        raise AudioError(f"{path}: is a directory, not an audio file")
    if not stat.S_ISREG(mode):
        raise AudioError(f"{path}: is {file_kind(mode)}, not a regular file; only /dev/stdin "
                         "is read as a stream")


def check_input_rate(sr, name: str) -> int:
    """``sr`` as an int if it is a sample rate audioembed resamples, else an AudioError."""
    rate = check_rate(sr)
    if rate < MIN_RATE:
        raise AudioError(f"{name}: sample rate {rate} Hz is below {MIN_RATE} Hz; audio this "
                         "slow holds nothing of the 125-7500 Hz band the model listens to")
    if rate > MAX_RATE:
        raise AudioError(f"{name}: sample rate {rate} Hz is above the {MAX_RATE} Hz supported; "
                         "resample it first, e.g. with sox or ffmpeg")
    return rate


def describe_read_failure(path: str, exc: Exception) -> str:
    """A one-line reason, naming ``path``, why soundfile could not open it."""
    if not os.path.lexists(path):
        return f"{path}: no such file"
    if not os.path.exists(path):
        try:
            os.stat(path)
        except OSError as err:
            if err.errno == errno.ELOOP:
                return f"{path}: symbolic link loop (the link points, in the end, back to itself)"
        return f"{path}: broken symbolic link"
    if os.path.isdir(path):
        return f"{path}: is a directory, not an audio file"
    if not os.access(path, os.R_OK):
        return f"{path}: permission denied"
    if path in STDIN_PATHS and not stat.S_ISREG(os.stat(path).st_mode):
        # A pipe's bytes are gone once libsndfile has read them: neither its size nor its
        # head can be looked at again.
        return (f"{path}: cannot be decoded from a pipe ({_libsndfile_reason(exc)}); WAV can be "
                "streamed, other formats (FLAC, Ogg, MP3) may need a file: redirect one "
                "(< clip.flac) or save the stream first")
    if os.path.getsize(path) == 0:
        return f"{path}: empty file (0 bytes)"
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as err:
        return f"{path}: cannot be read ({err.strerror or err})"
    reason = _libsndfile_reason(exc)
    fmt = _sniff(head, _SIGNATURES)
    if fmt is not None:
        return f"{path}: corrupt or truncated {fmt} header ({reason})"
    if _looks_like_text(head):
        return f"{path}: is a text file, not audio"
    fmt = _sniff(head, _FOREIGN)
    if fmt is not None:
        return f"{path}: unsupported format ({fmt}); convert it to WAV or FLAC, e.g. with ffmpeg"
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if ext in AUDIO_EXTENSIONS:
        return f"{path}: corrupt or unrecognised header, not a readable .{ext} file ({reason})"
    shown = f"'.{ext}'" if ext else "without an extension"
    return f"{path}: unsupported format {shown} (readable: {_READABLE})"


# Integer subtypes read as integers and scaled here: libsndfile's own float conversion of PCM
# WAV took several times as long as a plain read (hand timings, session 6; the decoding share in
# benchmarks/bench_scale.py --only profile fell with it), and gives the same floats to the bit,
# as tests/test_audio_io.py checks for each container.
_NATIVE_READS = {"PCM_16": ("int16", np.float32(2.0 ** -15)), "PCM_32": ("int32", np.float32(2.0 ** -31))}


# Frames per libsndfile read of a FLAC file: damage loses at most this much of the audio before it.
FLAC_READ_FRAMES = 4096


class AudioSource:
    """An input opened for reading in blocks: a path (decoded by soundfile as it is read) or an
    in-memory array or tensor (downmixed once, then sliced). ``rate`` is its sample rate.

    Use as a context manager; :meth:`blocks` yields mono float32 arrays, channels averaged.
    """

    def __init__(self, audio, sr: int | None = None, name: str | None = None):
        self._file = None
        self._native = None  # (dtype, scale) of an integer read, or None: soundfile converts
        self._samples = None
        self._frames_decoded = 0
        # Why a FLAC stopped decoding after some audio, or None: as with a cut WAV, Ogg or MP3,
        # the audio before the damage is kept (callers warn, or fail if strict).
        self._decode_error = None
        self._path = None
        # Whether some channel held a nonzero sample: all-zero mono audio then means the
        # channels cancelled in the downmix (stereo in antiphase), not silence.
        self.channels_nonzero = False
        if isinstance(audio, (str, bytes, os.PathLike)):
            path = os.fsdecode(audio)
            self.name = name or path
            self._path = path
            check_regular_file(path)
            try:
                # As bytes: soundfile encodes a str path strictly, which fails for a file name
                # that is not valid UTF-8 (os functions give it with surrogate escapes).
                self._file = sf.SoundFile(os.fsencode(path))
            except (sf.SoundFileError, RuntimeError, OSError, TypeError, ValueError) as exc:
                raise AudioError(describe_read_failure(path, exc)) from exc
            try:
                self.rate = check_input_rate(int(self._file.samplerate), self.name)
            except AudioError:
                self._file.close()
                raise
            self._native = _NATIVE_READS.get(self._file.subtype)
        else:
            self.name = name or "<array>"
            self.rate = check_input_rate(sr, self.name) if sr is not None else None
            self._samples = as_waveform(audio, sr, name=self.name)
            if not self._samples.any():
                self.channels_nonzero = _any_nonzero(audio)

    def __enter__(self) -> "AudioSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def blocks(self, frames: int = -1) -> Iterator[np.ndarray]:
        """Mono float32 blocks of ``frames`` samples (the last may be shorter); -1: one block."""
        if self._samples is not None:
            step = frames if frames > 0 else max(1, self._samples.size)
            for a in range(0, self._samples.size, step):
                yield self._samples[a:a + step]
            return
        while self._decode_error is None:
            try:
                data = self._read(frames)
            except (sf.SoundFileError, RuntimeError, OSError, ValueError) as exc:
                raise AudioError(f"{self.name}: audio data is corrupt or truncated "
                                 f"({_libsndfile_reason(exc)})") from exc
            if data.shape[0] == 0:
                return
            self._frames_decoded += data.shape[0]
            mono = self._mono(data)
            if not self.channels_nonzero and data.shape[1] > 1 and not mono.any() and data.any():
                self.channels_nonzero = True
            yield mono
            if frames < 0:
                return

    def _read(self, frames: int) -> np.ndarray:
        if self._file.format != "FLAC":
            return self._read_raw(frames)
        # In small reads, so that damage loses at most one of them; a read that fails after some
        # audio ends the stream there (blocks() keeps what came before, truncation() says why).
        parts, got = [], 0
        while frames < 0 or got < frames:
            want = FLAC_READ_FRAMES if frames < 0 else min(FLAC_READ_FRAMES, frames - got)
            try:
                part = self._read_raw(want)
            except (sf.SoundFileError, RuntimeError, OSError, ValueError) as exc:
                if not parts and self._frames_decoded == 0:
                    raise
                self._decode_error = _libsndfile_reason(exc)
                break
            if part.shape[0] == 0:
                break
            parts.append(part)
            got += part.shape[0]
        return np.concatenate(parts) if parts else np.zeros((0, self._file.channels), np.float32)

    def _read_raw(self, frames: int) -> np.ndarray:
        """``(frames, channels)``: float32, or the file's integers where ``_native`` says so."""
        if self._native is None:
            return self._file.read(frames, dtype="float32", always_2d=True)
        return self._file.read(frames, dtype=self._native[0], always_2d=True)

    def _mono(self, data: np.ndarray) -> np.ndarray:
        """One block as :meth:`_read_raw` gives it, scaled and downmixed to mono float32."""
        if self._native is None:
            return to_mono(data.T, name=self.name)
        dtype, scale = self._native
        channels = data.shape[1]
        if dtype == "int16" and channels <= 256 and channels & (channels - 1) == 0:
            # Summed as integers: up to 256 int16 channels sum exactly in float32's 24-bit
            # mantissa, and the scale (2^-15 / channels) is a power of two, so this is the
            # float64 mean of the scaled channels to the bit, in one pass instead of four.
            mono = data[:, 0].astype(np.float32 if channels == 1 else np.int32)
            for c in range(1, channels):
                mono += data[:, c]
            mono = mono.astype(np.float32, copy=False)
            mono *= np.float32(scale / channels)
            return mono
        scaled = data.astype(np.float32)
        scaled *= scale
        return to_mono(scaled.T, name=self.name)

    def truncation(self, frames_read: int) -> str | None:
        """Why the file seems cut short (or, for Ogg, damaged), naming it, after ``frames_read``
        frames were read; or None. The audio that could be read is still embedded; callers warn (or, strict, fail)."""
        if self._file is None:
            return None
        if self._decode_error is not None:
            return (f"{self.name}: truncated or corrupt FLAC: decoding stopped after "
                    f"{_seconds(frames_read, self.rate)} ({self._decode_error})")
        fmt = self._file.format
        if not self._file.seekable():
            return self._stream_truncation(frames_read)
        declared = None
        try:
            if fmt == "WAV":
                declared = _wav_declared_frames(self._path)
            elif fmt == "OGG":
                return _ogg_problem(self._path, self.name, frames_read, self.rate)
        except (OSError, ValueError):  # ValueError: mmap of a file emptied since
            return None  # unreadable now: the read itself would have failed
        if declared is None:
            declared = self._file.frames
        # An MP3 without a Xing/VBRI header has its length estimated from the bitrate, which
        # can be off by a frame or two (1152 samples each).
        slack = 2 * 1152 if fmt == "MPEG" else 0
        if declared - frames_read > slack:
            return (f"{self.name}: truncated: the header declares {declared} frames "
                    f"({_seconds(declared, self.rate)}) but the file holds {frames_read} "
                    f"({_seconds(frames_read, self.rate)})")
        return None


    def _stream_truncation(self, frames_read: int) -> str | None:
        """:meth:`truncation` of a pipe, which cannot be read again: a WAV header's frame count
        is what libsndfile reports (the largest int32 for a stream written before its length
        was known, as ``sox ... -t wav -`` writes)."""
        declared = self._file.frames
        if self._file.format != "WAV" or not 0 < declared < _UNKNOWN_STREAM_FRAMES:
            return None
        if declared > frames_read:
            return (f"{self.name}: truncated: the header declares {declared} frames "
                    f"({_seconds(declared, self.rate)}) but the stream held {frames_read} "
                    f"({_seconds(frames_read, self.rate)})")
        return None


# libsndfile's frame count for a WAV stream whose data size is 0xFFFFFFFF ("unknown").
_UNKNOWN_STREAM_FRAMES = 2 ** 31 - 1


def _seconds(frames: int, rate: int) -> str:
    return f"{frames / rate:.2f} s"


def _any_nonzero(audio) -> bool:
    if isinstance(audio, torch.Tensor):
        return bool(audio.detach().ne(0).any())
    return bool(np.any(np.asarray(audio)))


def _wav_declared_frames(path: str) -> int | None:
    """Frames the RIFF header's ``data`` chunk declares (libsndfile trims them to the file)."""
    with open(os.fsencode(path), "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        block_align = None
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"fmt ":
                fmt = f.read(min(size, 16))
                if len(fmt) < 14:
                    return None
                block_align = struct.unpack("<H", fmt[12:14])[0]
                f.seek(size - len(fmt) + (size & 1), os.SEEK_CUR)
            elif cid == b"data":
                # 0 and 0xFFFFFFFF: a stream written before its length was known.
                if not block_align or size in (0, 0xFFFFFFFF):
                    return None
                return size // block_align
            else:
                f.seek(size + (size & 1), os.SEEK_CUR)


def _ogg_problem(path: str, name: str, frames_read: int, rate: int) -> str | None:
    """Why an Ogg file gave less audio than it holds, after ``frames_read`` frames: damaged
    pages (the decoder skips them: "corrupt"), or a file that ends inside a page or without
    the page that ends its stream ("truncated"); None if neither.

    The pages are walked by their headers (no decoding): a gap between them is damage, and a
    clean chain whose last granule position (the stream's length, for one Vorbis or Opus
    stream) exceeds what was decoded means a page failed its checksum and was skipped.
    """
    with open(os.fsencode(path), "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        size = len(m)
        pos, damaged, cut, eos, streams, granule, head = 0, None, False, False, 0, None, b""
        while pos < size:
            if m[pos:pos + 4] == b"OggS" and m[pos + 4:pos + 5] in (b"\x00", b""):
                n = m[pos + 26] if pos + 27 <= size else 0
                end = pos + 27 + n + sum(m[pos + 27:pos + 27 + n])
                if pos + 27 > size or pos + 27 + n > size or end > size:
                    cut = True
                    break
                flags = m[pos + 5]
                if flags & 0x02:  # the first page of a logical stream: its head packet
                    streams += 1
                    head = head or m[pos + 27 + n:pos + 27 + n + 12]
                eos = bool(flags & 0x04)
                g = int.from_bytes(m[pos + 6:pos + 14], "little", signed=True)
                granule = g if g >= 0 else granule  # -1: no packet ends on this page
                pos = end
                continue
            if eos:
                break  # bytes after the stream's last page (a tag, padding) are not audio
            damaged = pos if damaged is None else damaged
            pos = m.find(b"OggS", pos + 1)
            if pos < 0:
                break
    total = None
    if streams == 1 and granule is not None and head.startswith(b"\x01vorbis"):
        total = granule
    elif streams == 1 and granule is not None and head.startswith(b"OpusHead"):
        total = (granule - int.from_bytes(head[10:12], "little")) * rate // 48_000
    got = _seconds(frames_read, rate)
    of = f" of {_seconds(total, rate)}" if total is not None and total > frames_read else ""
    if damaged is not None:
        return f"{name}: corrupt: damaged Ogg data at byte {damaged}; {got}{of} could be decoded"
    if cut or not eos:
        return f"{name}: truncated: the Ogg stream ends without its final page; {got} could be read"
    if total is not None and total - frames_read > rate // 50:  # 20 ms: Opus rounds its frames
        return (f"{name}: corrupt: {got}{of} could be decoded (damaged Ogg pages fail their "
                "checksum and are skipped)")
    return None


def _read_all(src: AudioSource) -> np.ndarray:
    blocks = list(src.blocks())
    if len(blocks) == 1:
        return blocks[0]
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)


def _channel_mean(data: np.ndarray) -> np.ndarray:
    """The float64 mean of the rows, rounded to float32. Summed a channel at a time: the same
    sums as ``data.mean(axis=0, dtype=np.float64)``, much faster on the strided ``(samples,
    channels).T`` blocks that files give (timed by hand, not kept; ``benchmarks/bench_scale.py
    --only profile`` gives the decoding share)."""
    acc = data[0].astype(np.float64)
    for channel in data[1:]:
        acc += channel
    acc /= data.shape[0]
    return acc.astype(np.float32)


def to_mono(data: np.ndarray, name: str = "<array>") -> np.ndarray:
    """``(channels, samples)`` or ``(samples,)`` to mono float32 by averaging the channels."""
    data = np.asarray(data)
    if data.ndim == 2:
        data = _channel_mean(data) if data.shape[0] > 1 else data[0]
    elif data.ndim != 1:
        raise AudioError(f"{name}: expected 1-D (samples) or 2-D (channels, samples) audio, "
                         f"got shape {data.shape}")
    return np.ascontiguousarray(data, dtype=np.float32)


def as_waveform(audio, sr: int | None, name: str = "<array>") -> np.ndarray:
    """A user array or tensor (1-D, or 2-D ``(channels, samples)``) to mono float32 samples."""
    if sr is None:
        raise AudioError(f"{name}: a sample rate (sr=...) is required for array input")
    if isinstance(audio, torch.Tensor):
        audio = _tensor_to_numpy(audio, name)
    data = np.asarray(audio)
    if data.ndim == 2 and data.shape[0] > 64 and data.shape[1] <= 64:
        raise AudioError(f"{name}: 2-D audio must be (channels, samples); got {data.shape}, "
                         "which looks like (samples, channels): pass audio.T")
    if np.issubdtype(data.dtype, np.unsignedinteger):
        # Offset PCM (8-bit WAV's convention): silence is the middle code, 2^(bits-1).
        half = 2.0 ** (8 * data.dtype.itemsize - 1)
        data = ((data.astype(np.float64) - half) / half).astype(np.float32)
    elif np.issubdtype(data.dtype, np.integer):
        data = data.astype(np.float32) / float(-np.iinfo(data.dtype).min)
    elif not np.issubdtype(data.dtype, np.floating):
        raise AudioError(f"{name}: unsupported sample dtype {data.dtype}; pass float samples in "
                         "[-1, 1] or integer PCM")
    return to_mono(data, name=name)


def _tensor_to_numpy(audio: torch.Tensor, name: str) -> np.ndarray:
    audio = audio.detach().cpu()
    # numpy has no bfloat16 (nor float8): float32 holds their every value exactly.
    if audio.is_floating_point() and audio.dtype not in (torch.float16, torch.float32, torch.float64):
        audio = audio.float()
    try:
        return audio.numpy()
    except TypeError as exc:  # a dtype numpy cannot hold
        raise AudioError(f"{name}: unsupported tensor dtype {audio.dtype}") from exc


def silence_message(name: str, cancelled: bool = False) -> str:
    if cancelled:
        return (f"{name}: its channels cancel when averaged to mono (e.g. stereo in antiphase), "
                "leaving all zeros; its embedding is that of silence")
    return f"{name}: audio is all zeros; its embedding is that of silence"


class SampleChecker:
    """Checks audio as it is read, block by block: non-finite samples fail at the first block
    holding one; zero length fails, and all-zero audio is noted (``silent``), at :meth:`finish`."""

    def __init__(self, name: str):
        self.name = name
        self.count = 0
        self.silent = True
        self.peak = 0.0  # largest |sample|

    def update(self, block: np.ndarray) -> None:
        if block.size:
            # Two passes over the block instead of four: a NaN or an infinity makes max or min
            # non-finite, and the block is all zeros exactly when both are zero.
            hi, lo = float(block.max()), float(block.min())
            if not (math.isfinite(hi) and math.isfinite(lo)):
                first = self.count + int(np.argmin(np.isfinite(block)))
                raise AudioError(f"{self.name}: contains NaN or infinite samples (the first is "
                                 f"sample {first})")
            self.peak = max(self.peak, hi, -lo)
            if hi != 0 or lo != 0:
                self.silent = False
        self.count += block.size

    def finish(self) -> bool:
        """Whether the audio was all zeros; raises :class:`AudioError` if it had no samples."""
        if self.count == 0:
            raise AudioError(f"{self.name}: zero-length audio (no samples)")
        return self.silent


def check_samples(samples: np.ndarray, name: str, cancelled: bool = False) -> None:
    """Refuse empty or non-finite audio; warn (and go on) on all-zero audio."""
    checker = SampleChecker(name)
    checker.update(samples)
    if checker.finish():
        warnings.warn(silence_message(name, cancelled), SilentAudioWarning, stacklevel=3)


def load_waveform(audio, sr: int | None = None, name: str | None = None) -> torch.Tensor:
    """Any supported input (path, array, tensor) to a checked 16 kHz mono float32 tensor.

    The whole signal at once; ``audioembed.streaming`` computes the same features block by block.
    """
    with AudioSource(audio, sr, name) as src:
        samples = _read_all(src)
        truncated = src.truncation(samples.size)
    if truncated is not None:
        warnings.warn(truncated, TruncatedAudioWarning, stacklevel=2)
    check_samples(samples, src.name, src.channels_nonzero)
    return resample(samples, src.rate)
