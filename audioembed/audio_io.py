"""Reading and checking audio: soundfile decode, mono downmix by averaging, 16 kHz resampling.

Every failure is an :class:`AudioError` whose one-line message names the input, so a batch
run can list it and go on.
"""
from __future__ import annotations

import math
import os
import warnings
from functools import lru_cache

import numpy as np
import soundfile as sf
import torch

from audioembed import frontend


class AudioError(ValueError):
    """An input that cannot be embedded; the message is one line naming the input."""


class SilentAudioWarning(UserWarning):
    """The input is all zeros: it is embedded, but its embedding carries no information."""


def describe_read_failure(path: str, exc: Exception) -> str:
    """A one-line reason why soundfile could not open ``path``."""
    if not os.path.exists(path):
        return f"{path}: no such file"
    if os.path.isdir(path):
        return f"{path}: is a directory, not an audio file"
    if not os.access(path, os.R_OK):
        return f"{path}: permission denied"
    if os.path.getsize(path) == 0:
        return f"{path}: empty file (0 bytes)"
    reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    return f"{path}: not a readable audio file or unsupported format ({reason})"


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode ``path`` to a mono float32 array (channels averaged) and its sample rate."""
    path = os.fspath(path)
    try:
        with sf.SoundFile(path) as f:
            sr = f.samplerate
            data = f.read(dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioError(describe_read_failure(path, exc)) from exc
    return to_mono(data.T, name=path), int(sr)


def to_mono(data: np.ndarray, name: str = "<array>") -> np.ndarray:
    """``(channels, samples)`` or ``(samples,)`` to mono float32 by averaging the channels."""
    data = np.asarray(data)
    if data.ndim == 2:
        data = data.mean(axis=0, dtype=np.float64).astype(np.float32) if data.shape[0] > 1 else data[0]
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


def check_samples(samples: np.ndarray, name: str) -> None:
    """Refuse empty or non-finite audio; warn (and go on) on all-zero audio."""
    if samples.size == 0:
        raise AudioError(f"{name}: zero-length audio (no samples)")
    if not np.isfinite(samples).all():
        raise AudioError(f"{name}: contains NaN or infinite samples")
    if not samples.any():
        warnings.warn(f"{name}: audio is all zeros; its embedding is that of silence",
                      SilentAudioWarning, stacklevel=3)


@lru_cache(maxsize=16)
def _check_rate(sr: int) -> int:
    if not (isinstance(sr, (int, np.integer)) and sr > 0):
        raise AudioError(f"invalid sample rate {sr!r}")
    return int(sr)


def resample(samples: np.ndarray, sr: int) -> torch.Tensor:
    """Resample mono samples to ``frontend.SAMPLE_RATE`` with the documented torchaudio filter."""
    import torchaudio.functional as AF

    sr = _check_rate(sr)
    x = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    if sr == frontend.SAMPLE_RATE:
        return x
    g = math.gcd(sr, frontend.SAMPLE_RATE)
    return AF.resample(
        x, sr // g, frontend.SAMPLE_RATE // g,
        lowpass_filter_width=frontend.RESAMPLE_LOWPASS_FILTER_WIDTH,
        rolloff=frontend.RESAMPLE_ROLLOFF, resampling_method=frontend.RESAMPLE_METHOD,
    )


def load_waveform(audio, sr: int | None = None, name: str | None = None) -> torch.Tensor:
    """Any supported input (path, array, tensor) to a checked 16 kHz mono float32 tensor."""
    if isinstance(audio, (str, os.PathLike)):
        name = name or os.fspath(audio)
        samples, sr = read_audio(audio)
    else:
        name = name or "<array>"
        samples = as_waveform(audio, sr, name=name)
    check_samples(samples, name)
    return resample(samples, sr)
