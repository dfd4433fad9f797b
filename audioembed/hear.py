"""The HEAR 2021 API (https://hearbenchmark.com/hear-api.html) over an audioembed model.

    >>> import audioembed.hear as hear
    >>> model = hear.load_model("path/to/model_folder")   # "" -> the default model
    >>> scene = hear.get_scene_embeddings(audio, model)    # audio: (n_sounds, n_samples) at 16 kHz
    >>> emb, ts = hear.get_timestamp_embeddings(audio, model)

Scene embeddings are exactly :func:`audioembed.embed`'s segment embeddings: windows with the
default 0.96 s hop, averaged and re-normalised.

Timestamp embeddings use a 50 ms hop (``TIMESTAMP_HOP_SECONDS``, HEAR's usual choice). So that
the timestamps cover the whole sound rather than starting half a window (475 ms) in, each sound
is padded with ``PAD_SAMPLES`` of silence at both ends: window ``k`` is then centred at exactly
``k * 50`` ms of the original sound. Timestamps are in milliseconds, as HEAR requires.
"""
from __future__ import annotations

import torch

from audioembed import frontend
from audioembed.api import embed_windows, readout_network, segment_readout
from audioembed.errors import InvalidArgumentError
from audioembed.loading import load_model as _load
from audioembed.model import AudioResNet
from audioembed.precision import with_precision

TIMESTAMP_HOP_SECONDS = 0.05
# Half a window: the centre of window 0 then falls on the first sample of the sound.
PAD_SAMPLES = frontend.WINDOW_CENTRE_SAMPLES
BATCH_SIZE = 256  # windows per forward pass; bounds memory for long or many sounds


class HearModel(torch.nn.Module):
    """An embedding network with the attributes HEAR's harness reads."""

    sample_rate = frontend.SAMPLE_RATE

    def __init__(self, net: AudioResNet, layer: str = "embedding", precision: str = "auto"):
        super().__init__()
        self.net = net
        self.layer = layer
        # "auto" decides on each call: bf16 once the harness has moved the model to a CUDA GPU.
        self.readout = with_precision(readout_network(net, layer), precision)
        width = net.config.embedding_dim if layer == "embedding" else net.fc.in_features
        self.timestamp_embedding_size = width
        # pooled scenes are the mean and max of the windows' pooled features, concatenated
        self.scene_embedding_size = width if layer == "embedding" else 2 * width

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return self.readout(windows)


def load_model(model_file_path: str = "", layer: str = "embedding", precision: str = "auto"
               ) -> HearModel:
    """A model folder, registry name or ``hf-hub:`` name; ``""`` loads the default model.
    ``layer``: ``"embedding"`` (128-d) or ``"pooled"`` (2048-d per timestamp; mean and max,
    4096-d, per scene), and ``precision`` (``"auto"``: bf16 on CUDA), as ``audioembed.embed``."""
    return HearModel(_load(model_file_path or None), layer, precision)


def _check_audio(audio: torch.Tensor, model: HearModel) -> torch.Tensor:
    if not isinstance(audio, torch.Tensor) or audio.dim() != 2:
        shape = tuple(audio.shape) if hasattr(audio, "shape") else type(audio).__name__
        raise InvalidArgumentError(f"audio must be a (n_sounds, n_samples) tensor at "
                         f"{model.sample_rate} Hz, got {shape}")
    if audio.shape[1] == 0:
        raise InvalidArgumentError("audio has zero samples")
    if not torch.isfinite(audio).all():
        bad = sorted({int(i) for i in torch.nonzero(~torch.isfinite(audio))[:, 0]})
        raise InvalidArgumentError(f"audio of sounds {bad[:10]} holds NaN or infinite samples")
    return audio.to(next(model.parameters()).device, torch.float32)


def _check_finite(emb: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
    """``emb`` if every embedding is finite; samples so large that the power spectrum
    overflows float32 (|x| ~ 1e18) give NaN, which must not pass for an embedding."""
    bad = ~torch.isfinite(emb.reshape(emb.shape[0], -1)).all(dim=1)
    if bad.any():
        sounds = torch.nonzero(bad)[:, 0].tolist()
        peak = float(audio[bad].abs().max())
        raise InvalidArgumentError(f"the embeddings of sounds {sounds[:10]} are not finite: samples too "
                         f"large for the frontend (peak {peak:.3g}; audio is expected within "
                         "[-1, 1]); scale them down")
    return emb


def _log_mel_windows(audio: torch.Tensor, hop_frames: int) -> tuple[torch.Tensor, list[int]]:
    """``(n_sounds, n_windows, WINDOW_FRAMES, N_MELS)`` log-mel windows of equal-length sounds."""
    energies = frontend.mel_energies(audio)  # (n_sounds, frames, N_MELS)
    starts = frontend.window_starts(energies.shape[1], hop_frames)
    return frontend.log_mel(frontend.gather_windows(energies, starts)), starts


def _embed_windows(windows: torch.Tensor, model: HearModel) -> torch.Tensor:
    """``(n_sounds, n, T, F)`` windows -> ``(n_sounds, n, D)`` embeddings, in bounded batches."""
    flat = windows.reshape(-1, *windows.shape[2:])
    out = torch.from_numpy(embed_windows(model.readout, flat, BATCH_SIZE)).to(windows.device)
    return out.reshape(*windows.shape[:2], -1)


def get_timestamp_embeddings(audio: torch.Tensor, model: HearModel
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings every 50 ms: ``((n_sounds, n_timestamps, D), (n_sounds, n_timestamps) ms)``."""
    audio = _check_audio(audio, model)
    padded = torch.nn.functional.pad(audio, (PAD_SAMPLES, PAD_SAMPLES))
    windows, starts = _log_mel_windows(padded, frontend.hop_frames(TIMESTAMP_HOP_SECONDS))
    emb = _check_finite(_embed_windows(windows, model), audio)
    # Centre of window k in the padded sound, minus the padding: integer samples, then ms.
    centres = (torch.as_tensor(starts, dtype=torch.int64) * frontend.HOP_LENGTH
               + frontend.WINDOW_CENTRE_SAMPLES - PAD_SAMPLES)
    ms = centres.to(torch.float64) * 1000.0 / frontend.SAMPLE_RATE
    ts = ms.to(torch.float32).to(emb.device).expand(audio.shape[0], -1).contiguous()
    return emb, ts


def get_scene_embeddings(audio: torch.Tensor, model: HearModel) -> torch.Tensor:
    """One embedding per sound, ``(n_sounds, D)``: the same as ``audioembed.embed``."""
    audio = _check_audio(audio, model)
    windows, _ = _log_mel_windows(audio, frontend.hop_frames(frontend.DEFAULT_HOP_SECONDS))
    emb = _check_finite(_embed_windows(windows, model), audio)
    return torch.stack([torch.from_numpy(segment_readout(e.cpu().numpy(), model.layer)) for e in emb]
                       ).to(emb.device)
