"""Memory and throughput at scale: a long file, a folder of many clips, two shards.

    python benchmarks/bench_scale.py [--threads 1] [--long-minutes 60] [--clips 500] [--json PATH]

With a randomly initialised ResNet-50 saved as a release-format model folder, it prints:

1. RSS of a fresh process that embeds a ``--long-minutes`` file, next to ones that embed a
   1- and a 5-minute file (each its own subprocess, reading /proc/self/status and ``ru_maxrss``): after
   import, after loading the model, the peak while embedding (high-water mark reset after the
   load) and the whole process's peak. Files are 44.1 kHz stereo 16-bit WAV, so decoding,
   downmixing and resampling are all exercised. Targets: the long file's embedding peak above
   the freshly imported process < model size + 300 MB; long minus 1-minute < 100 MB.
2. Throughput over ``--clips`` five-second clips (44.1 kHz mono unless ``--clip-rate`` /
   ``--clip-channels`` say otherwise, generated here): ``extract`` end to
   end (files found, read, resampled, framed, embedded, npz written) with 1 feature worker and
   with none, against the model alone on the same windows, in the same run, alternating
   rounds; windows/s, the ratio (target >= 0.95) and the real-time factor. With onnxruntime
   installed, the same for ``backend="onnx"`` and ``"onnx-int8"`` (statically quantized)
   against onnxruntime alone, and int8 end to end over torch end to end, each with the number of
   feature workers ``extract`` uses by default on this machine (``--no-onnx``: skip). On a CPU
   with AVX512-BF16 or AMX, also torch with ``precision="bf16"`` (``--no-bf16``: skip). Last,
   one line to compare: each backend's end-to-end real-time factor on the same clips.
3. Where the time goes (``--only profile``): one ``extract`` per backend under cProfile, the
   share of the wall time in the network, decoding, sample checks, resampling, STFT + mel and
   windowing; then the frontend alone, in CPU ms per window.
4. The same folder through ``audioembed extract`` as one process and as two ``--shard``
   processes at once (wall time, process start and model load included).

Each process uses ``--threads`` intra-op threads (shards: one each) and keeps freed memory for
reuse as the ``audioembed`` command does (``audioembed.allocator``; ``--malloc system``: glibc's
own thresholds); throughput rows count the page faults per window. The machine's load
average is printed before and after: on a shared machine the figures are only indicative.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import cpu_flags, interleaved_times, load_average, machine_line, write_record  # also puts the checkout on sys.path

import numpy as np
import soundfile as sf
import torch

from audioembed.allocator import OPT_OUT_VARIABLE, keep_freed_memory

REPO = Path(__file__).resolve().parent.parent
SR = 44100
MB = 2 ** 20


def write_noise_wav(path: Path, seconds: float, sr: int = SR, channels: int = 2, seed: int = 0) -> None:
    """Tones in noise, written a minute at a time so the benchmark itself stays small."""
    rng = np.random.default_rng(seed)
    n, step = int(seconds * sr), 60 * sr
    with sf.SoundFile(path, "w", sr, channels, subtype="PCM_16") as f:
        for a in range(0, n, step):
            t = np.arange(a, min(n, a + step)) / sr
            tone = 0.2 * np.sin(2 * np.pi * (220 + 20 * (a // step % 7)) * t)
            block = tone[:, None] + 0.05 * rng.standard_normal((len(t), channels))
            f.write(block.astype(np.float32))


def proc_status_mb(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process from /proc, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"/proc/self/status has no {field}")


def child(args) -> None:
    """In a fresh process: load the model, optionally embed one file; report RSS figures as JSON.

    ``peak_rss_mb`` is the whole process's peak (``ru_maxrss``), model loading included. After
    loading, the kernel's high-water mark is reset (``/proc/self/clear_refs``), so
    ``embed_peak_mb`` is the peak while embedding alone.
    """
    torch.set_num_threads(args.threads)
    from audioembed import embed
    from audioembed.loading import cached_model

    out = {"import_rss_mb": proc_status_mb("VmRSS")}
    t0 = time.perf_counter()
    cached_model(args.model, None)
    out.update(load_s=time.perf_counter() - t0, loaded_rss_mb=proc_status_mb("VmRSS"))
    if args.child != "load":
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        t0 = time.perf_counter()
        r = embed(args.child, model=args.model, windows=True)
        out.update(windows=int(r.window_embeddings.shape[0]), embed_s=time.perf_counter() - t0,
                   embed_peak_mb=proc_status_mb("VmHWM"))
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def run_child(what: str, model: Path, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--child", what, "--model", str(model), "--threads", str(threads)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        raise SystemExit(f"child {what} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def memory(tmp: Path, model: Path, model_mb: float, args) -> None:
    minutes = [1, 5, args.long_minutes]
    runs = []
    for i, m in enumerate(minutes):
        path = tmp / f"{m:g}min.wav"
        write_noise_wav(path, m * 60, seed=i)
        runs.append((m, path.stat().st_size / MB, run_child(str(path), model, args.threads)))
    one, big = runs[0][2], runs[-1][2]
    above = big["embed_peak_mb"] - big["import_rss_mb"]
    growth = big["embed_peak_mb"] - one["embed_peak_mb"]
    print(f"\n[1] RSS of a fresh process per file (44.1 kHz stereo PCM_16); the model is {model_mb:.0f} MB "
          f"of fp32 parameters; batch {64}, {args.threads} thread(s)")
    print(f"  {'':>16} {'after import':>13} {'model loaded':>13} {'peak embedding':>15} {'process peak':>13}")
    for m, size, r in runs:
        print(f"  {f'{m:g} min ({size:.0f} MB)':>16} {r['import_rss_mb']:10.0f} MB {r['loaded_rss_mb']:10.0f} MB "
              f"{r['embed_peak_mb']:12.0f} MB {r['peak_rss_mb']:10.0f} MB   ({r['windows']} windows, "
              f"{r['windows'] / r['embed_s']:.1f} windows/s)")
    print(f"  peak embedding the {args.long_minutes:g}-min file, above the imported process: {above:.0f} MB "
          f"(target < model + 300 = {model_mb + 300:.0f} MB: {'met' if above < model_mb + 300 else 'NOT met'})")
    print(f"  {args.long_minutes:g}-min minus 1-min, peak embedding: {growth:.0f} MB "
          f"(target < 100 MB: {'met' if growth < 100 else 'NOT met'}); {args.long_minutes:g}-min minus 5-min: "
          f"{big['embed_peak_mb'] - runs[1][2]['embed_peak_mb']:.0f} MB")


def throughput(folder: Path, model: Path, n_audio_s: float, args) -> None:
    from audioembed import extract
    from audioembed.api import collect_features, embed_windows, iter_features
    from audioembed.loading import cached_model
    from audioembed.precision import with_precision

    net = cached_model(model, None)
    paths = sorted(folder.glob("*.wav"))
    windows = torch.cat([f[0] for _, _, f in collect_features(iter_features(paths, None, 0.96))])
    batches = [windows[i:i + 64] for i in range(0, len(windows), 64)]
    n = len(windows)

    def network_only(run) -> callable:
        def go() -> None:
            for b in batches:
                run(b)
        return go

    def e2e(workers: int, backend: str = "torch", precision: str = "fp32"):
        def go() -> None:
            report = extract.run([folder], folder.parent / "e2e.npz", model=model, workers=workers,
                                 overwrite=True, backend=backend, precision=precision)
            if report.failures or report.succeeded != len(paths):
                raise SystemExit(f"extract failed: {report.failures[:3]}")
        return go

    # Each end-to-end row is compared with its backend's network alone on the same windows.
    runs = {"e2e, 1 worker": (e2e(1), "model only"), "e2e, no worker": (e2e(0), "model only"),
            "model only": (network_only(lambda b: embed_windows(net, b)), None)}
    # (label in the summary line, its end-to-end rows by workers): torch first, then the others.
    e2e_rows = {"torch": ("e2e, no worker", "e2e, 1 worker")}
    if args.bf16:
        bf16_net = with_precision(net, "bf16")
        runs.update({"torch+bf16 e2e, 1 worker": (e2e(1, precision="bf16"), "torch+bf16 model only"),
                     "torch+bf16 e2e, no worker": (e2e(0, precision="bf16"), "torch+bf16 model only"),
                     "torch+bf16 model only": (network_only(lambda b: embed_windows(bf16_net, b)), None)})
        e2e_rows["torch+bf16"] = ("torch+bf16 e2e, no worker", "torch+bf16 e2e, 1 worker")
    if args.onnx:
        from audioembed.onnx_backend import onnx_model
        from audioembed.quantize import int8_model

        nets = {"onnx": onnx_model(model), "onnx-int8": int8_model(model)}  # int8: quantized once here
        for backend, onnx_net in nets.items():
            runs.update({f"{backend} e2e, 1 worker": (e2e(1, backend), f"{backend} model only"),
                         f"{backend} e2e, no worker": (e2e(0, backend), f"{backend} model only"),
                         f"{backend} model only": (network_only(onnx_net), None)})
            e2e_rows[backend] = (f"{backend} e2e, no worker", f"{backend} e2e, 1 worker")
    for fn, _ in runs.values():
        fn()  # warm-up: oneDNN / onnxruntime kernel choice, file cache
    faults = {name: 0 for name in runs}
    times = interleaved_times({name: counting_faults(fn, faults, name) for name, (fn, _) in runs.items()},
                              args.repeats)
    print(f"\n[2] {len(paths)} clips of {args.clip_seconds:g} s, {clip_format(args)} -> {n} windows; batch 64; "
          f"{args.threads} thread(s); best of {args.repeats} alternating rounds; CPU flags: {cpu_flags()}; "
          f"malloc: {args.malloc_line}")
    # Each row against its network alone: the best rounds' ratio, and the ratio of every round to
    # the network alone run beside it. On shared cores the best rounds of two rows can fall at
    # different times, so the median and range of the per-round ratios are kept too.
    per_round = {name: [f / t for f, t in zip(times[runs[name][1]], ts)]
                 for name, ts in times.items() if runs[name][1] is not None}
    best_ratio = {name: min(times[runs[name][1]]) / min(times[name]) for name in per_round}
    for name, ts in times.items():
        best, ref = min(ts), runs[name][1]
        ratio = "" if ref is None else (
            f"  ratio to {ref} {best_ratio[name]:.3f} (best), "
            f"{statistics.median(per_round[name]):.3f} (median per round; rounds "
            f"{min(per_round[name]):.3f}-{max(per_round[name]):.3f})")
        print(f"  {name:>26}: {n / best:7.1f} windows/s, real-time factor {best / n_audio_s:.4f} "
              f"({n_audio_s / best:.0f}x real time), {faults[name] / (n * args.repeats):6.0f} page faults "
              f"per window{ratio}")
    if not args.bf16:
        print("  torch+bf16: not run (--no-bf16, or this CPU lacks AVX512-BF16 and AMX)")
    print("  " + summary_line(times, e2e_rows, n_audio_s))
    if args.json:
        def ratios(name: str) -> list[str]:
            if name not in per_round:
                return ["–", "–"]
            r = per_round[name]
            return [f"{best_ratio[name]:.3f}", f"{statistics.median(r):.3f} ({min(r):.3f}-{max(r):.3f})"]

        rows = [[name, f"{n / min(ts):.1f}", *ratios(name)] for name, ts in times.items()]
        args.record.update(
            title="extract over a folder of clips against the network alone",
            columns=["run", "windows/s (best round)", "ratio to the network alone (best rounds)",
                     "ratio, median per round (rounds' range)"],
            rows=rows)
        args.record["notes"] = [f"{len(paths)} clips of {args.clip_seconds:g} s, {clip_format(args)}, "
                                    f"{n} windows, batch 64, best of {args.repeats} alternating rounds; "
                                    f"malloc: {args.malloc_line}",
                                "Page faults per window: " + ", ".join(
                                    f"{name} {faults[name] / (n * args.repeats):.0f}" for name in times),
                                    summary_line(times, e2e_rows, n_audio_s)]
    if "onnx-int8" in e2e_rows:
        best = {k: min(v) for k, v in times.items()}
        torch_row, int8_row = default_row(e2e_rows, "torch"), default_row(e2e_rows, "onnx-int8")
        print(f"  onnx-int8 e2e / torch e2e, each with extract's default workers here "
              f"({int8_row!r} / {torch_row!r}): {best[torch_row] / best[int8_row]:.2f}x (target >= 2.0)")


def counting_faults(fn, faults: dict[str, int], name: str):
    """``fn``, adding the process's minor page faults while it runs to ``faults[name]``."""
    def go() -> None:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        fn()
        faults[name] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    return go


def clip_format(args) -> str:
    """The clips' format, as the figures' notes say it: ``44.1 kHz mono 16-bit``."""
    rate = f"{args.clip_rate / 1000:g} kHz"
    channels = {1: "mono", 2: "stereo"}.get(args.clip_channels, f"{args.clip_channels}-channel")
    return f"{rate} {channels} 16-bit"


def default_row(e2e_rows: dict[str, tuple[str, str]], label: str) -> str:
    """The end-to-end row of ``label`` run with the feature workers ``extract`` uses by default
    on this machine (``backends.default_workers``)."""
    from audioembed.backends import default_workers

    backend = "torch" if label.startswith("torch") else label
    return e2e_rows[label][default_workers(None, backend)]


def summary_line(times: dict[str, list[float]], e2e_rows: dict[str, tuple[str, str]],
                 n_audio_s: float) -> str:
    """One line a user can compare: each backend's end-to-end real-time factor (seconds of
    compute per second of audio, best round) on the same clips, with extract's default
    workers, and how many times real time that is."""
    parts = [f"{label} {min(times[default_row(e2e_rows, label)]) / n_audio_s:.4f} "
             f"({n_audio_s / min(times[default_row(e2e_rows, label)]):.0f}x)" for label in e2e_rows]
    return "end to end, real-time factor (x real time), extract's default workers: " + ", ".join(parts)


# Where extract's time goes: (label, file, function whose cumulative time it is). The stages do
# not nest, except that "network" and the feature stages together are inside extract.run.
PROFILE_STAGES = [
    ("network", "audioembed/api.py", "embed_windows"),
    ("decode + downmix", "audioembed/audio_io.py", "blocks"),
    ("sample checks", "audioembed/audio_io.py", "update"),
    ("resample", "audioembed/resample.py", "_run"),
    ("STFT + mel", "audioembed/frontend.py", "mel_energies"),
    ("windows + log", "audioembed/streaming.py", "_cut"),
]


def profile(folder: Path, model: Path, args) -> None:
    """One ``extract.run`` over the folder under cProfile, no worker, per backend: the share of
    each stage in the wall time (the rest is batching, copies, outputs and Python glue)."""
    import cProfile
    import pstats

    from audioembed import extract

    backends = ([("torch", "torch", "fp32")] + ([("torch+bf16", "torch", "bf16")] if args.bf16 else [])
                + ([(b, b, "fp32") for b in ("onnx", "onnx-int8")] if args.onnx else []))
    print(f"\n[3] where the time goes: extract over the folder under cProfile, no worker, "
          f"{args.threads} thread(s); CPU flags: {cpu_flags()}")
    print(f"  {'backend':>10} {'wall':>7} " + " ".join(f"{label:>16}" for label, _, _ in PROFILE_STAGES) + f" {'other':>8}")
    for label, backend, precision in backends:
        def go() -> None:
            extract.run([folder], folder.parent / "p.npz", model=model, workers=0, overwrite=True,
                        backend=backend, precision=precision, progress=False)
        go()  # warm-up (and, for onnx-int8, the one quantization per process)
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.runcall(go)
        wall = time.perf_counter() - t0
        stats = pstats.Stats(prof).stats  # {(file, line, name): (cc, nc, tt, ct, callers)}
        shares = [sum(v[3] for (f, _, name), v in stats.items() if f.endswith(path) and name == fn) / wall
                  for _, path, fn in PROFILE_STAGES]
        print(f"  {label:>10} {wall:6.2f}s " + " ".join(f"{100 * x:15.1f}%" for x in shares)
              + f" {100 * (1 - sum(shares)):7.1f}%")
        args.record["profile_rows"].append([label, f"{wall:.2f} s"] + [f"{100 * x:.1f}%" for x in shares]
                                           + [f"{100 * (1 - sum(shares)):.1f}%"])
    args.record["frontend"] = [frontend_cost(sorted(folder.glob("*.wav")), args.repeats)]


def frontend_cost(paths: list[Path], repeats: int) -> str:
    """The frontend alone (decode, downmix, checks, resample, STFT + mel, windows and log: every
    chunk ``extract`` gets from ``streaming.input_chunks``), CPU ms per window, best of ``repeats``."""
    from audioembed import frontend
    from audioembed.streaming import input_chunks

    def go() -> int:
        n = 0
        for i, path in enumerate(paths):
            for chunk in input_chunks(i, path, None, frontend.hop_frames(), path.name):
                n += 0 if chunk.windows is None else chunk.windows.shape[0]
        return n

    go()
    costs = []
    with frontend.single_threaded():
        for _ in range(max(1, repeats)):
            c0 = time.process_time()
            n = go()
            costs.append((time.process_time() - c0) / n)
    line = (f"frontend alone: {1000 * min(costs):.3f} CPU ms per window (best of {len(costs)}; "
            f"{n} windows of {len(paths)} files, 1 thread)")
    print("  " + line)
    return line


def shards(folder: Path, model: Path, n_windows: int, args) -> None:
    def cmd(out: str, *extra: str) -> list[str]:
        return [sys.executable, "-m", "audioembed.cli", "extract", str(folder), "-o",
                str(folder.parent / out), "--model", str(model), "-q", "--overwrite", *extra]

    def timed(runs: list[tuple[list[str], int]]) -> float:
        t0 = time.perf_counter()
        procs = [subprocess.Popen(c, env=dict(os.environ, OMP_NUM_THREADS=str(th), PYTHONPATH=str(REPO)))
                 for c, th in runs]
        codes = [p.wait() for p in procs]
        if any(codes):
            raise SystemExit(f"extract exited with {codes}")
        return time.perf_counter() - t0

    configs = {
        f"1 process, {args.threads} thread(s)": [(cmd("s.npz"), args.threads)],
        "1 process, 2 threads": [(cmd("s.npz"), 2)],
        "2 shard processes, 1 thread each": [(cmd("p.npz", "--shard", f"{k}/2"), 1) for k in range(2)],
    }
    print("\n[4] audioembed extract over the folder as separate processes (start, load, embed, write)")
    for name, runs in configs.items():
        wall = timed(runs)
        print(f"  {name:>34}: {wall:6.1f} s, {n_windows / wall:6.1f} windows/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(),
                    help="intra-op threads of each process (default: torch's)")
    ap.add_argument("--long-minutes", type=float, default=60.0)
    ap.add_argument("--clips", type=int, default=500)
    ap.add_argument("--clip-seconds", type=float, default=5.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--clip-rate", type=int, default=SR, help="sample rate of the clips (default 44100)")
    ap.add_argument("--clip-channels", type=int, default=1, help="channels of the clips (default 1)")
    ap.add_argument("--no-onnx", dest="onnx", action="store_false",
                    help="Skip the onnxruntime rows of the throughput section (needs audioembed[onnx]).")
    ap.add_argument("--no-bf16", dest="bf16", action="store_false",
                    help="Skip the torch+bf16 rows (skipped anyway on a CPU without AVX512-BF16 or AMX).")
    ap.add_argument("--only", choices=["memory", "throughput", "profile", "shards"], action="append",
                    help="run only these parts (repeatable)")
    ap.add_argument("--json", default=None, metavar="PATH",
                    help="also write the throughput rows (and the profile's shares) as a benchmarks/results "
                         "JSON (benchmarks/report.py)")
    ap.add_argument("--conditions", default="",
                    help="what else ran on the machine, for the JSON record")
    ap.add_argument("--malloc", choices=["kept", "system"], default="kept",
                    help="kept: freed memory stays in the process, as the audioembed command sets it "
                         "(audioembed.allocator); system: glibc's own thresholds (AUDIOEMBED_MALLOC=system)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.malloc == "system":
        os.environ[OPT_OUT_VARIABLE] = "system"  # for this process and the extract processes it starts
    args.malloc_line = keep_freed_memory() or "the C library's own"
    if args.child:
        return child(args)
    from audioembed.precision import cpu_has_native_bf16

    args.bf16 = args.bf16 and cpu_has_native_bf16()
    # The --json record: throughput's rows and notes, the profile's rows, the frontend's cost.
    args.record = {"notes": [], "profile_rows": [], "frontend": []}

    from audioembed import AudioResNet, ModelConfig, frontend, save_model_folder

    parts = args.only or ["memory", "throughput", "profile", "shards"]
    torch.set_num_threads(args.threads)
    load_before = load_average()
    t_start = time.perf_counter()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        net = AudioResNet(ModelConfig()).eval()
        model_mb = sum(p.numel() * 4 for p in net.parameters()) / MB
        model = save_model_folder(net, tmp / "model", provenance={"note": "random init, benchmark only"})
        del net
        if "memory" in parts:
            memory(tmp, model, model_mb, args)
        if {"throughput", "profile", "shards"} & set(parts):
            folder = tmp / "clips"
            folder.mkdir()
            for i in range(args.clips):
                write_noise_wav(folder / f"clip{i:04d}.wav", args.clip_seconds, sr=args.clip_rate,
                                channels=args.clip_channels, seed=100 + i)
            per_clip = frontend.window_starts(frontend.num_frames(int(args.clip_seconds * frontend.SAMPLE_RATE)),
                                              frontend.hop_frames())
            n_windows = args.clips * len(per_clip)
            if "throughput" in parts:
                throughput(folder, model, args.clips * args.clip_seconds, args)
            if "profile" in parts:
                profile(folder, model, args)
            if "shards" in parts:
                shards(folder, model, n_windows, args)
    stages = [label for label, _, _ in PROFILE_STAGES] + ["other"]
    if args.json and args.record.get("rows"):  # the profile's rows, if any, become notes
        profile_notes = [f"Where {row[0]}'s time goes (extract under cProfile, no worker): "
                         + ", ".join(f"{stage} {share}" for stage, share in zip(stages, row[2:]))
                         for row in args.record["profile_rows"]]
        write_record(args.json, args.record["title"], args.record["columns"], args.record["rows"],
                     conditions=args.conditions,
                     notes=tuple(args.record["notes"] + profile_notes + args.record["frontend"]))
    elif args.json and args.record["profile_rows"]:  # --only profile: its table is the record
        write_record(args.json, "where extract's time goes", ["backend", "wall"] + stages,
                     args.record["profile_rows"], conditions=args.conditions,
                     notes=tuple(args.record["frontend"]))
    print(f"\n{machine_line(load_before)}; total {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
