"""``embed()``: audio in, 128-d embeddings out (an ``encode()``-style API)."""
from __future__ import annotations

import os
import warnings
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, NamedTuple

import numpy as np
import torch

from audioembed import frontend
from audioembed.audio_io import AudioError, SilentAudioWarning, TruncatedAudioWarning, silence_message
from audioembed.backends import choose_backend, default_workers, resolve_backend
from audioembed.errors import InvalidArgumentError
from audioembed.model import AudioResNet
from audioembed.prefetch import ordered_chunks
from audioembed.precision import check_precision, with_precision
from audioembed.streaming import FeatureChunk, input_chunks

DEFAULT_BATCH_SIZE = 64
# The most windows waiting for, or going through, the network at once, whatever the batch size:
# a forward pass of ResNet-50 holds ~1.7 MB of activations per window, so --batch-size 1000000
# on a 30-minute file (1875 windows) took 3.3 GB; 256 keep it under ~0.5 GB. Batches are split
# at this size; results do not depend on the batch size.
MAX_QUEUED_WINDOWS = 256
# What a window is read out as: the paper's unit-norm embedding (fc), or the 2048-d globally
# pooled features before it; a segment is then the mean and max over windows, concatenated.
LAYERS = ("embedding", "pooled")


class Embeddings(NamedTuple):
    """What ``embed(..., windows=True)`` returns.

    For one input: ``embedding`` (D,), ``window_embeddings`` (n, D), ``timestamps`` (n,) seconds.
    For a list: ``embedding`` (N, D) and lists of the per-input arrays.
    """

    embedding: np.ndarray
    window_embeddings: Any
    timestamps: Any


@dataclass
class ItemResult:
    """One input's outcome from :func:`iter_embeddings`: its windows' embeddings, or its error.

    ``silent``: the input was all zeros (it is embedded; callers warn; ``cancelled``: because
    its channels cancelled in the downmix). ``warnings``: one-line notes naming it (truncated).
    """

    index: int
    name: str
    window_embeddings: np.ndarray | None = None
    timestamps: np.ndarray | None = None
    error: Exception | None = None
    silent: bool = False
    cancelled: bool = False
    warnings: list[str] = field(default_factory=list)
    peak: float = 0.0
    _parts: list = field(default_factory=list, repr=False)
    _times: list = field(default_factory=list, repr=False)
    _remaining: int = 0  # windows queued but not yet through the network
    _complete: bool = False  # its last chunk has come
    layer: str = "embedding"

    @property
    def embedding(self) -> np.ndarray:
        """The segment's vector (see :func:`segment_readout`)."""
        return segment_readout(self.window_embeddings, self.layer)


def segment_embedding(window_embeddings: np.ndarray) -> np.ndarray:
    """Mean of window embeddings (paper 4.3), L2-normalised so cosine and dot product agree."""
    mean = window_embeddings.astype(np.float64).mean(axis=0)
    norm = np.linalg.norm(mean)
    return (mean / norm if norm > 0 else mean).astype(np.float32)


def segment_readout(window_features: np.ndarray, layer: str = "embedding") -> np.ndarray:
    """A segment from its windows: ``embedding``, the re-normalised mean (:func:`segment_embedding`);
    ``pooled``, the mean and the max over windows concatenated (``2 x 2048``), not normalised."""
    if layer == "embedding":
        return segment_embedding(window_features)
    if layer == "pooled":
        return np.concatenate([window_features.astype(np.float64).mean(axis=0),
                               window_features.max(axis=0)]).astype(np.float32)
    raise InvalidArgumentError(f"layer must be one of {', '.join(LAYERS)}, got {layer!r}")


class PooledFeatures(torch.nn.Module):
    """A network read out before its embedding layer: windows -> ``(B, 2048)`` pooled features."""

    def __init__(self, net: AudioResNet):
        super().__init__()
        self.net = net

    @property
    def embedding_dim(self) -> int:
        """Per-window width (what extract sizes its window outputs by)."""
        return self.net.fc.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.pooled(x)


def readout_network(net, layer: str):
    """``net`` itself for ``embedding``; for ``pooled`` a :class:`PooledFeatures` view of a torch
    network, or an ONNX one's ``pooled`` output (``export-onnx --pooled``)."""
    if layer not in LAYERS:
        raise InvalidArgumentError(f"layer must be one of {', '.join(LAYERS)}, got {layer!r}")
    if layer == "embedding":
        return net
    if hasattr(net, "with_output"):  # an ONNX model exported with its pooled output
        return net.with_output("pooled")
    if not isinstance(net, AudioResNet):
        raise InvalidArgumentError(f'layer="pooled" needs a torch model or an ONNX export with a '
                                   f"pooled output, got {type(net).__name__}")
    return PooledFeatures(net)


def item_name(item, index: int) -> str:
    return os.fspath(item) if isinstance(item, (str, os.PathLike)) else f"<input {index}>"


def iter_features(items: Iterable, sr: int | None, hop_seconds: float, workers: int = 0
                  ) -> Iterator[FeatureChunk]:
    """The log-mel windows of each input, as :class:`FeatureChunk` s in input order.

    Files are read in blocks (see ``audioembed.streaming``), so a long file is never held whole;
    a bad input gives a chunk holding its AudioError and the others go on. ``workers`` threads
    compute them ahead of the caller (``audioembed.prefetch``); the chunks are the same.
    """
    hop_frames = frontend.hop_frames(hop_seconds)
    items = list(items)

    def chunks_of(i: int) -> Iterator[FeatureChunk]:
        return input_chunks(i, items[i], sr, hop_frames, item_name(items[i], i))

    return ordered_chunks(items, chunks_of, workers)


def collect_features(chunks: Iterable[FeatureChunk]) -> Iterator[tuple[int, str, Any]]:
    """``(index, name, (windows, timestamps) or AudioError)`` per input, its chunks joined."""
    parts: dict[int, list[FeatureChunk]] = {}
    for chunk in chunks:
        got = parts.setdefault(chunk.index, [])
        got.append(chunk)
        if chunk.last:
            del parts[chunk.index]
            if chunk.error is not None:
                yield chunk.index, chunk.name, chunk.error
            else:
                yield chunk.index, chunk.name, (torch.cat([c.windows for c in got]),
                                                np.concatenate([c.timestamps for c in got]))


def embed_windows(model, windows: torch.Tensor, batch_size: int = DEFAULT_BATCH_SIZE,
                  device: str | torch.device | None = None) -> np.ndarray:
    """Log-mel windows ``(n, WINDOW_FRAMES, N_MELS)`` through the network: ``(n, D)`` float32.

    ``model``: an AudioResNet (run in inference mode on its own device; the caller sets eval
    mode, as :func:`audioembed.loading.cached_model` does), or any callable from windows to
    embeddings (``onnx_backend.OnnxModel``). ``batch_size`` windows go through at a time, on
    ``device`` (default: where the model's parameters are, else the CPU).
    """
    if windows.shape[0] > batch_size:
        return np.concatenate([embed_windows(model, windows[i:i + batch_size], batch_size, device)
                               for i in range(0, windows.shape[0], batch_size)])
    if not isinstance(model, torch.nn.Module):  # e.g. onnx_backend.OnnxModel
        return model(windows)
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = windows.unsqueeze(1).to(device, torch.float32, non_blocking=True)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        out = model(x).float().cpu()
    # Copied once the activations are freed: the network's own output tensor is allocated
    # while they still fill the heap, above them, and kept alive it pins the heap's top so
    # the freed space cannot be reused (peak memory crept up over an hour of audio).
    return out.numpy().copy()


def iter_embeddings(features: Iterable[FeatureChunk], model: AudioResNet,
                    batch_size: int = DEFAULT_BATCH_SIZE, layer: str = "embedding") -> Iterator[ItemResult]:
    """Embed the windows of many inputs in shared batches; yield each input's result in order.

    ``model``: an AudioResNet, or any callable from ``(B, 96, 64)`` windows to ``(B, D)``
    embeddings (see :func:`audioembed.backends.resolve_backend`); ``layer`` says how a result's
    ``embedding`` is made from its windows (:func:`segment_readout`; ``model`` must give that
    layer's windows, see :func:`readout_network`).

    Batches are filled with windows as they come, from one input's chunks and then the next
    input's, so small files do not waste batch slots and a long file never waits whole in
    memory; results do not depend on ``batch_size`` (the model is in eval mode).
    """
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise InvalidArgumentError(f"batch_size must be a positive integer, got {batch_size!r}")
    batch_size = min(batch_size, MAX_QUEUED_WINDOWS)
    order: deque[ItemResult] = deque()
    open_items: dict[int, ItemResult] = {}
    queue: deque[tuple[ItemResult, torch.Tensor]] = deque()
    queued = 0

    def run_batch(size: int) -> None:
        nonlocal queued
        owners, chunks, taken = [], [], 0
        while taken < size:
            res, win = queue[0]
            k = min(size - taken, win.shape[0])
            owners.append((res, k))
            chunks.append(win[:k])
            if k == win.shape[0]:
                queue.popleft()
            else:
                queue[0] = (res, win[k:])
            taken += k
        out = embed_windows(model, torch.cat(chunks), size)
        queued -= taken
        pos = 0
        for res, k in owners:
            res._parts.append(out[pos:pos + k])
            res._remaining -= k
            pos += k

    def fail(res: ItemResult, error: Exception) -> None:
        # Windows it already queued are dropped; embeddings already computed are discarded.
        nonlocal queued, queue
        queued -= sum(w.shape[0] for r, w in queue if r is res)
        queue = deque((r, w) for r, w in queue if r is not res)
        res.error, res._parts, res._times, res._remaining = error, [], [], 0

    def finished() -> Iterator[ItemResult]:
        while order and order[0]._complete and order[0]._remaining == 0:
            res = order.popleft()
            if res.error is None:
                window_embeddings = np.concatenate(res._parts)
                res._parts, times, res._times = [], res._times, []
                if np.isfinite(window_embeddings).all():
                    res.window_embeddings, res.timestamps = window_embeddings, np.concatenate(times)
                else:
                    res.error = AudioError(non_finite_message(res.name, res.peak))
            yield res

    for chunk in features:
        res = open_items.get(chunk.index)
        if res is None:
            res = open_items[chunk.index] = ItemResult(index=chunk.index, name=chunk.name, layer=layer)
            order.append(res)
        if chunk.error is not None:
            fail(res, chunk.error)
        elif chunk.windows.shape[0]:
            queue.append((res, chunk.windows))
            queued += chunk.windows.shape[0]
            res._remaining += chunk.windows.shape[0]
            res._times.append(chunk.timestamps)
        if chunk.last:
            res._complete, res.silent, res.cancelled = True, chunk.silent, chunk.cancelled
            res.peak, res.warnings = chunk.peak, list(chunk.warnings or [])
            del open_items[chunk.index]
        while queued >= batch_size:
            run_batch(batch_size)
        yield from finished()
    while queued:
        run_batch(min(queued, batch_size))
    yield from finished()


def non_finite_message(name: str, peak: float) -> str:
    """Why an input whose samples are finite gave a non-finite embedding: they are so large
    that the power spectrum overflows float32."""
    return (f"{name}: its embedding is not finite: samples too large for the frontend (peak "
            f"{peak:.3g}; float audio is expected within [-1, 1]); scale it down")


def _is_single(audio) -> bool:
    return not isinstance(audio, (list, tuple))


def embed(audio, sr: int | None = None, *, model: str | os.PathLike | AudioResNet | None = None,
          hop: float = frontend.DEFAULT_HOP_SECONDS, batch_size: int = DEFAULT_BATCH_SIZE,
          device: str | torch.device | None = None, windows: bool = False, progress: bool = False,
          backend: str | None = None, workers: int | None = None, layer: str = "embedding",
          precision: str = "auto"):
    """Embed audio with the paper's frontend and network.

    Args:
        audio: a path, a numpy array or torch tensor (1-D, or 2-D ``(channels, samples)``, with
            ``sr``), or a list of paths or arrays. Channels are averaged to mono; any sample rate
            is resampled to 16 kHz.
        sr: sample rate of array input; given with only paths, it raises (a file's rate is
            read from the file).
        model: a registry name, a model folder, ``hf-hub:org/repo[@rev]`` (the Hub branch,
            tag or commit goes after ``@``, as with ``--model``; the same as
            ``load_model("hf-hub:org/repo", revision=rev)``), an ``.onnx`` file (run by
            onnxruntime: see ``backend``), or a loaded model (a torch module is used as it is
            when in eval mode and on ``device``; otherwise an eval-mode copy on ``device`` is,
            and the caller's module is left unchanged). Default: the bundled release weights.
        hop: seconds between window starts (default 0.96: no overlap).
        batch_size: windows per forward pass; windows of many inputs share batches.
        device: where the model runs (default CPU).
        windows: also return per-window embeddings and their timestamps (window centres, s).
        progress: a tqdm progress bar over inputs on stderr.
        backend: ``"torch"``, ``"onnx"`` to run the network with onnxruntime (CPU; needs
            ``pip install 'audioembed[onnx]'``), or ``"onnx-int8"`` for onnxruntime with the
            network statically quantized to int8. With the onnx backends, ``model`` may also be
            an ``.onnx`` file from ``audioembed export-onnx`` (for ``"onnx-int8"`` a quantized
            one, ``--int8``: another raises); any other model is exported (and quantized) in
            memory once per process. Default (None): ``"onnx"`` for an ``.onnx`` file, else
            ``"torch"``; ``"torch"`` with an ``.onnx`` file raises.
        workers: threads that read and analyse inputs while the network runs (0: none).
            Default (None): as ``audioembed extract``, one, or none for a torch network on the
            CPU of a machine with two cores or fewer (:func:`audioembed.backends.default_workers`).
            Results do not depend on it.
        layer: ``"embedding"`` (the paper's 128-d output) or ``"pooled"``: the 2048-d globally
            pooled features before the embedding layer, per window; a segment is then their
            mean and max concatenated (4096-d), not normalised (for linear probes). Every
            backend gives it; an ``.onnx`` file must have been exported with ``--pooled``.
        precision: how the torch network computes: ``"auto"`` (bf16 on a CUDA GPU with bf16,
            fp32 elsewhere), ``"fp32"``, or ``"bf16"``: autocast of the network (the frontend
            stays fp32), on CUDA or a CPU with AVX512-BF16 or AMX; cosine >= 0.999 to fp32.
            ``"bf16"`` is refused with the onnx backends and where it is not native.

    Returns:
        One input: a ``(D,)`` float32 array; a list: ``(N, D)``, row i for input i. The segment
        embedding is the mean of the window embeddings, re-normalised to unit L2 norm (with
        ``layer="pooled"``, see ``layer``). With ``windows=True``, an :class:`Embeddings` tuple.

    Raises:
        AudioError: an input cannot be read, is empty, has non-finite samples or samples so
            large that its embedding is not finite (the message names it).
        InvalidArgumentError: a bad argument, e.g. ``precision="bf16"`` where it cannot run,
            ``backend="torch"`` with an ``.onnx`` file, or ``backend="onnx-int8"`` with an
            ``.onnx`` file that is not quantized.

    Warns:
        SilentAudioWarning: an input is all zeros. TruncatedAudioWarning: a file holds less
        audio than its header declares (the readable part is embedded).
    """
    if isinstance(audio, Iterator):
        # Taken as one input it would fail as an array of dtype object, far from the cause.
        raise InvalidArgumentError(f"embed() got {type(audio).__name__} {audio!r}: pass a path, "
                                   "an array or tensor, or a list of them (e.g. list(...))")
    single = _is_single(audio)
    items = [audio] if single else list(audio)
    if not items:
        raise InvalidArgumentError("embed() got an empty list of inputs")
    if sr is not None and all(isinstance(it, (str, os.PathLike)) for it in items):
        # A file's rate comes from its header; an sr that would be ignored is a caller's mistake.
        raise InvalidArgumentError(f"embed() got sr={sr!r} with file input: sr is the rate of array "
                                   "input only (a file's rate is read from the file)")
    backend = choose_backend(model, backend)
    check_precision(precision, backend)  # before a model is loaded or exported
    net = resolve_backend(model, device, backend, pooled=layer == "pooled")
    net = with_precision(readout_network(net, layer), precision, backend)
    if workers is None:
        workers = default_workers(device, backend)
    feats = iter_features(items, sr, hop, workers)
    results = iter_embeddings(feats, net, batch_size, layer)
    if progress:
        from tqdm.auto import tqdm
        results = tqdm(results, total=len(items), unit="file", desc="embed")
    out = []
    for res in results:
        raise_or_warn(res)
        out.append(res)
    segs = np.stack([r.embedding for r in out])
    if not windows:
        return segs[0] if single else segs
    if single:
        return Embeddings(segs[0], out[0].window_embeddings, out[0].timestamps)
    return Embeddings(segs, [r.window_embeddings for r in out], [r.timestamps for r in out])


def raise_or_warn(res: ItemResult) -> None:
    """Raise an input's error, or warn (at the caller's caller) of its truncation and silence."""
    if res.error is not None:
        raise res.error
    for line in res.warnings:
        warnings.warn(line, TruncatedAudioWarning, stacklevel=3)
    if res.silent:
        warnings.warn(silence_message(res.name, res.cancelled), SilentAudioWarning, stacklevel=3)
