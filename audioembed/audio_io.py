"""Reading and checking audio: soundfile decode, mono downmix by averaging, 16 kHz resampling.

Every failure is an :class:`AudioError` whose one-line message names the input, so a batch
run can list it and go on.
"""
from __future__ import annotations

import os
import re
import warnings
from functools import lru_cache
from typing import Iterator

import numpy as np
import soundfile as sf
import torch



class AudioError(ValueError):
    """An input that cannot be embedded; the message is one line naming the input."""


class SilentAudioWarning(UserWarning):
    """The input is all zeros: it is embedded, but its embedding carries no information."""


# Extensions a folder or glob is searched for: the formats libsndfile (soundfile) decodes.
# An input named explicitly on the command line is tried whatever its extension.
AUDIO_EXTENSIONS = frozenset({
    "wav", "wave", "flac", "ogg", "oga", "opus", "mp3", "aiff", "aif", "aifc", "au", "snd",
    "caf", "w64", "rf64",
})

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


def describe_read_failure(path: str, exc: Exception) -> str:
    """A one-line reason, naming ``path``, why soundfile could not open it."""
    if not os.path.lexists(path):
        return f"{path}: no such file"
    if not os.path.exists(path):
        return f"{path}: broken symbolic link"
    if os.path.isdir(path):
        return f"{path}: is a directory, not an audio file"
    if not os.access(path, os.R_OK):
        return f"{path}: permission denied"
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


class AudioSource:
    """An input opened for reading in blocks: a path (decoded by soundfile as it is read) or an
    in-memory array or tensor (downmixed once, then sliced). ``rate`` is its sample rate.

    Use as a context manager; :meth:`blocks` yields mono float32 arrays, channels averaged.
    """

    def __init__(self, audio, sr: int | None = None, name: str | None = None):
        self._file = None
        self._samples = None
        if isinstance(audio, (str, os.PathLike)):
            path = os.fspath(audio)
            self.name = name or path
            try:
                self._file = sf.SoundFile(path)
            except (sf.SoundFileError, RuntimeError, OSError, TypeError, ValueError) as exc:
                raise AudioError(describe_read_failure(path, exc)) from exc
            self.rate = int(self._file.samplerate)
        else:
            self.name = name or "<array>"
            self._samples = as_waveform(audio, sr, name=self.name)
            self.rate = _check_rate(sr)

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
        while True:
            try:
                data = self._file.read(frames, dtype="float32", always_2d=True)
            except (sf.SoundFileError, RuntimeError, OSError, ValueError) as exc:
                raise AudioError(f"{self.name}: audio data is corrupt or truncated "
                                 f"({_libsndfile_reason(exc)})") from exc
            if data.shape[0] == 0:
                return
            yield to_mono(data.T, name=self.name)
            if frames < 0:
                return


def _read_all(src: AudioSource) -> np.ndarray:
    blocks = list(src.blocks())
    if len(blocks) == 1:
        return blocks[0]
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode ``path`` to a mono float32 array (channels averaged) and its sample rate."""
    with AudioSource(path) as src:
        return _read_all(src), src.rate


def _channel_mean(data: np.ndarray) -> np.ndarray:
    """The float64 mean of the rows, rounded to float32. Summed a channel at a time: the same
    sums as ``data.mean(axis=0, dtype=np.float64)``, ~20x faster on the strided ``(samples,
    channels).T`` blocks that files give (it was 40% of the frontend's time on stereo files)."""
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
        audio = audio.detach().cpu().numpy()
    data = np.asarray(audio)
    if data.ndim == 2 and data.shape[0] > 64 and data.shape[1] <= 64:
        raise AudioError(f"{name}: 2-D audio must be (channels, samples); got {data.shape}, "
                         "which looks like (samples, channels): pass audio.T")
    if np.issubdtype(data.dtype, np.integer):
        data = data.astype(np.float32) / float(-np.iinfo(data.dtype).min)
    elif not np.issubdtype(data.dtype, np.floating):
        raise AudioError(f"{name}: unsupported sample dtype {data.dtype}")
    return to_mono(data, name=name)


def silence_message(name: str) -> str:
    return f"{name}: audio is all zeros; its embedding is that of silence"


class SampleChecker:
    """Checks audio as it is read, block by block: non-finite samples fail at the first block
    holding one; zero length fails, and all-zero audio is noted (``silent``), at :meth:`finish`."""

    def __init__(self, name: str):
        self.name = name
        self.count = 0
        self.silent = True

    def update(self, block: np.ndarray) -> None:
        finite = np.isfinite(block)
        if not finite.all():
            first = self.count + int(np.argmin(finite))
            raise AudioError(f"{self.name}: contains NaN or infinite samples (the first is sample "
                             f"{first})")
        if self.silent and block.any():
            self.silent = False
        self.count += block.size

    def finish(self) -> bool:
        """Whether the audio was all zeros; raises :class:`AudioError` if it had no samples."""
        if self.count == 0:
            raise AudioError(f"{self.name}: zero-length audio (no samples)")
        return self.silent


def check_samples(samples: np.ndarray, name: str) -> None:
    """Refuse empty or non-finite audio; warn (and go on) on all-zero audio."""
    checker = SampleChecker(name)
    checker.update(samples)
    if checker.finish():
        warnings.warn(silence_message(name), SilentAudioWarning, stacklevel=3)


@lru_cache(maxsize=16)
def _check_rate(sr: int) -> int:
    if not (isinstance(sr, (int, np.integer)) and sr > 0):
        raise AudioError(f"invalid sample rate {sr!r}")
    return int(sr)


def resample(samples: np.ndarray, sr: int) -> torch.Tensor:
    """Resample mono samples to ``frontend.SAMPLE_RATE`` with the documented torchaudio filter.

    The whole signal in one block of ``streaming.BlockResampler``, so a file read block by block
    gives the same samples to the bit.
    """
    from audioembed.streaming import BlockResampler

    resampler = BlockResampler(sr)
    x = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    return torch.cat([resampler.push(x), resampler.finish()])


def load_waveform(audio, sr: int | None = None, name: str | None = None) -> torch.Tensor:
    """Any supported input (path, array, tensor) to a checked 16 kHz mono float32 tensor.

    The whole signal at once; ``audioembed.streaming`` computes the same features block by block.
    """
    with AudioSource(audio, sr, name) as src:
        samples = _read_all(src)
    check_samples(samples, src.name)
    return resample(samples, src.rate)
