"""Table 3's supervised-from-scratch row: a ResNet trained end to end on the light-supervision
clips' log-mel windows (the paper's "ResNet-50 trained on the 20 examples per class").

It uses the log-mel baseline's window data and outer splits, and draws its training clips with
the same generator calls as ``classifiers.light_supervision``, so trial ``t`` trains on the very
clips the shallow light-supervision classifiers of trial ``t`` train on, and tests on the same
fold. The network is ``audioembed.AudioResNet`` (ResNet-50 by default) with its ``fc`` layer as
a linear classifier (one sigmoid output per class, binary cross-entropy), trained with Adam for
a fixed number of steps on random batches of at most ``max_windows`` windows per clip; a clip's
score is the mean sigmoid over its windows.
"""
from __future__ import annotations

import json
import re
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import numpy as np
import torch

from audioembed import frontend
from audioembed.model import AudioResNet, ModelConfig
from audioembed.outputs import atomic_write
from training.evaluation.classifiers import light_split
from training.evaluation.metrics import classifier_scores, segment_means
from training.machine import bf16_enabled

_OPTIONS = {"steps", "batch_size", "lr", "layers", "base_width", "bf16"}


@dataclass(frozen=True)
class ScratchConfig:
    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-3
    layers: tuple[int, ...] = (3, 4, 6, 3)
    base_width: int = 64
    bf16: bool | str = "auto"  # autocast on CPUs with native bf16, as training does

    @classmethod
    def from_dict(cls, d: dict) -> "ScratchConfig":
        unknown = sorted(set(d) - _OPTIONS)
        if unknown:
            raise ValueError(f"scratch: unknown options {unknown}; allowed: {sorted(_OPTIONS)}")
        d = dict(d)
        if "layers" in d:
            d["layers"] = tuple(d["layers"])
        return cls(**d)


def _autocast(setting):
    on = bf16_enabled(setting, torch.device("cpu"))
    return torch.autocast("cpu", dtype=torch.bfloat16) if on else nullcontext()


def _windows(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, 1, frontend.WINDOW_FRAMES, frontend.N_MELS)


def train_and_score(data, train: np.ndarray, test: np.ndarray, cfg: ScratchConfig, max_windows: int,
                    seed: int) -> dict:
    """Train a network from scratch on segments ``train``, return the metrics on ``test``."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    xf, sf = data.windows_of(train, max_windows, rng)
    yf = data.targets(sf)
    model = AudioResNet(ModelConfig(layers=cfg.layers, base_width=cfg.base_width,
                                    embedding_dim=data.y.shape[1]))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(seed)
    autocast = _autocast(cfg.bf16)
    model.train()
    for _ in range(cfg.steps):
        idx = torch.randint(len(xf), (min(cfg.batch_size, len(xf)),), generator=gen)
        with autocast:
            logits = model.fc(model.pooled(_windows(xf[idx])))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), yf[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    xt, st = data.windows_of(test)
    probs = []
    with torch.inference_mode(), autocast:
        for i in range(0, len(xt), 256):
            probs.append(torch.sigmoid(model.fc(model.pooled(_windows(xt[i:i + 256]))).float()).numpy())
    test = np.sort(test)
    scores = segment_means(np.concatenate(probs), np.searchsorted(test, st), len(test), np.float64)
    return {**classifier_scores(data.y[test], scores), "n_train": len(train), "n_test": len(test),
            "train_windows": len(xf), "final_loss": float(loss.detach())}


def run_scratch(exp, arm, run_dir, log=print) -> dict:
    """Every dataset's light-supervision-from-scratch result, as ``results[dataset]``."""
    from training.evaluation.run import classifier_data

    cfg = ScratchConfig.from_dict(arm.scratch)
    settings = exp.eval_settings()
    out = {}
    for dataset in exp.datasets:
        data, splits, split_kind = classifier_data("logmel", dataset, settings, cache_dir=exp.eval_cache, log=log)
        rng = np.random.default_rng(settings.seed)  # the draws of classifiers.light_supervision
        trials = []
        for t in range(settings.light_trials):
            pool, test = splits[t % len(splits)]
            train = light_split(data.y, pool, settings.light_per_class, rng)  # drawn even if stored
            # Each finished trial is kept in the run folder, so an interrupted arm resumes at the
            # next trial; a stored trial counts only if it was made with this config and clips.
            key = json.loads(json.dumps(  # as stored: tuples become lists
                {"config": asdict(cfg), "train": sorted(int(i) for i in train), "seed": settings.seed + t}))
            stored = run_dir / f"scratch-{re.sub(r'[^A-Za-z0-9_.-]', '_', dataset)[-80:]}-trial{t}.json"
            kept = json.loads(stored.read_text()) if stored.is_file() else None
            if kept is not None and kept.get("key") == key:
                trials.append(kept["trial"])
                log(f"scratch {dataset} trial {t + 1}/{settings.light_trials}: mAP "
                    f"{kept['trial']['map']:.3f} (stored)")
                continue
            t0 = time.perf_counter()
            res = train_and_score(data, train, test, cfg, settings.max_windows, settings.seed + t)
            trials.append({**res, "split": t % len(splits), "seconds": round(time.perf_counter() - t0, 1)})
            atomic_write(stored, lambda f: f.write(json.dumps({"key": key, "trial": trials[-1]}).encode()),
                         fsync=True)
            log(f"scratch {dataset} trial {t + 1}/{settings.light_trials}: mAP {res['map']:.3f} "
                f"({trials[-1]['seconds']} s)")
        maps = [r["map"] for r in trials]
        out[dataset] = {
            "dataset": {"name": dataset, "n_segments": int(len(data.y)), "n_classes": int(data.y.shape[1])},
            "light_supervision": {"scratch": {
                "trials": trials, "map": float(np.mean(maps)),
                "map_sd": float(np.std(maps, ddof=1)) if len(maps) > 1 else 0.0,
                "per_class": settings.light_per_class, "config": asdict(cfg), "split": split_kind}}}
    return out
