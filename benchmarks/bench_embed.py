"""End-to-end ``embed()`` throughput against the bare network, in one run.

    python benchmarks/bench_embed.py [--seconds 60] [--repeats 5] [--sr 16000]

A randomly initialised ResNet-50 is saved to a temporary model folder (the release format), a
``--seconds`` long noise clip is written as a WAV file at ``--sr``, and the script prints:

* end-to-end windows/s of ``embed(path, model=folder)``: decode, resample, frontend, batching,
  forward, pooling (the model load is cached by ``embed`` and done once before timing);
* model-only windows/s: the same batches of precomputed log-mel windows through the same model,
  channels_last under ``inference_mode``;
* their ratio (target: >= 0.9).

Each figure is the best of ``--repeats`` timed runs, the two measurements alternating, which is
the least disturbed by other processes on a shared machine; the load average is printed too.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from common import interleaved_times, load_average, machine_line  # also puts the checkout on sys.path

import numpy as np
import soundfile as sf
import torch

from audioembed import AudioResNet, ModelConfig, embed, frontend, save_model_folder
from audioembed.api import DEFAULT_BATCH_SIZE
from audioembed.loading import cached_model
from audioembed.audio_io import load_waveform


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="clip length (default 60)")
    ap.add_argument("--sr", type=int, default=frontend.SAMPLE_RATE, help="clip sample rate")
    ap.add_argument("--repeats", type=int, default=8, help="timed runs per measurement; best kept")
    ap.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    args = ap.parse_args()

    load_before = load_average()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_model_folder(AudioResNet(ModelConfig()).eval(), Path(tmp) / "model",
                                   provenance={"note": "random init, benchmark only"})
        wav = Path(tmp) / "clip.wav"
        sf.write(wav, (0.1 * rng.standard_normal(int(args.seconds * args.sr))).astype(np.float32),
                 args.sr, subtype="FLOAT")

        # Warm-up: loads (and caches) the model, and lets oneDNN pick its kernels.
        first = embed(wav, model=folder, batch_size=args.batch_size, windows=True)
        n_windows = first.window_embeddings.shape[0]

        # The very instance embed() uses (it caches loads per folder), so both timings share weights.
        model = cached_model(folder, None)
        windows, _ = frontend.log_mel_windows(load_waveform(wav))
        batches = [windows[i:i + args.batch_size].unsqueeze(1).contiguous(memory_format=torch.channels_last)
                   for i in range(0, windows.shape[0], args.batch_size)]

        def model_only() -> None:
            with torch.inference_mode():
                for b in batches:
                    model(b)

        with torch.inference_mode():
            direct = torch.cat([model(b) for b in batches]).numpy()
        # Both paths must compute the same thing, or the comparison means nothing.
        if not np.allclose(direct, first.window_embeddings, rtol=0, atol=1e-5):
            raise SystemExit("embed() and the direct forward disagree; not benchmarking")
        times = interleaved_times({
            "e2e": lambda: embed(wav, model=folder, batch_size=args.batch_size),
            "fwd": model_only,
        }, args.repeats)
        e2e, fwd = min(times["e2e"]), min(times["fwd"])
        # Per-round ratios pair runs that saw similar background load; their median is a second,
        # load-robust estimate next to the ratio of the two best times.
        paired = statistics.median(f / e for f, e in zip(times["fwd"], times["e2e"]))

    print(machine_line(load_before))
    print(f"clip: {args.seconds:g} s at {args.sr} Hz -> {n_windows} windows, batch size {args.batch_size}, "
          f"best of {args.repeats}")
    print(f"end-to-end embed(): {n_windows / e2e:8.1f} windows/s  ({e2e * 1e3:.1f} ms)")
    print(f"model-only forward: {n_windows / fwd:8.1f} windows/s  ({fwd * 1e3:.1f} ms)")
    print(f"ratio end-to-end / model-only: {fwd / e2e:.3f} (best times), {paired:.3f} (median of "
          f"per-round ratios); target >= 0.9")


if __name__ == "__main__":
    main()
