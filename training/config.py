"""The training configuration: one TOML file holds everything a run depends on.

Example (``training/recipes/tiny.toml`` is a complete one)::

    [data]
    cache = "cache/debian"        # relative to this file's folder

    [model]                       # audioembed.ModelConfig (default: ResNet-50, 128-d)
    layers = [3, 4, 6, 3]

    [train]
    batch_size = 32               # triplets per step and rank
    steps = 100000
    mining = true                 # semi-hard negatives (section 4.2); off for mixing triplets
    # lr = 1e-4                   # default: 1e-4 with mining, 1e-6 without (the paper's)
    margin = 0.1
    seed = 0
    checkpoint_every = 1000
    log_every = 1                 # steps per JSONL line (averaged over them)
    # init = "triplet-resnet50-joint"  # warm start (fresh runs only): a model or a checkpoint .pt

    [loss]                        # the objective (training.losses); defaults are the paper's
    kind = "hinge"                # "hinge", "soft-margin", "batch-all", or "nt-xent" (contrastive)
    temperature = 0.1             # nt-xent
    projection_dim = 0            # nt-xent: a projection head (dropped at export); 0: none
    gather = false                # negatives also from every rank's windows (DDP)
    xbm_size = 0                  # cross-batch memory of this many windows (training.negatives)
    xbm_start_step = 0            # the memory fills from this step on

    [schedule]                    # learning rate over the run (training.schedule)
    kind = "constant"             # or "cosine": warmup_triplets, total_triplets, min_lr_ratio

    [augment]                     # harder positives (training.augment); off by default
    enabled = false

    [samplers.gaussian_noise]     # a section enables a sampler; weight defaults to 1
    sigma = 0.5
    [samplers.translation]
    max_freq_shift = 10
    [samplers.example_mixing]
    alpha = 0.25
    [samplers.temporal_proximity]
    max_offset_frames = 1000

    [runtime]
    device = "auto"               # "auto", "cpu", "cuda"
    threads = 0                   # torch threads per process; 0: cores / local processes
    workers = -1                  # DataLoader workers; -1: 0 on CPU, 4 on GPU
    bf16 = "auto"                 # bf16 autocast: true, false, or "auto" (on for CUDA and for
                                  # CPUs with native bf16 (AVX512-BF16/AMX); weights stay fp32)

    [dev]                         # optional: QbE mAP on a labeled set during training
    dataset = "debian-sfx"        # any evaluate --dataset (training.dev_tracking)
    # data_root = "..."           # the dataset's --data-root
    every = 250                   # steps between measurements (and at step 0 of a fresh run)
    max_windows = 4               # evenly spaced windows per clip; 0: all

Without a ``[samplers]`` table the run uses the paper's joint sampler: the four label-free
samplers with equal weights and default hyperparameters.
"""
from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

from audioembed.errors import AudioembedError
from audioembed.model import ModelConfig
from training.augment import Augment
from training.samplers import DEFAULT_JOINT, SAMPLERS
from training.schedule import Schedule

LR_WITH_MINING = 1e-4
LR_WITHOUT_MINING = 1e-6

_TRAIN_DEFAULTS = {"batch_size": 32, "steps": 100_000, "mining": True, "lr": None, "margin": 0.1,
                   "seed": 0, "checkpoint_every": 1000, "log_every": 1, "init": None}
_RUNTIME_DEFAULTS = {"device": "auto", "threads": 0, "workers": -1, "bf16": "auto"}
_DEV_DEFAULTS = {"dataset": None, "data_root": None, "every": 250, "max_windows": 0}
# The paper's objective by default: one hinge per triplet, in-batch negatives only.
_LOSS_DEFAULTS = {"kind": "hinge", "temperature": 0.1, "projection_dim": 0, "gather": False,
                  "xbm_size": 0, "xbm_start_step": 0}
LOSS_KINDS = ("hinge", "soft-margin", "batch-all", "nt-xent")
_SECTIONS = {"data", "model", "train", "samplers", "runtime", "dev", "loss", "schedule", "augment"}


class ConfigError(AudioembedError, ValueError):
    """A configuration file that cannot be used; the message names the key."""


@dataclass(frozen=True)
class TrainConfig:
    """A resolved configuration; ``to_dict()`` is what checkpoints and exports record."""

    cache: str
    model: ModelConfig
    batch_size: int
    steps: int
    mining: bool
    lr: float
    margin: float
    seed: int
    checkpoint_every: int
    log_every: int
    samplers: dict
    device: str
    threads: int
    workers: int
    bf16: bool | str = "auto"
    dev: dict | None = None  # the [dev] table, defaults filled in; None: no dev tracking
    init: str | None = None  # warm start: a model (registry name, folder) or checkpoint .pt
    loss: dict = field(default_factory=lambda: dict(_LOSS_DEFAULTS))
    schedule: dict = field(default_factory=lambda: Schedule().to_dict())
    augment: dict = field(default_factory=lambda: Augment().to_dict())

    @property
    def contrastive(self) -> bool:
        return self.loss["kind"] == "nt-xent"

    def to_dict(self) -> dict:
        return {"data": {"cache": self.cache}, "model": self.model.to_dict(),
                "train": {"batch_size": self.batch_size, "steps": self.steps, "mining": self.mining,
                          "lr": self.lr, "margin": self.margin, "seed": self.seed,
                          "checkpoint_every": self.checkpoint_every, "log_every": self.log_every,
                          "init": self.init},
                "samplers": copy.deepcopy(self.samplers),
                "runtime": {"device": self.device, "threads": self.threads, "workers": self.workers,
                            "bf16": self.bf16},
                "loss": dict(self.loss), "schedule": dict(self.schedule), "augment": copy.deepcopy(self.augment),
                **({"dev": dict(self.dev)} if self.dev else {})}


def sampler_parameters(cls) -> set[str]:
    """The hyperparameters a sampler class takes: its dataclass fields set at construction."""
    return {f.name for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")}


def _check_keys(section: str, got: dict, allowed) -> None:
    unknown = sorted(set(got) - set(allowed))
    if unknown:
        raise ConfigError(f"[{section}]: unknown keys {unknown}; allowed: {sorted(allowed)}")


def _positive_int(section: str, key: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"[{section}] {key} must be a positive integer, got {value!r}")
    return value


def from_dict(d: dict, base_dir: str | os.PathLike = ".") -> TrainConfig:
    """Validate a parsed configuration; relative paths resolve against ``base_dir``."""
    _check_keys("top level", d, _SECTIONS)
    data = d.get("data", {})
    _check_keys("data", data, {"cache"})
    if "cache" not in data:
        raise ConfigError("[data] cache: the feature cache folder is required")
    # "~" and $VARS let a recipe in the repo point at a cache kept outside it.
    cache = Path(os.path.expandvars(os.path.expanduser(str(data["cache"]))))
    cache = str(cache if cache.is_absolute() else (Path(base_dir) / cache).resolve())
    try:
        model = ModelConfig.from_dict(d.get("model", {}))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[model]: {exc}") from exc
    train = {**_TRAIN_DEFAULTS, **d.get("train", {})}
    _check_keys("train", train, _TRAIN_DEFAULTS)
    for key in ("batch_size", "steps", "checkpoint_every", "log_every"):
        _positive_int("train", key, train[key])
    if not isinstance(train["mining"], bool):
        raise ConfigError(f"[train] mining must be true or false, got {train['mining']!r}")
    lr = train["lr"]
    if lr is None:
        lr = LR_WITH_MINING if train["mining"] else LR_WITHOUT_MINING
    if not isinstance(lr, (int, float)) or lr <= 0:
        raise ConfigError(f"[train] lr must be a positive number, got {lr!r}")
    samplers = d.get("samplers")
    if samplers is None:
        samplers = {name: {"weight": 1.0} for name in DEFAULT_JOINT}
    if not samplers:
        raise ConfigError("[samplers]: no sampler enabled")
    for name, params in samplers.items():
        if name not in SAMPLERS:
            raise ConfigError(f"[samplers.{name}]: unknown sampler; known: {sorted(SAMPLERS)}")
        _check_keys(f"samplers.{name}", params, sampler_parameters(SAMPLERS[name]) | {"weight"})
    if not any(float(p.get("weight", 1.0)) > 0 for p in samplers.values()):
        raise ConfigError("[samplers]: every sampler has weight 0")
    runtime = {**_RUNTIME_DEFAULTS, **d.get("runtime", {})}
    _check_keys("runtime", runtime, _RUNTIME_DEFAULTS)
    if runtime["device"] not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"[runtime] device must be auto, cpu or cuda, got {runtime['device']!r}")
    if runtime["bf16"] not in (True, False, "auto"):
        raise ConfigError(f"[runtime] bf16 must be true, false or \"auto\", got {runtime['bf16']!r}")
    dev = _dev_table(d.get("dev"), base_dir)
    loss = _loss_table(d.get("loss", {}))
    if loss["kind"] in ("hinge", "soft-margin") and (loss["gather"] or loss["xbm_size"]) and not train["mining"]:
        raise ConfigError("[loss] gather and xbm_size widen the pool that mining picks from: "
                          "set [train] mining = true (or use kind = \"batch-all\")")
    if loss["kind"] == "batch-all" and not train["mining"]:
        # batch-all uses every allowed negative; mining=false would still mean "own negative
        # only" elsewhere, so say which one wins rather than guess.
        raise ConfigError("[loss] kind = \"batch-all\" uses every allowed negative: set [train] mining = true")
    try:
        schedule = Schedule.from_dict(d.get("schedule")).to_dict()
        augment = Augment.from_dict(d.get("augment")).to_dict()
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from exc
    return TrainConfig(cache=cache, model=model, batch_size=train["batch_size"], steps=train["steps"],
                       mining=train["mining"], lr=float(lr), margin=float(train["margin"]),
                       seed=int(train["seed"]), checkpoint_every=train["checkpoint_every"],
                       log_every=train["log_every"], samplers=samplers, device=runtime["device"],
                       threads=int(runtime["threads"]), workers=int(runtime["workers"]),
                       bf16=runtime["bf16"], dev=dev, init=_init(train["init"], base_dir), loss=loss, schedule=schedule, augment=augment)


def _init(value, base_dir) -> str | None:
    """A checkpoint path resolves against the recipe's folder; model names pass through."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"[train] init must be a model name, folder or checkpoint path, got {value!r}")
    path = Path(os.path.expandvars(os.path.expanduser(value)))
    if value.endswith(".pt") and not path.is_absolute():
        path = (Path(base_dir) / path).resolve()
    return str(path) if value.endswith(".pt") else value


def _loss_table(table: dict) -> dict:
    loss = {**_LOSS_DEFAULTS, **table}
    _check_keys("loss", loss, _LOSS_DEFAULTS)
    if loss["kind"] not in LOSS_KINDS:
        raise ConfigError(f"[loss] kind must be one of {list(LOSS_KINDS)}, got {loss['kind']!r}")
    if not isinstance(loss["temperature"], (int, float)) or loss["temperature"] <= 0:
        raise ConfigError(f"[loss] temperature must be positive, got {loss['temperature']!r}")
    for key in ("projection_dim", "xbm_size", "xbm_start_step"):
        if not isinstance(loss[key], int) or isinstance(loss[key], bool) or loss[key] < 0:
            raise ConfigError(f"[loss] {key} must be an integer >= 0, got {loss[key]!r}")
    if not isinstance(loss["gather"], bool):
        raise ConfigError(f"[loss] gather must be true or false, got {loss['gather']!r}")
    if loss["kind"] == "nt-xent" and loss["xbm_size"]:
        raise ConfigError("[loss] xbm_size applies to the triplet losses, not nt-xent")
    return loss


def _dev_table(table: dict | None, base_dir) -> dict | None:
    if table is None:
        return None
    dev = {**_DEV_DEFAULTS, **table}
    _check_keys("dev", dev, _DEV_DEFAULTS)
    if not isinstance(dev["dataset"], str) or not dev["dataset"]:
        raise ConfigError("[dev] dataset: a dataset name or CSV is required")
    _positive_int("dev", "every", dev["every"])
    if not isinstance(dev["max_windows"], int) or isinstance(dev["max_windows"], bool) \
            or dev["max_windows"] < 0:
        raise ConfigError(f"[dev] max_windows must be an integer >= 0, got {dev['max_windows']!r}")
    if dev["data_root"] is not None:
        root = Path(os.path.expandvars(os.path.expanduser(str(dev["data_root"]))))
        dev["data_root"] = str(root if root.is_absolute() else (Path(base_dir) / root).resolve())
    return dev


def apply_override(d: dict, override: str) -> None:
    """Set ``SECTION.KEY=VALUE`` (dots nest: ``samplers.translation.max_freq_shift=5``) in the
    parsed TOML ``d``; VALUE is a TOML value, or a bare string where it does not parse as one.

    ``SECTION={...}`` (an inline TOML table) replaces a whole section, e.g.
    ``samplers={translation={max_freq_shift=5}}`` trains on that one sampler alone: merging
    key by key could only add samplers to the recipe's, never take them away."""
    key, sep, text = override.partition("=")
    parts = key.strip().split(".")
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    if sep and len(parts) == 1 and parts[0] and isinstance(value, dict):
        d[parts[0]] = value
        return
    if not sep or len(parts) < 2 or not all(parts):
        raise ConfigError(f"--set {override!r}: expected SECTION.KEY=VALUE or SECTION={{...}}")
    table = d
    for part in parts[:-1]:
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
            raise ConfigError(f"--set {override!r}: {part} is not a table")
    table[parts[-1]] = value


def read_toml(path: Path, what: str) -> dict:
    """A TOML file as a dict; a missing or invalid file is a :class:`ConfigError` naming it."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such {what}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from exc


def load_config(path: str | os.PathLike, overrides: tuple[str, ...] | list[str] = ()) -> TrainConfig:
    """Read and validate a TOML configuration file, with ``--set`` style ``overrides``."""
    path = Path(path)
    d = read_toml(path, "config file")
    for override in overrides:
        apply_override(d, override)
    return from_dict(d, base_dir=path.parent)
