"""The experiment recipe: one TOML file naming a base training recipe, a triplet budget and arms.

Example (``training/recipes/debian/paper_tables.toml`` is the real one)::

    [experiment]
    base = "joint.toml"            # training recipe every training arm starts from (relative)
    triplets = 30000               # budget of every training arm, from scratch
    runs = "~/.cache/audioembed/experiments/paper_tables"   # run folders (large, outside git)
    results = "results/paper_tables"   # one JSON per arm (committed)
    markdown = "results/paper_tables.md"
    figures = "results/figures"
    datasets = ["debian-sfx-eval", "fsdd"]   # any evaluate --dataset
    nproc = 2                      # training processes per arm (torchrun); 1: in this process
    eval_threads = 2               # torch/BLAS threads while evaluating
    eval_cache = "~/.cache/audioembed/eval"  # window embeddings (evaluate --cache-dir)
    # evaluation = {epochs = 50}   # EvalSettings fields other than the evaluator's defaults
    map = {dataset = "debian-sfx", models = ["logmel", "triplet-resnet50-joint"]}  # 2-D map figure
    card = "../../../MODEL_CARD.md"  # its <!-- paper_tables:start/end --> block gets the tables
                                   # (or a list of such files: the model card and a README)
    set = ["dev.every=100"]        # --set overrides for every training arm
    # paper_column = false       # drop the "Paper (AudioSet)" side column (A/B grids)

    [arms.joint]                   # arms run in file order
    label = "Joint"
    tables = ["2", "3"]
    set = ["samplers={gaussian_noise={}, translation={}, example_mixing={}, temporal_proximity={}}"]

    [arms.logmel]
    kind = "evaluate"              # no training: evaluate a model as it is
    model = "logmel"
    role = "baseline"              # the recovery columns' baseline (one arm); "topline" likewise

Arm keys: ``kind`` (``train``, the default; ``evaluate``; ``scratch``: a ResNet trained from
scratch on the light-supervision clips, Table 3), ``label``, ``tables`` (``"1"``, ``"2"``,
``"3"``), ``role``, ``set`` (``--set`` overrides after the experiment's), ``train_on`` (a
labelled ``--dataset`` whose clips become the arm's feature cache, for the explicit-label
topline), ``model`` (evaluate arms), ``sweep`` (Table 1: ``{param = "S", value = 10}``),
``note`` (shown under the table), ``paper`` (the paper's AudioSet numbers for the side column:
``{qbe = ..., clf1 = ..., clf2 = ..., light = ...}``), ``extra_light_layers`` (light supervision
also with these hidden-layer counts, e.g. ``[4]`` for the 4x512 log-mel net of Table 3),
``scratch`` (options of :mod:`.supervised_baseline`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from training.config import ConfigError, read_toml

KINDS = ("train", "evaluate", "scratch")
ROLES = (None, "baseline", "topline")
TABLES = ("1", "2", "3")
PAPER_KEYS = ("qbe", "clf1", "clf2", "light")
_EXPERIMENT_KEYS = {"base", "triplets", "runs", "results", "markdown", "figures", "datasets", "nproc",
                    "set", "eval_threads", "seed", "title", "eval_cache", "evaluation", "map", "card",
                    "paper_column"}
_ARM_KEYS = {"kind", "label", "tables", "role", "set", "train_on", "model", "sweep", "note", "paper",
             "extra_light_layers", "scratch"}


class RecipeError(ValueError):
    """An experiment recipe that cannot be used; the message names the key."""


@dataclass(frozen=True)
class Arm:
    name: str
    kind: str = "train"
    label: str = ""
    tables: tuple[str, ...] = ("2",)
    role: str | None = None
    overrides: tuple[str, ...] = ()
    train_on: str | None = None
    model: str | None = None
    sweep: dict | None = None
    note: str | None = None
    paper: dict = field(default_factory=dict)
    extra_light_layers: tuple[int, ...] = ()
    scratch: dict = field(default_factory=dict)

    def describe(self) -> dict:
        """What the arm is, as recorded in its results JSON."""
        return {"name": self.name, "kind": self.kind, "label": self.label, "tables": list(self.tables),
                "role": self.role, "set": list(self.overrides), "train_on": self.train_on,
                "model": self.model, "sweep": self.sweep, "note": self.note, "paper": self.paper,
                "extra_light_layers": list(self.extra_light_layers), "scratch": self.scratch}


@dataclass(frozen=True)
class Experiment:
    path: Path
    base: Path
    triplets: int
    runs: Path
    results: Path
    markdown: Path
    figures: Path
    datasets: tuple[str, ...]
    nproc: int
    overrides: tuple[str, ...]
    eval_threads: int
    eval_cache: Path
    evaluation: dict  # EvalSettings fields that differ from the evaluator's defaults
    map: dict | None  # {dataset, models}: the 2-D map figure, or None
    cards: tuple[Path, ...]  # Markdown files, each holding a <!-- TITLE:start/end --> block of the tables
    seed: int
    title: str
    arms: tuple[Arm, ...]
    paper_column: bool = True  # the tables' "Paper (AudioSet)" side column; off for A/B grids

    def arm(self, name: str) -> Arm:
        for a in self.arms:
            if a.name == name:
                return a
        raise RecipeError(f"{self.path}: no arm {name!r}; arms: {[a.name for a in self.arms]}")

    def eval_settings(self):
        from training.evaluation.run import EvalSettings

        return EvalSettings(seed=self.seed, **self.evaluation)

    def with_role(self, role: str) -> Arm | None:
        return next((a for a in self.arms if a.role == role), None)


def _path(value, base_dir: Path) -> Path:
    p = Path(os.path.expandvars(os.path.expanduser(str(value))))
    return p if p.is_absolute() else (base_dir / p).resolve()


def _cards(value, base_dir: Path) -> tuple[Path, ...]:
    names = _strings("[experiment] card", [value] if isinstance(value, str) else value)
    return tuple(_path(name, base_dir) for name in names)


def _strings(where: str, value) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RecipeError(f"{where} must be a list of strings, got {value!r}")
    return tuple(value)


def _arm(name: str, d: dict, where: str) -> Arm:
    unknown = sorted(set(d) - _ARM_KEYS)
    if unknown:
        raise RecipeError(f"{where}: unknown keys {unknown}; allowed: {sorted(_ARM_KEYS)}")
    kind = d.get("kind", "train")
    if kind not in KINDS:
        raise RecipeError(f"{where}: kind must be one of {list(KINDS)}, got {kind!r}")
    if kind == "evaluate" and not d.get("model"):
        raise RecipeError(f"{where}: an evaluate arm needs model = \"...\" (a registry name, folder or logmel)")
    if kind != "evaluate" and "model" in d:
        raise RecipeError(f"{where}: model applies to evaluate arms only")
    role = d.get("role")
    if role not in ROLES:
        raise RecipeError(f"{where}: role must be baseline or topline, got {role!r}")
    tables = _strings(f"{where} tables", d.get("tables", ["2"]))
    if set(tables) - set(TABLES):
        raise RecipeError(f"{where}: tables must be among {list(TABLES)}, got {list(tables)}")
    sweep = d.get("sweep")
    if sweep is not None and (not isinstance(sweep, dict) or set(sweep) != {"param", "value"}):
        raise RecipeError(f"{where}: sweep must be {{param = \"S\", value = 10}}, got {sweep!r}")
    if "1" in tables and sweep is None:
        raise RecipeError(f"{where}: a Table 1 arm needs sweep = {{param = ..., value = ...}}")
    paper = d.get("paper", {})
    if not isinstance(paper, dict) or set(paper) - set(PAPER_KEYS):
        raise RecipeError(f"{where}: paper takes the keys {list(PAPER_KEYS)}, got {paper!r}")
    extra = d.get("extra_light_layers", [])
    if not isinstance(extra, list) or not all(isinstance(n, int) and n >= 1 for n in extra):
        raise RecipeError(f"{where}: extra_light_layers must be a list of positive integers")
    return Arm(name=name, kind=kind, label=str(d.get("label", name)), tables=tables, role=role,
               overrides=_strings(f"{where} set", d.get("set", [])), train_on=d.get("train_on"),
               model=d.get("model"), sweep=sweep, note=d.get("note"), paper=dict(paper),
               extra_light_layers=tuple(extra), scratch=dict(d.get("scratch", {})))


def _evaluation(d) -> dict:
    from training.evaluation.run import EvalSettings

    allowed = set(EvalSettings.__dataclass_fields__) - {"seed"}
    if not isinstance(d, dict) or set(d) - allowed:
        raise RecipeError(f"[experiment] evaluation takes the keys {sorted(allowed)}, got {d!r}")
    return dict(d)


def _map(d) -> dict | None:
    if d is None:
        return None
    if not isinstance(d, dict) or set(d) != {"dataset", "models"} or not isinstance(d["models"], list):
        raise RecipeError(f"[experiment] map must be {{dataset = \"...\", models = [...]}}, got {d!r}")
    return dict(d)


def load_experiment(path: str | os.PathLike) -> Experiment:
    """Read and validate an experiment recipe; relative paths resolve against its folder."""
    path = Path(path).resolve()
    try:
        d = read_toml(path, "experiment recipe")
    except ConfigError as exc:
        raise RecipeError(str(exc)) from exc
    unknown = sorted(set(d) - {"experiment", "arms"})
    if unknown:
        raise RecipeError(f"{path}: unknown top-level tables {unknown}; expected [experiment] and [arms.NAME]")
    e = d.get("experiment", {})
    unknown = sorted(set(e) - _EXPERIMENT_KEYS)
    if unknown:
        raise RecipeError(f"[experiment]: unknown keys {unknown}; allowed: {sorted(_EXPERIMENT_KEYS)}")
    for key in ("base", "triplets", "runs", "results", "markdown", "datasets"):
        if key not in e:
            raise RecipeError(f"[experiment] {key} is required")
    triplets = e["triplets"]
    if not isinstance(triplets, int) or isinstance(triplets, bool) or triplets < 1:
        raise RecipeError(f"[experiment] triplets must be a positive integer, got {triplets!r}")
    nproc = e.get("nproc", 1)
    if not isinstance(nproc, int) or nproc < 1:
        raise RecipeError(f"[experiment] nproc must be a positive integer, got {nproc!r}")
    paper_column = e.get("paper_column", True)
    if not isinstance(paper_column, bool):
        raise RecipeError(f"[experiment] paper_column must be true or false, got {paper_column!r}")
    here = path.parent
    arms_table = d.get("arms", {})
    if not arms_table:
        raise RecipeError(f"{path}: no [arms.NAME] tables")
    arms = tuple(_arm(name, a, f"[arms.{name}]") for name, a in arms_table.items())
    for role in ("baseline", "topline"):
        if sum(a.role == role for a in arms) > 1:
            raise RecipeError(f"{path}: more than one arm has role = {role!r}")
    return Experiment(
        path=path, base=_path(e["base"], here), triplets=triplets, runs=_path(e["runs"], here),
        results=_path(e["results"], here), markdown=_path(e["markdown"], here),
        figures=_path(e.get("figures", "figures"), here),
        datasets=_strings("[experiment] datasets", e["datasets"]), nproc=nproc,
        overrides=_strings("[experiment] set", e.get("set", [])),
        eval_threads=int(e.get("eval_threads", 1)),
        eval_cache=_path(e.get("eval_cache", "~/.cache/audioembed/eval"), here),
        evaluation=_evaluation(e.get("evaluation", {})), map=_map(e.get("map")),
        cards=_cards(e.get("card", []), here), seed=int(e.get("seed", 0)),
        title=str(e.get("title", path.stem)), arms=arms, paper_column=paper_column)
