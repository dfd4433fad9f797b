"""The audio frontend of Jansen et al. (ICASSP 2018), section 4.1. Every constant lives here.

Pipeline, for a mono float waveform at ``SAMPLE_RATE``:

1. Short-time Fourier transform: ``WIN_LENGTH``-sample (25 ms) periodic Hann window,
   ``HOP_LENGTH``-sample (10 ms) hop, ``N_FFT``-point FFT. Frame ``f`` is centred on sample
   ``f * HOP_LENGTH``; the signal is zero outside ``[0, n)``. A signal of ``n`` samples gives
   ``ceil(n / HOP_LENGTH)`` frames (every frame whose centre lies inside the signal).
2. Power spectrogram ``|X|^2`` (no window normalisation), projected onto ``N_MELS`` triangular
   HTK-mel filters spanning ``F_MIN``..``F_MAX`` with peak 1 (no area normalisation).
   These are **mel energies**: mixing two sounds adds their energies, which is the domain in
   which the paper's triplet samplers work.
3. Stabilised log: ``log(mel + LOG_OFFSET)``. VGGish adds 0.01 to mel *magnitudes*; squared,
   that is 1e-4 on energies.
4. Context windows of ``WINDOW_FRAMES`` frames (0.96 s) x ``N_MELS`` bands, hop
   ``DEFAULT_HOP_SECONDS`` (no overlap) unless asked otherwise. Windows are deterministic:
   - a clip shorter than one window gives one window, padded with zero energy;
   - a trailing partial window is kept, padded with zero energy, when it holds at least
     ``MIN_TRAILING_FRAMES`` frames (half a window);
   - window ``k`` starts at frame ``k * hop_frames``; its timestamp is the centre, in
     seconds, of the samples its frames analyse: ``(start * HOP_LENGTH + WINDOW_CENTRE_SAMPLES)
     / SAMPLE_RATE``, computed from integers so long files do not drift.

Window tensors are ``(n_windows, WINDOW_FRAMES, N_MELS)``: time first, like VGGish's examples.
"""
from __future__ import annotations

import math
import numbers
from contextlib import contextmanager, nullcontext
from functools import lru_cache
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from audioembed.errors import InvalidArgumentError

SAMPLE_RATE = 16_000
WIN_LENGTH = 400  # 25 ms
HOP_LENGTH = 160  # 10 ms
N_FFT = 512
WINDOW_FUNCTION = "hann_periodic"
N_MELS = 64
F_MIN = 125.0
F_MAX = 7500.0
MEL_SCALE = "htk"
LOG_OFFSET = 1e-4
WINDOW_FRAMES = 96  # 0.96 s
DEFAULT_HOP_SECONDS = 0.96
MIN_TRAILING_FRAMES = WINDOW_FRAMES // 2
# Resampling (torchaudio.functional.resample): windowed-sinc, Hann window.
RESAMPLE_LOWPASS_FILTER_WIDTH = 6
RESAMPLE_ROLLOFF = 0.99
RESAMPLE_METHOD = "sinc_interp_hann"

FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # 100
# Frames of one window analyse samples [start*HOP - WIN/2, (start+95)*HOP + WIN/2).
# Their centre, 7600 samples (0.475 s) after the first frame's centre, is a whole sample.
WINDOW_CENTRE_SAMPLES = (WINDOW_FRAMES - 1) * HOP_LENGTH // 2


def config() -> dict:
    """Every frontend constant, as stored in a model's ``config.json`` and printed by ``info``."""
    return {
        "sample_rate": SAMPLE_RATE,
        "win_length": WIN_LENGTH,
        "hop_length": HOP_LENGTH,
        "n_fft": N_FFT,
        "window": WINDOW_FUNCTION,
        "center": "frame f centred on sample f*hop_length, zero outside the signal",
        "spectrum": "power",
        "n_mels": N_MELS,
        "f_min": F_MIN,
        "f_max": F_MAX,
        "mel_scale": MEL_SCALE,
        "mel_norm": None,
        "log_offset": LOG_OFFSET,
        "window_frames": WINDOW_FRAMES,
        "min_trailing_frames": MIN_TRAILING_FRAMES,
        "resample": {
            "method": RESAMPLE_METHOD,
            "lowpass_filter_width": RESAMPLE_LOWPASS_FILTER_WIDTH,
            "rolloff": RESAMPLE_ROLLOFF,
        },
    }


def config_mismatches(other: dict) -> list[str]:
    """Keys on which a stored frontend config differs from this code's; empty when they agree."""
    ours = config()
    keys = sorted(set(ours) | set(other))
    return [f"{k}: model has {other.get(k)!r}, code has {ours.get(k)!r}" for k in keys
            if other.get(k) != ours.get(k)]


@lru_cache(maxsize=4)
def _hann(device: str) -> torch.Tensor:
    return torch.hann_window(WIN_LENGTH, periodic=True, dtype=torch.float32, device=device)


@lru_cache(maxsize=4)
def _mel_matrix(device: str) -> torch.Tensor:
    import torchaudio.functional as AF

    fb = AF.melscale_fbanks(
        n_freqs=N_FFT // 2 + 1, f_min=F_MIN, f_max=F_MAX, n_mels=N_MELS,
        sample_rate=SAMPLE_RATE, norm=None, mel_scale=MEL_SCALE,
    )
    return fb.to(device=device, dtype=torch.float32)  # (257, 64)


@lru_cache(maxsize=4)
def _fft_window(device: str) -> torch.Tensor:
    """The Hann window centred in ``N_FFT`` samples, zeros either side, as ``torch.stft`` pads it."""
    left = (N_FFT - WIN_LENGTH) // 2
    return F.pad(_hann(device), (left, N_FFT - WIN_LENGTH - left))


def mel_filterbank() -> torch.Tensor:
    """The ``(N_FFT // 2 + 1, N_MELS)`` mel filterbank matrix (a copy)."""
    return _mel_matrix("cpu").clone()


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run the CPU tensor ops inside on one intra-op thread; the caller's setting comes back after.

    The frontend's ops are small and memory-bound: a second thread saves little, and on a
    shared machine every multi-threaded op waits at its OpenMP barrier for a descheduled thread
    (``benchmarks/bench_scale.py --only profile`` gives the frontend's share). The network's large convolutions do gain from the threads,
    so only the frontend runs inside this.
    """
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def num_frames(num_samples: int) -> int:
    """Frames for ``num_samples`` samples: those whose centre lies inside the signal."""
    return -(-int(num_samples) // HOP_LENGTH)


def mel_energies(waveform: torch.Tensor) -> torch.Tensor:
    """Mel energies of a 16 kHz mono waveform: ``(..., samples) -> (..., frames, N_MELS)``.

    Linear (not log) power; see the module docstring for the exact definition.
    """
    if waveform.device.type == "cpu":
        with single_threaded():
            return _mel_energies(waveform)
    return _mel_energies(waveform)


def _mel_energies(waveform: torch.Tensor) -> torch.Tensor:
    if waveform.shape[-1] == 0:
        return torch.zeros(*waveform.shape[:-1], 0, N_MELS, device=waveform.device)
    x = waveform.to(torch.float32)
    lead = x.shape[:-1]
    x = x.reshape(-1, x.shape[-1])
    n = x.shape[-1]
    frames = num_frames(n)
    # torch.stft(center=True) pads N_FFT//2 each side and centres the WIN_LENGTH window inside
    # N_FFT, so frame f is centred on sample f*HOP_LENGTH. Zero padding (not reflect): the
    # signal is defined as zero outside [0, n), which streaming and padding rely on.
    pad = N_FFT // 2
    x = F.pad(x, (pad, pad))
    device = str(x.device)
    # Frame f is padded samples f*HOP .. f*HOP + N_FFT - 1, windowed: torch.stft(center=False)'s
    # frames, with the spectrum laid out frames first so that what follows reads it in order.
    spec = torch.fft.rfft(x.unfold(-1, N_FFT, HOP_LENGTH)[:, :frames] * _fft_window(device))
    # |X|^2 as re^2 + im^2 (squared in place, then one strided add: complex abs() computes a
    # hypot, and a product over the interleaved squares is twice the work), then one product
    # with the filterbank: torchaudio's order of operations.
    squares = torch.view_as_real(spec).square_()
    power = squares[..., 0] + squares[..., 1]
    return (power.reshape(-1, power.shape[-1]) @ _mel_matrix(device)).reshape(*lead, frames, N_MELS)


def log_mel(energies: torch.Tensor) -> torch.Tensor:
    """The stabilised log, ``log(energies + LOG_OFFSET)``: a new contiguous tensor, whatever
    the layout of ``energies`` (a strided view of windows from :func:`gather_windows`)."""
    out = torch.empty(energies.shape, dtype=energies.dtype, device=energies.device)
    return torch.add(energies, LOG_OFFSET, out=out).log_()


def hop_frames(hop_seconds: float = DEFAULT_HOP_SECONDS) -> int:
    """Window hop in frames for a hop in seconds (rounded to whole 10 ms frames)."""
    # numbers.Real admits numpy scalars (a hop read from a config or CLI); bool is an int
    # subclass but never a meaningful hop.
    if (isinstance(hop_seconds, bool) or not isinstance(hop_seconds, numbers.Real)
            or not math.isfinite(hop_seconds)):
        raise InvalidArgumentError(f"hop must be a finite number of seconds, got {hop_seconds!r}")
    frames = round(float(hop_seconds) * FRAMES_PER_SECOND)
    if frames < 1:
        raise InvalidArgumentError(f"hop must be at least {1 / FRAMES_PER_SECOND} s, got {hop_seconds}")
    return frames


def window_starts(n_frames: int, hop_frames: int) -> list[int]:
    """Start frames of the context windows over ``n_frames`` frames ``hop_frames`` apart.

    At least one window (a short clip is padded); a trailing partial window is kept when it holds
    at least ``MIN_TRAILING_FRAMES`` frames.
    """
    if hop_frames < 1:
        raise InvalidArgumentError(f"window hop_frames must be at least one frame, got {hop_frames}")
    if n_frames <= WINDOW_FRAMES:
        return [0]
    full = (n_frames - WINDOW_FRAMES) // hop_frames + 1
    starts = [k * hop_frames for k in range(full)]
    nxt = full * hop_frames
    if nxt < n_frames and n_frames - nxt >= MIN_TRAILING_FRAMES:
        starts.append(nxt)
    return starts


def window_timestamps(starts: list[int] | torch.Tensor, offset_frames: int = 0) -> torch.Tensor:
    """Window centres in seconds (float64), computed in integer samples then divided once."""
    # In numpy: the same int64 and float64 operations, without torch's per-op overhead (every
    # chunk of every file calls this).
    s = np.asarray(starts, dtype=np.int64) + int(offset_frames)
    return torch.from_numpy((s * HOP_LENGTH + WINDOW_CENTRE_SAMPLES).astype(np.float64) / SAMPLE_RATE)


def gather_windows(frames: torch.Tensor, starts: list[int], pad_value: float = 0.0) -> torch.Tensor:
    """Windows of ``WINDOW_FRAMES`` frames starting at ``starts`` (frame indices into ``frames``).

    ``frames`` is ``(..., n_frames, N_MELS)``; the result ``(..., len(starts), WINDOW_FRAMES,
    N_MELS)``, a strided view of ``frames`` (no copy) when the starts are evenly spaced, as
    :func:`window_starts` gives them, else a copy. Frames past the end are ``pad_value``: 0 for mel energies (zero energy), and
    ``log(LOG_OFFSET)`` for log-mel features, which is the same thing after the log.
    """
    n = frames.shape[-2]
    need = max(starts, default=0) + WINDOW_FRAMES
    if need > n:
        pad = frames.new_full((*frames.shape[:-2], need - n, frames.shape[-1]), pad_value)
        frames = torch.cat([frames, pad], dim=-2)
    hop = starts[1] - starts[0] if len(starts) > 1 else 1
    if starts and hop > 0 and all(b - a == hop for a, b in zip(starts, starts[1:])):
        # log_mel then writes the windows out once, from this view.
        windows = frames[..., starts[0]:, :].unfold(-2, WINDOW_FRAMES, hop)[..., :len(starts), :, :]
        return windows.transpose(-1, -2)
    idx = (torch.as_tensor(starts, dtype=torch.int64, device=frames.device).reshape(-1, 1)
           + torch.arange(WINDOW_FRAMES, device=frames.device))
    return frames[..., idx, :]


def frame_windows(frames: torch.Tensor, hop_frames: int, pad_value: float = 0.0) -> tuple[torch.Tensor, list[int]]:
    """Cut ``(n_frames, N_MELS)`` features into ``(n_windows, WINDOW_FRAMES, N_MELS)`` windows.

    The windows start at :func:`window_starts`; ``pad_value`` as for :func:`gather_windows`.
    """
    if frames.dim() != 2 or frames.shape[1] != N_MELS:
        raise InvalidArgumentError(f"expected (frames, {N_MELS}) features, got {tuple(frames.shape)}")
    starts = window_starts(frames.shape[0], hop_frames)
    return gather_windows(frames, starts, pad_value), starts


def log_mel_windows(waveform: torch.Tensor, hop_seconds: float = DEFAULT_HOP_SECONDS
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Model input for a 16 kHz mono waveform: ``(windows (n, 96, 64), timestamps (n,))``."""
    if waveform.dim() != 1:
        raise InvalidArgumentError(f"expected a mono 1-D waveform, got shape {tuple(waveform.shape)}")
    with single_threaded() if waveform.device.type == "cpu" else nullcontext():
        energies = mel_energies(waveform)
        windows, starts = frame_windows(energies, hop_frames(hop_seconds), pad_value=0.0)
        return log_mel(windows), window_timestamps(starts)
