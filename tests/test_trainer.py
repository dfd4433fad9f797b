"""The trainer on a tiny model and a tiny cache built from synthesized audio: exact resume,
budgets, signals, logs, configuration; the v0.3 options in the real loop: each objective trains
and logs per sampler, the cosine schedule survives a resume, and a warm start loads the weights
it names."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from training.config import ConfigError, from_dict, load_config
from training.feature_cache import build_cache
from training.checkpoint import load_checkpoint
from training.schedule import Schedule
from training.trainer import LOG_NAME, read_ahead, train

REPO = Path(__file__).resolve().parents[1]


def synth_cache(tmp_path: Path) -> Path:
    """Five short synthetic recordings (tones, chirps, noise) cached as mel energies."""
    audio = tmp_path / "audio"
    audio.mkdir()
    rng = np.random.default_rng(0)
    sr = 16000
    t = np.arange(int(sr * 2.5)) / sr
    signals = [np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * (200 + 800 * t) * t),
               rng.standard_normal(t.size) * 0.3, np.sign(np.sin(2 * np.pi * 90 * t)) * 0.2,
               np.sin(2 * np.pi * 3000 * t) * (t % 0.5 < 0.25)]
    for i, x in enumerate(signals):
        sf.write(audio / f"s{i}.wav", x.astype(np.float32), sr)
    build_cache(audio, tmp_path / "cache", progress=False)
    return tmp_path / "cache"


def tiny_config(cache: Path, tmp_path: Path, **train) -> Path:
    settings = {"batch_size": 4, "steps": 6, "checkpoint_every": 2, "log_every": 1, "seed": 3, **train}
    body = "\n".join(f"{k} = {json.dumps(v)}" for k, v in settings.items())
    path = tmp_path / "tiny.toml"
    path.write_text(f'[data]\ncache = "{cache}"\n[model]\nlayers = [1, 1, 1, 1]\nbase_width = 8\n'
                    f'[train]\n{body}\n[runtime]\ndevice = "cpu"\nthreads = 1\n')
    return path


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return synth_cache(tmp_path_factory.mktemp("data"))


@pytest.mark.slow  # trains
def test_resume_is_bitwise_identical_to_an_uninterrupted_run(cache, tmp_path):
    config = load_config(tiny_config(cache, tmp_path))
    full = train(config, tmp_path / "full", echo=lambda s: None)
    assert full.step == 6 and full.reason == "steps"
    first = train(config, tmp_path / "split", max_triplets=12, echo=lambda s: None)
    assert first.step == 3 and first.reason == "max_triplets"
    # Steps logged after the checkpoint by a killed run are dropped, then redone.
    with open(tmp_path / "split" / LOG_NAME, "a") as f:
        f.write(json.dumps({"step": 4, "loss": -1.0}) + "\n" + '{"step": 5, "lo')
    second = train(config, tmp_path / "split", resume=True, echo=lambda s: None)
    assert second.step == 6 and second.triplets_seen == 24
    a, b = load_checkpoint(tmp_path / "full" / "checkpoint.pt"), load_checkpoint(tmp_path / "split" / "checkpoint.pt")
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    log = [json.loads(line) for line in (tmp_path / "split" / LOG_NAME).read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    full_log = [json.loads(line) for line in (tmp_path / "full" / LOG_NAME).read_text().splitlines()]
    assert [r["loss"] for r in log] == [r["loss"] for r in full_log]
    rec = log[0]
    assert set(rec) >= {"step", "loss", "active", "d_ap", "d_an", "triplets_per_s", "lr", "samplers"}
    assert sum(rec["samplers"].values()) == 4 and rec["lr"] == 1e-4
    with pytest.raises(FileExistsError):
        train(config, tmp_path / "full", echo=lambda s: None)


# Only against a hang: a run that never logs two steps, or never stops after the signal, fails
# after this long instead of blocking the suite. How fast the trainer gets there is not tested.
SAFETY_TIMEOUT_S = 900


def sigterm_after_two_steps(command: list[str], cfg: Path, out: Path) -> tuple[int, str, str]:
    """Run ``command --config cfg --out out``, SIGTERM it once two steps are logged; return its
    exit code, stdout and stderr."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([*command, "--config", str(cfg), "--out", str(out)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / LOG_NAME
    try:
        give_up = time.monotonic() + SAFETY_TIMEOUT_S
        while not (log.exists() and log.read_text().count("\n") >= 2):
            if proc.poll() is not None:
                stdout, stderr = proc.communicate()
                pytest.fail(f"the run ended (exit {proc.returncode}) before it logged two steps:\n"
                            + stdout + stderr)
            if time.monotonic() > give_up:
                pytest.fail(f"the run logged fewer than two steps in {SAFETY_TIMEOUT_S} s: it hangs")
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=SAFETY_TIMEOUT_S)
    finally:
        if proc.poll() is None:  # never leave a stray trainer behind a failed test
            proc.kill()
            proc.communicate()
    return proc.returncode, stdout, stderr


@pytest.mark.slow  # a training subprocess
def test_sigterm_finishes_the_step_checkpoints_and_exits_zero(cache, tmp_path):
    cfg = tiny_config(cache, tmp_path, steps=100000, checkpoint_every=100000)
    out = tmp_path / "run"
    code, stdout, stderr = sigterm_after_two_steps([sys.executable, "-m", "training", "train"], cfg, out)
    assert code == 0, stdout + stderr
    assert "signal SIGTERM" in stdout
    log = out / LOG_NAME
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["step"] >= 2 and ckpt["step"] == json.loads(log.read_text().splitlines()[-1])["step"]


# A sampler slower than the step, as on a large cache: when the run stops, the read-ahead thread
# is inside a torch kernel. A daemon thread left there at interpreter exit aborts the process
# ("terminate called without an active exception", SIGABRT) after the checkpoint is written.
SLOW_SAMPLER_TRAIN = """
import sys, torch
import training.trainer as trainer
make = trainer.StepBatches.__getitem__
def slow(self, step):
    x = torch.randn(1200, 1200)
    for _ in range(3):
        x = (x @ x) / 1200
    return make(self, step)
trainer.StepBatches.__getitem__ = slow
from training.cli import main
main(["train"] + sys.argv[1:])
"""


@pytest.mark.slow  # a training subprocess
def test_sigterm_while_a_batch_is_read_ahead_exits_zero_without_an_abort(cache, tmp_path):
    cfg = tiny_config(cache, tmp_path, steps=100000, checkpoint_every=100000)
    out = tmp_path / "run"
    code, stdout, stderr = sigterm_after_two_steps([sys.executable, "-c", SLOW_SAMPLER_TRAIN], cfg, out)
    assert "terminate called" not in stderr
    assert code == 0, stderr  # as documented: a checkpointed stop is a success
    assert "signal SIGTERM" in stdout
    assert load_checkpoint(out / "checkpoint.pt")["step"] >= 2


def test_closing_read_ahead_early_ends_its_thread():
    def slow():
        for i in range(1000):
            torch.randn(300, 300) @ torch.randn(300, 300)
            yield i

    stream = read_ahead(slow(), depth=2)
    assert next(stream) == 0
    stream.close()
    assert not [t for t in threading.enumerate() if t.name == "batch-prefetch"]


def test_config_defaults_and_errors(tmp_path):
    c = from_dict({"data": {"cache": "c"}}, base_dir=tmp_path)
    assert c.cache == str((tmp_path / "c").resolve()) and c.lr == 1e-4 and c.mining
    assert set(c.samplers) == {"gaussian_noise", "translation", "example_mixing", "temporal_proximity"}
    assert from_dict({"data": {"cache": "c"}, "train": {"mining": False}}).lr == 1e-6
    assert from_dict({"data": {"cache": "c"}, "train": {"lr": 3e-4}}).lr == 3e-4
    for bad, match in [({"data": {}}, "cache"), ({"data": {"cache": "c"}, "train": {"batchsize": 2}}, "batchsize"),
                       ({"data": {"cache": "c"}, "samplers": {"noise": {}}}, "noise"),
                       ({"data": {"cache": "c"}, "samplers": {"translation": {"sigma": 1}}}, "sigma"),
                       ({"data": {"cache": "c"}, "train": {"steps": 0}}, "steps"),
                       ({"data": {"cache": "c"}, "model": {"layers": [1, 1]}}, "layers")]:
        with pytest.raises(ConfigError, match=match):
            from_dict(bad)
    recipe = load_config(REPO / "training" / "recipes" / "tiny.toml")
    assert recipe.model.layers == (1, 1, 1, 1)


def labeled_csv(tmp_path: Path) -> Path:
    """Six clips in two classes (low tones vs high tones) for dev tracking."""
    rows = ["path,labels"]
    sr = 16000
    t = np.arange(int(sr * 1.5)) / sr
    for i, (label, f0) in enumerate([("low", 150), ("low", 180), ("low", 210),
                                     ("high", 3000), ("high", 3300), ("high", 3600)]):
        sf.write(tmp_path / f"d{i}.wav", (0.3 * np.sin(2 * np.pi * f0 * t)).astype(np.float32), sr)
        rows.append(f"d{i}.wav,{label}")
    path = tmp_path / "dev.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.slow  # trains
def test_dev_qbe_is_logged_at_start_and_every_n_steps_without_changing_training(cache, tmp_path):
    dev_csv = labeled_csv(tmp_path)
    plain = load_config(tiny_config(cache, tmp_path))
    tracked = from_dict({**plain.to_dict(), "dev": {"dataset": str(dev_csv), "every": 3}})
    a = train(plain, tmp_path / "plain", echo=lambda s: None)
    b = train(tracked, tmp_path / "tracked", echo=lambda s: None)
    assert a.step == b.step == 6
    rows = [json.loads(x) for x in (tmp_path / "tracked" / LOG_NAME).read_text().splitlines()]
    dev = [r for r in rows if "dev" in r]
    assert [r["step"] for r in dev] == [0, 3, 6]
    # A run cut short is measured where it stops, then on the schedule after resuming.
    train(tracked, tmp_path / "cut", max_triplets=16, echo=lambda s: None)
    train(tracked, tmp_path / "cut", resume=True, echo=lambda s: None)
    cut = [json.loads(x) for x in (tmp_path / "cut" / LOG_NAME).read_text().splitlines()]
    assert [r["step"] for r in cut if "dev" in r] == [0, 3, 4, 6]
    for r in dev:
        assert r["dev"]["windows"] == 6 * 2  # 1.5 s clips give two windows each
        # Per class 3 clips present and 3 absent: 3 target pairs against 9 non-target pairs.
        assert r["dev"]["chance"] == pytest.approx(3 / 12) and 0.0 < r["dev"]["qbe_map"] <= 1.0
        assert r["dev"]["dataset"] == "dev"
    # Measuring in eval mode under no_grad leaves the optimisation untouched.
    wa = load_checkpoint(tmp_path / "plain" / "checkpoint.pt")["model"]
    wb = load_checkpoint(tmp_path / "tracked" / "checkpoint.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_dev_qbe_of_a_separating_embedding_is_one(tmp_path):
    from training.dev_tracking import DevQbE, spaced

    dev = DevQbE(str(labeled_csv(tmp_path)), max_windows=1, log=lambda s: None)
    assert len(dev.windows) == 6 and dev.n_segments == 6

    class LowVsHigh(torch.nn.Module):  # mel energy below vs above bin 32 separates the classes
        def forward(self, x):
            lo, hi = x[..., :32].mean(dim=(1, 2, 3)), x[..., 32:].mean(dim=(1, 2, 3))
            return torch.nn.functional.normalize(torch.stack([lo - hi, hi - lo + 1e-3], 1), dim=1)

    got = dev(LowVsHigh(), torch.device("cpu"))
    assert got["qbe_map"] == pytest.approx(1.0) and got["chance"] == pytest.approx(3 / 12)
    # Classes sit at opposite points: every labelled triplet is satisfied by far more than the margin.
    assert got["triplets"] > 0 and got["triplet_loss"] == 0.0 and got["active"] == 0.0
    assert got["d_ap"] == pytest.approx(0.0, abs=1e-6) and got["d_an"] == pytest.approx(4.0, abs=1e-3)

    class Constant(torch.nn.Module):  # every triplet costs exactly the margin
        def forward(self, x):
            return torch.nn.functional.normalize(torch.ones(len(x), 2), dim=1)

    flat = dev(Constant(), torch.device("cpu"))
    assert flat["triplet_loss"] == pytest.approx(0.1) and flat["active"] == 1.0
    assert spaced(10, 4).tolist() == [0, 3, 6, 9] and spaced(3, 4).tolist() == [0, 1, 2]
    assert spaced(5, 0).tolist() == [0, 1, 2, 3, 4]


def test_label_triplets_pair_shared_labels_against_disjoint_ones():
    from training.dev_tracking import label_triplets

    # Four clips, multi-label: 0 {a}, 1 {a, b}, 2 {b}, 3 {c}; clip 3 has no partner clip.
    y = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1]], bool)
    seg = np.array([0, 0, 1, 2, 2, 2, 3])
    t = label_triplets(y, seg, 200, seed=0)
    assert 100 < len(t) < 200  # anchors in clip 3 are skipped
    a, p, n = (seg[t[:, k]] for k in range(3))
    assert (a != p).all() and (y[a] & y[p]).any(1).all() and not (y[a] & y[n]).any()
    assert set(a.tolist()) == {0, 1, 2} and np.array_equal(t, label_triplets(y, seg, 200, seed=0))


@pytest.mark.slow  # trains
def test_resume_takes_the_configured_learning_rate(cache, tmp_path):
    config = load_config(tiny_config(cache, tmp_path))
    train(config, tmp_path / "run", max_triplets=8, echo=lambda s: None)
    faster = from_dict({**config.to_dict(), "train": {**config.to_dict()["train"], "lr": 3e-4}})
    train(faster, tmp_path / "run", resume=True, echo=lambda s: None)
    rows = [json.loads(x) for x in (tmp_path / "run" / LOG_NAME).read_text().splitlines()]
    assert [r["lr"] for r in rows] == [1e-4] * 2 + [3e-4] * 4
    code = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["code"]
    assert [c["from_step"] for c in code] == [0, 2]  # each start records the tree that ran it
    assert all(c["git_commit"] is None or len(c["git_commit"].split("+")[0]) == 40 for c in code)


def test_dev_table_errors(tmp_path):
    base = {"data": {"cache": "c"}}
    assert from_dict(base).dev is None
    dev = from_dict({**base, "dev": {"dataset": "fsdd"}}).dev
    assert dev == {"dataset": "fsdd", "data_root": None, "every": 250, "max_windows": 0}
    for bad, match in [({"every": 0, "dataset": "fsdd"}, "every"), ({}, "dataset"),
                       ({"dataset": "fsdd", "max_windows": -1}, "max_windows"),
                       ({"dataset": "fsdd", "step": 3}, "step")]:
        with pytest.raises(ConfigError, match=match):
            from_dict({**base, "dev": bad})


def test_set_overrides_nested_values_and_rejects_malformed_ones(tmp_path):
    recipe = REPO / "training" / "recipes" / "tiny.toml"
    c = load_config(recipe, ["train.lr=3e-4", "samplers.translation.max_freq_shift=5",
                             "runtime.device=cpu"])
    assert c.lr == 3e-4 and c.samplers["translation"]["max_freq_shift"] == 5 and c.device == "cpu"
    for bad, match in [("lr=3e-4", "SECTION.KEY"), ("train.lr", "SECTION.KEY"),
                       ("train.lr=fast", "lr"), ("train.batchsize=2", "batchsize"),
                       ("train.batch_size.x=1", "not a table")]:
        with pytest.raises(ConfigError, match=match):
            load_config(recipe, [bad])


def tones_and_noise(tmp_path: Path) -> tuple[Path, Path]:
    """A cache of tones and noises whose level sweeps 50 dB over each 3 s recording, and a dev
    set of tone and noise clips at levels from -50 to 0 dB (labels ``tone``, ``noise``).

    A random network's embedding follows the level (log-mel moves by a constant), so at the
    start quiet tones sit with quiet noises and dev QbE is near chance. Temporal proximity pairs
    a window with one at another level of the same sound, so training soon learns to ignore it.
    """
    sr = 16000
    rng = np.random.default_rng(0)

    def tone(f, seconds):
        return 0.3 * np.sin(2 * np.pi * f * np.arange(int(sr * seconds)) / sr)

    def noise(seconds):
        return 0.1 * rng.standard_normal(int(sr * seconds))

    audio = tmp_path / "audio"
    audio.mkdir()
    sweep = np.geomspace(0.003, 1.0, 3 * sr)
    for i, f in enumerate([300, 700, 1500, 3000]):
        up, down = sweep, sweep[::-1]
        sf.write(audio / f"tone{i}.wav", ((up if i % 2 else down) * tone(f, 3)).astype(np.float32), sr)
        sf.write(audio / f"noise{i}.wav", ((down if i % 2 else up) * noise(3)).astype(np.float32), sr)
    build_cache(audio, tmp_path / "cache", progress=False)
    rows = ["path,labels"]
    for i, (f, gain) in enumerate([(400, 1), (1000, 0.01), (2000, 0.1), (3500, 0.003), (500, 0.03),
                                   (2500, 0.3)]):
        # Loud tones go with quiet noises and the reverse, so level alone ranks them wrongly.
        sf.write(tmp_path / f"t{i}.wav", (gain * tone(f, 1)).astype(np.float32), sr)
        sf.write(tmp_path / f"n{i}.wav", (0.009 / gain * noise(1)).astype(np.float32), sr)
        rows += [f"t{i}.wav,tone", f"n{i}.wav,noise"]
    (tmp_path / "dev.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "cache", tmp_path / "dev.csv"


def held_out_hinge(model: torch.nn.Module, energies: np.ndarray, margin: float) -> float:
    """Mean triplet hinge of fixed triplets (own negatives), computed here from the embeddings."""
    from audioembed import frontend

    x = frontend.log_mel(torch.from_numpy(energies)).reshape(-1, 1, frontend.WINDOW_FRAMES,
                                                              frontend.N_MELS)
    # Training-mode BatchNorm (this batch's statistics): the figure then depends on the
    # weights alone, not on running statistics that move even when the weights do not.
    with torch.no_grad():
        a, p, n = np.split(model.train()(x).numpy().astype(np.float64), 3)
    d_ap, d_an = ((a - p) ** 2).sum(1), ((a - n) ** 2).sum(1)
    return float(np.maximum(d_ap - d_an + margin, 0.0).mean())


@pytest.mark.slow  # trains
def test_training_loss_falls_and_dev_qbe_rises_above_chance(tmp_path, one_thread):
    from audioembed.model import AudioResNet
    from training.feature_cache import FeatureCache
    from training.samplers import make_sampler, sample_batch
    from training.checkpoint import model_from_checkpoint

    cache, dev_csv = tones_and_noise(tmp_path)
    config = from_dict({"data": {"cache": str(cache)}, "model": {"layers": [1, 1, 1, 1], "base_width": 8},
                        # Margin 1 keeps every triplet in the loss (at 0.1 three quarters are
                        # satisfied from the start): a steadier signal over 30 steps. Without
                        # mining the held-out triplets below score what training optimised.
                        "train": {"batch_size": 16, "steps": 30, "lr": 1e-3, "seed": 0, "margin": 1.0,
                                  "mining": False, "checkpoint_every": 30},
                        "samplers": {"temporal_proximity": {}}, "runtime": {"device": "cpu", "threads": 1},
                        "dev": {"dataset": str(dev_csv), "every": 30}})
    train(config, tmp_path / "run", echo=lambda s: None)
    dev = [json.loads(x)["dev"] for x in (tmp_path / "run" / LOG_NAME).read_text().splitlines()
           if "dev" in json.loads(x)]
    # 6 clips of each class: 15 target pairs against 36 non-target pairs.
    assert [d["chance"] for d in dev] == [pytest.approx(15 / 51)] * 2
    start, end = dev[0]["qbe_map"], dev[1]["qbe_map"]
    # The thresholds leave room: over seeds 0-11 the start was at most 0.44, the end at least
    # 0.62, and the held-out hinge fell to at most 0.61 of its start.
    assert start < dev[0]["chance"] + 0.2  # the premise: level, not kind, decides at the start
    assert end > dev[1]["chance"] + 0.2 and end > start + 0.15
    # Fixed triplets the run never trained on, scored on the initial and on the final weights.
    triplets = sample_batch(make_sampler(config.samplers), FeatureCache(cache), 64, seed=99, rank=0,
                            step=0).energies
    torch.manual_seed(config.seed)  # the trainer's initial weights
    before = held_out_hinge(AudioResNet(config.model), triplets, config.margin)
    after = held_out_hinge(model_from_checkpoint(load_checkpoint(tmp_path / "run" / "checkpoint.pt")),
                           triplets, config.margin)
    assert after < 0.75 * before


def hand_picked_negatives(a: np.ndarray, p: np.ndarray, n: np.ndarray, candidates: np.ndarray,
                          margin: float) -> list[int]:
    """Section 4.2's choice, written out triplet by triplet: the closest candidate inside the
    semi-hard band, else the closest one farther than the positive, else the own negative."""
    pool = np.concatenate([a, p, n])
    b = len(a)
    picks = []
    for i in range(b):
        d_ap = ((a[i] - p[i]) ** 2).sum()
        d = {j: ((a[i] - pool[j]) ** 2).sum() for j in np.flatnonzero(candidates[i])}
        semi = [j for j in d if d_ap < d[j] < d_ap + margin]
        farther = [j for j in d if d[j] > d_ap]
        picks.append(min(semi, key=d.get) if semi else min(farther, key=d.get) if farther else 2 * b + i)
    return picks


def test_mining_in_train_step_hands_the_loss_the_batch_candidates(cache, one_thread):
    import copy

    from audioembed.model import AudioResNet, ModelConfig
    from training.losses import TripletLoss, triplet_loss
    from training.samplers import DEFAULT_JOINT
    from training.trainer import StepBatches, train_step

    seen = {}

    class Spy(TripletLoss):
        def forward(self, anchor, positive, negative, candidates=None):
            seen.update(a=anchor.detach().clone(), p=positive.detach().clone(),
                        n=negative.detach().clone(), candidates=candidates)
            return super().forward(anchor, positive, negative, candidates)

    dataset = StepBatches(str(cache), {name: {} for name in DEFAULT_JOINT}, 8, seed=0, rank=0)
    batch = dataset[3]  # a batch with mixing triplets (own negative only) and active mined ones
    torch.manual_seed(0)
    model = AudioResNet(ModelConfig(layers=(1, 1, 1, 1), base_width=8))
    twin = copy.deepcopy(model)
    loss, _ = train_step(model, Spy(margin=0.1, mining=True), torch.optim.Adam(model.parameters()),
                         batch, torch.device("cpu"))
    mask = seen["candidates"].numpy()
    np.testing.assert_array_equal(mask, batch["candidates"].numpy())
    b = len(mask)
    assert (mask.sum(1) > 1).sum() >= b // 2  # most triplets may take another window's negative
    a, p, n = (torch.nn.functional.normalize(seen[k], dim=1) for k in "apn")
    picks = hand_picked_negatives(a.double().numpy(), p.double().numpy(), n.double().numpy(), mask, 0.1)
    assert sum(j != 2 * b + i for i, j in enumerate(picks)) >= 2  # the premise: mining changes the batch
    expected, _ = triplet_loss(a, p, torch.cat([a, p, n])[picks], margin=0.1)
    assert expected.item() > 0.01
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-7)
    plain, _ = train_step(twin, TripletLoss(margin=0.1, mining=False),
                          torch.optim.Adam(twin.parameters()), batch, torch.device("cpu"))
    assert abs(plain.item() - loss.item()) > 1e-3


def native_bf16(monkeypatch, avx512: bool, amx: bool = False) -> None:
    """Make the CPU probes report a host with (or without) native bf16 instructions."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)


def with_bf16(config, value):
    d = config.to_dict()
    return from_dict({**d, "runtime": {**d["runtime"], "bf16": value}})


def test_use_bf16_follows_the_setting_and_probes_the_cpu_only_on_auto(cache, tmp_path, monkeypatch):
    from training.trainer import use_bf16

    config = load_config(tiny_config(cache, tmp_path))
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    for avx512, amx in [(False, False), (True, False), (False, True), (True, True)]:
        native_bf16(monkeypatch, avx512, amx)
        assert use_bf16(with_bf16(config, "auto"), cpu) is (avx512 or amx)
        assert use_bf16(with_bf16(config, True), cpu) is True
        assert use_bf16(with_bf16(config, False), cpu) is False
        assert use_bf16(with_bf16(config, "auto"), cuda) is True
        assert use_bf16(with_bf16(config, False), cuda) is False


@pytest.mark.slow  # trains
def test_bf16_forced_on_and_off_in_two_step_runs(cache, tmp_path, monkeypatch, one_thread):
    # Margin 1: every triplet is in the loss, so its value reflects the arithmetic of all of them.
    config = load_config(tiny_config(cache, tmp_path, steps=2, checkpoint_every=2, margin=1.0))

    def losses(value, native: bool, name: str) -> list[float]:
        native_bf16(monkeypatch, native)
        train(with_bf16(config, value), tmp_path / name, echo=lambda s: None)
        return [json.loads(x)["loss"] for x in (tmp_path / name / LOG_NAME).read_text().splitlines()]

    off = losses(False, native=False, name="off")
    on = losses(True, native=False, name="on")
    # Forced off on a host with native bf16 still computes in fp32: CI on such a host must
    # not switch precision behind the configuration's back.
    assert losses(False, native=True, name="off-native") == off
    # Forced on where the CPU lacks it, bf16 is used all the same: a different, nearby loss.
    assert on != off and on == pytest.approx(off, rel=0.1, abs=1e-3)
    # "auto" follows the probe.
    assert losses("auto", native=True, name="auto-native") == on
    assert losses("auto", native=False, name="auto-plain") == off


def _log(run):
    return [json.loads(line) for line in (run / LOG_NAME).read_text().splitlines()]


def _config(cache, tmp_path, *overrides, **train_kw):
    return load_config(tiny_config(cache, tmp_path, **train_kw), list(overrides))


@pytest.mark.slow  # trains
@pytest.mark.parametrize("overrides", [
    ['loss.kind="soft-margin"'],
    ['loss.kind="batch-all"'],
    ["loss.xbm_size=64", "loss.xbm_start_step=1"],
    ['loss.kind="nt-xent"', "loss.projection_dim=16"],
    ["augment.enabled=true"],
    ["augment.enabled=true", "augment.crop_prob=0.0", "augment.background_prob=0.0",
     "augment.noise_prob=0.0", "augment.eq_prob=0.8", "augment.gain_prob=0.8", "augment.mask_prob=0.5"],
], ids=["soft-margin", "batch-all", "xbm", "nt-xent", "augment", "recording-conditions"])
def test_each_objective_trains_and_logs_per_sampler(cache, tmp_path, overrides, one_thread):
    config = _config(cache, tmp_path, *overrides, steps=3)
    result = train(config, tmp_path / "run", echo=lambda s: None)
    assert result.step == 3
    log = _log(tmp_path / "run")
    assert all(np.isfinite(r["loss"]) for r in log)
    for r in log:
        assert set(r["per_sampler"]) <= set(r["samplers"]) and r["per_sampler"]
        for name, s in r["per_sampler"].items():
            assert 0.0 <= s["active"] <= 1.0 and np.isfinite(s["loss"])
    if "loss.xbm_size=64" in overrides:
        # Step 1 has only its own batch; from step 2 on the memory adds the earlier windows.
        assert log[0]["pool_size"] < log[2]["pool_size"]
        ckpt = load_checkpoint(tmp_path / "run/checkpoint.pt")
        assert ckpt["xbm"]["filled"] == 2 * 4 * 2  # steps 1 and 2 entered (start_step 1), 2B each
    if "loss.projection_dim=16" in overrides:
        ckpt = load_checkpoint(tmp_path / "run/checkpoint.pt")
        assert any(k.startswith("head.") for k in ckpt["loss_state"])
        from training.export import export_checkpoint
        from audioembed import load_model

        folder = export_checkpoint(tmp_path / "run/checkpoint.pt", tmp_path / "exported")
        model = load_model(folder)  # the head is not part of the exported network
        assert model.config.embedding_dim == 128 and not hasattr(model, "head")


def test_mining_only_options_are_refused_without_mining(cache, tmp_path):
    with pytest.raises(ConfigError, match="mining"):
        _config(cache, tmp_path, "loss.xbm_size=8", mining=False)
    with pytest.raises(ConfigError, match="nt-xent"):
        _config(cache, tmp_path, 'loss.kind="nt-xent"', "loss.xbm_size=8")


def test_cosine_schedule_values():
    s = Schedule("cosine", warmup_triplets=100, total_triplets=1100, min_lr_ratio=0.1)
    assert s.factor(0) == 0.0 and s.factor(50) == pytest.approx(0.5)
    assert s.factor(100) == pytest.approx(1.0)
    assert s.factor(600) == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the decay
    assert s.factor(1100) == pytest.approx(0.1) and s.factor(5000) == pytest.approx(0.1)
    assert Schedule().factor(123) == 1.0
    with pytest.raises(ValueError, match="total_triplets"):
        Schedule("cosine", warmup_triplets=10, total_triplets=5)


@pytest.mark.slow  # trains
def test_schedule_survives_a_resume_and_keeps_its_plan(cache, tmp_path, one_thread):
    plan = ['schedule={kind="cosine", warmup_triplets=8, total_triplets=24, min_lr_ratio=0.0}']
    config = _config(cache, tmp_path, *plan, steps=6, lr=1e-3)
    train(config, tmp_path / "full", echo=lambda s: None)
    train(config, tmp_path / "split", max_triplets=12, echo=lambda s: None)
    # The resumed run is configured with another plan; it keeps the one it started with.
    other = _config(cache, tmp_path, 'schedule={kind="constant"}', steps=6, lr=1e-3)
    with pytest.warns(UserWarning, match="keeps that plan"):
        train(other, tmp_path / "split", resume=True, echo=lambda s: None)
    full, split = _log(tmp_path / "full"), _log(tmp_path / "split")
    lrs = [r["lr"] for r in full]
    assert [r["lr"] for r in split] == lrs
    expected = [1e-3 * Schedule("cosine", 8, 24, 0.0).factor(4 * k) for k in range(6)]
    assert lrs == pytest.approx(expected)
    assert lrs[0] == 0.0 and max(lrs) == pytest.approx(1e-3)
    a, b = (load_checkpoint(tmp_path / d / "checkpoint.pt") for d in ("full", "split"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert b["schedule"]["kind"] == "cosine"


@pytest.mark.slow  # trains
def test_warm_start_loads_the_named_weights(cache, tmp_path, one_thread):
    first = _config(cache, tmp_path, steps=2)
    train(first, tmp_path / "a", echo=lambda s: None)
    src = load_checkpoint(tmp_path / "a/checkpoint.pt")
    warm = _config(cache, tmp_path, f'train.init="{tmp_path / "a/checkpoint.pt"}"', steps=1, lr=1e-12)
    train(warm, tmp_path / "b", echo=lambda s: None)
    got = load_checkpoint(tmp_path / "b/checkpoint.pt")
    assert got["code"][0]["init"]["spec"].endswith("checkpoint.pt")
    w = "conv1.weight"
    torch.testing.assert_close(got["model"][w], src["model"][w], atol=1e-8, rtol=0)
    bad = _config(cache, tmp_path, 'train.init="triplet-resnet50-joint"', steps=1)
    with pytest.raises(ValueError, match="model config"):
        train(bad, tmp_path / "c", echo=lambda s: None)
