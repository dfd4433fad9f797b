"""The frontend block by block: long audio is decoded, resampled and framed in bounded memory.

Each stage keeps only the overlap the next block needs, so memory does not grow with the
length of the input, and the output equals the whole-signal computation
(``frontend.log_mel_windows(audio_io.load_waveform(x))``): the resampled samples to the bit, the STFT
frames up to float rounding of its batched products (to the bit, too, in the tests):

* ``resample.make_resampler``: torchaudio's polyphase filter, fed block by block (see
  ``audioembed.resample``).
* :class:`FrameStream`: STFT frame ``f`` analyses samples ``f*HOP ± N_FFT/2`` (zeros outside
  the signal); a frame is computed once every sample it reads has arrived.
* :class:`WindowStream`: a window is emitted as soon as its ``WINDOW_FRAMES`` frames exist; at
  the end the short-clip and trailing-window rules of ``frontend.window_starts`` decide the rest.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from audioembed import frontend
from audioembed.audio_io import AudioError, AudioSource, SampleChecker
from audioembed.resample import as_samples, make_resampler

# Seconds of audio decoded per block. Output does not depend on it; memory and the number of
# windows handed on at a time (about BLOCK_SECONDS / hop) do. Blocks of 20 s (about 30 MB
# of transient buffers for 44.1 kHz stereo) measured ~40 MB more peak RSS on a long file than
# 5 s, for no gain in speed.
BLOCK_SECONDS = 5


def _appended(buffer: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``buffer`` then ``x`` along the first dimension; ``x`` itself, not a copy, when the
    buffer is empty (a short clip's whole signal, a long file's first block). Neither is
    written to afterwards: the streams only slice them."""
    return x if buffer.shape[0] == 0 else torch.cat([buffer, x])


class FrameStream:
    """16 kHz samples in, mel energies ``(frames, N_MELS)`` out as soon as they are complete."""

    # Frames of look-back before the next frame: frame f reads back to f*HOP - N_FFT/2.
    CONTEXT = -(-(frontend.N_FFT // 2) // frontend.HOP_LENGTH)

    def __init__(self):
        self._buf = torch.zeros(0)
        self._first = 0  # frame whose centre is self._buf[0]
        self._next = 0  # next frame to emit
        self._n = 0  # samples received

    def push(self, x: torch.Tensor) -> torch.Tensor:
        self._buf = _appended(self._buf, x)
        self._n += x.shape[-1]
        # Frame f is complete once samples up to f*HOP + N_FFT/2 have arrived.
        reach = self._n - frontend.N_FFT // 2
        return self._emit(reach // frontend.HOP_LENGTH + 1 if reach >= 0 else 0, final=False)

    def finish(self, x: torch.Tensor | None = None) -> torch.Tensor:
        """The remaining frames, after the last samples ``x`` if given (one STFT for both, not
        two); the signal is zero after its end, as in the whole-signal STFT."""
        if x is not None and x.shape[-1]:
            self._buf = _appended(self._buf, x)
            self._n += x.shape[-1]
        return self._emit(frontend.num_frames(self._n), final=True)

    def _emit(self, stop: int, final: bool) -> torch.Tensor:
        if stop <= self._next:
            return torch.zeros(0, frontend.N_MELS)
        step = frontend.HOP_LENGTH
        # The buffer starts at sample first*HOP, a frame centre, and at least CONTEXT frames
        # before the next frame (or at the signal's start, where the STFT pads zeros as the
        # whole-signal one does). Frames of the buffer's STFT from there on read real samples.
        end = self._buf.shape[0] if final else (stop - 1 - self._first) * step + frontend.N_FFT // 2
        mel = frontend.mel_energies(self._buf[:end])[self._next - self._first:stop - self._first]
        self._next = stop
        first = max(0, stop - self.CONTEXT)
        self._buf = self._buf[(first - self._first) * step:]
        self._first = first
        return mel


class WindowStream:
    """Mel energies in, log-mel windows ``(n, WINDOW_FRAMES, N_MELS)`` and start frames out."""

    def __init__(self, hop_frames: int):
        self.hop_frames = hop_frames
        self._frames = torch.zeros(0, frontend.N_MELS)
        self._first = 0  # frame index of self._frames[0]
        self._k = 0  # next window
        self._n = 0  # frames received

    def push(self, energies: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        self._frames = _appended(self._frames, energies)
        self._n += energies.shape[0]
        # A window whose frames all exist is in window_starts() whatever the final length.
        full = (self._n - frontend.WINDOW_FRAMES) // self.hop_frames + 1 if self._n >= frontend.WINDOW_FRAMES else 0
        return self._cut(list(range(self._k * self.hop_frames, full * self.hop_frames, self.hop_frames)))

    def finish(self, energies: torch.Tensor | None = None) -> tuple[torch.Tensor, list[int]]:
        """The windows left by ``frontend.window_starts`` for the final frame count, padded,
        after the last frames ``energies`` if given (the windows they complete included)."""
        if energies is not None and energies.shape[0]:
            self._frames = _appended(self._frames, energies)
            self._n += energies.shape[0]
        return self._cut([s for s in frontend.window_starts(self._n, self.hop_frames) if s >= self._k * self.hop_frames])

    def _cut(self, starts: list[int]) -> tuple[torch.Tensor, list[int]]:
        if not starts:
            return torch.zeros(0, frontend.WINDOW_FRAMES, frontend.N_MELS), starts
        # Padding with zero energy, then the log: the same operations as frontend.log_mel_windows.
        windows = frontend.log_mel(frontend.gather_windows(
            self._frames, [s - self._first for s in starts], pad_value=0.0))
        self._k += len(starts)
        first = min(self._k * self.hop_frames, self._n)
        self._frames = self._frames[first - self._first:]
        self._first = first
        return windows, starts


class LogMelStream:
    """Mono blocks at ``sr`` Hz in, log-mel windows and their start frames out (``hop_frames`` apart)."""

    def __init__(self, sr: int, hop_frames: int):
        self._resampler, self._frames, self._windows = make_resampler(sr), FrameStream(), WindowStream(hop_frames)

    def push(self, block: np.ndarray) -> tuple[torch.Tensor, list[int]]:
        # Per call, not around a generator's yields: the caller's thread runs the network
        # between blocks, and that wants all its threads (see frontend.single_threaded).
        with frontend.single_threaded():
            return self._windows.push(self._frames.push(self._resampler.push(as_samples(block))))

    def finish(self, block: np.ndarray | None = None) -> tuple[torch.Tensor, list[int]]:
        """The rest of the windows, after the last block if given: what ``push(block)`` then
        ``finish()`` give, in one resampling product, one STFT and one cut instead of two of
        each (each has a fixed cost of torch ops, which every input pays, short clips most)."""
        with frontend.single_threaded():
            samples = None if block is None else as_samples(block)
            return self._windows.finish(self._frames.finish(self._resampler.finish(samples)))


@dataclass
class FeatureChunk:
    """Part of one input's log-mel windows, in the order :func:`input_chunks` makes them.

    An input's last chunk has ``last=True`` and says whether the audio was all zeros
    (``silent``; ``cancelled`` if only because its channels cancelled in the downmix), its peak
    sample magnitude and any ``warnings`` about it (one-line, naming it: a truncated file).
    An input that fails ends with a chunk holding only its ``error`` (an AudioError naming it);
    its earlier chunks are void. ``seconds`` is the audio that chunk's block held (progress).
    """

    index: int
    name: str
    windows: torch.Tensor | None = None  # (n, WINDOW_FRAMES, N_MELS) log-mel
    timestamps: np.ndarray | None = None  # (n,) window centres, seconds
    last: bool = False
    silent: bool = False
    error: AudioError | None = None
    seconds: float = 0.0
    cancelled: bool = False
    peak: float = 0.0
    warnings: list[str] | None = None


def input_chunks(index: int, item, sr: int | None, hop_frames: int, name: str) -> Iterator[FeatureChunk]:
    """The :class:`FeatureChunk` s of one input (path, array or tensor), windows ``hop_frames`` apart.

    The input is read ``BLOCK_SECONDS`` at a time; the chunks hold the windows each block
    completes. Together they equal ``frontend.log_mel_windows(load_waveform(item, sr), ...)``.

    Any exception but an interrupt fails this input alone: an AudioError as it is, anything
    unexpected (a bug, a MemoryError) as an AudioError naming the input and the exception.
    """
    checker = SampleChecker(name)
    pending = 0.0  # seconds read since the last chunk handed on
    try:
        with AudioSource(item, sr, name) as src:
            stream = LogMelStream(src.rate, hop_frames)
            last = None  # the block read last, pushed once the next one shows it is not the end
            for block in src.blocks(BLOCK_SECONDS * src.rate):
                checker.update(block)
                if last is not None:
                    pending += last.size / src.rate
                    windows, starts = stream.push(last)
                    if starts:
                        yield FeatureChunk(index, name, windows, frontend.window_timestamps(starts).numpy(),
                                           seconds=pending)
                        pending = 0.0
                last = block
            truncated = src.truncation(checker.count)
            if truncated is not None and checker.count == 0:
                raise AudioError(f"{truncated}; nothing to embed")
            silent = checker.finish()
            cancelled = silent and src.channels_nonzero
            if last is not None:
                pending += last.size / src.rate
            windows, starts = stream.finish(last)
    except AudioError as exc:
        yield FeatureChunk(index, name, last=True, error=exc)
        return
    except Exception as exc:  # noqa: BLE001 - one input's failure, whatever it is, is its own
        error = AudioError(f"{name}: failed with {type(exc).__name__}: {exc}".replace("\n", " "))
        error.__cause__ = exc
        yield FeatureChunk(index, name, last=True, error=error)
        return
    yield FeatureChunk(index, name, windows, frontend.window_timestamps(starts).numpy(),
                       last=True, silent=silent, seconds=pending, cancelled=cancelled,
                       peak=checker.peak, warnings=[truncated] if truncated else [])
