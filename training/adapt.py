"""``python -m training adapt AUDIO --out MODEL_DIR``: a released model trained on, without
labels, on the user's own audio, and exported as a model folder.

The paper's premise is that unlabeled audio is plentiful; whoever holds a folder of it can make
the embedding theirs. One call does what otherwise takes a manifest, a cache, a recipe, a run
and an export: it caches AUDIO's features, warm-starts from a model (default: the bundled one),
trains with the release recipe (``recipes/debian/joint_v04.toml``: its loss, memory, samplers
and rates, read by ``training.config``, with a cosine plan over this run's budget) and exports.

``MODEL_DIR`` afterwards::

    config.json, model.safetensors   the adapted model (audioembed.model_folder); config.json's
                                     provenance["adaptation"] holds the lineage
    README.md                        a short model card saying the same
    adapt/                           the run: adapt.json (what was asked, whether it finished),
                                     checkpoint.pt, train_log.jsonl, config.json, and for a glob
                                     the manifest.csv it expanded to
    cache/                           the feature cache (unless ``cache=`` names another folder)

Rerunning into the same folder resumes the run (the trainer's exact resume); a finished one is
reported and left alone. Under torchrun the main process builds the cache while the others
wait for it, then every process trains (``training.distributed``).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from audioembed import registry
from audioembed.errors import AudioembedError
from audioembed.model_folder import CONFIG_NAME, WEIGHTS_NAME, release_provenance, sha256_file
from audioembed.outputs import atomic_write, write_csv
from training import distributed
from training.checkpoint import CHECKPOINT_NAME, read_checkpoint
from training.config import apply_override, from_dict, read_toml
from training.export import export_checkpoint
from training.feature_cache import META_NAME, FeatureCache, build_cache, read_manifest

RECIPE = Path(__file__).resolve().parent / "recipes" / "debian" / "joint_v04.toml"
DEFAULT_TRIPLETS = 12_000
# --minutes plans the learning-rate curve at this machine's rate, from a few timed steps of the
# network before training: machines differ by far more than any constant would allow (2-core
# CPUs alone measured 12 to 46 triplets/s). The trainer's loop kept 0.93-0.97 of the bare step's
# rate (training/README.md, Throughput), hence the share.
RATE_STEPS, LOOP_SHARE = 2, 0.9
# Below this there is too little to draw negatives from (never the anchor's own recording) and
# too little audio for a budget's worth of distinct windows.
MIN_RECORDINGS = 10
MIN_SECONDS = 60.0
RUN_DIR, CACHE_DIR, STATE_NAME, CARD_NAME, GLOB_MANIFEST = (
    "adapt", "cache", "adapt.json", "README.md", "manifest.csv")
# Warmup is the recipe's, but at most this share of a short run's plan.
MAX_WARMUP_SHARE = 0.1


class AdaptError(AudioembedError, ValueError):
    """AUDIO, MODEL_DIR or a budget that adapt cannot use; the message says which and why."""


@dataclass
class AdaptResult:
    """How a call ended: the model folder, triplets trained of those planned, and whether the
    run is finished (``already``: it was before this call)."""

    out: Path
    triplets_seen: int
    planned: int
    finished: bool
    already: bool = False
    reason: str = ""
    failures: list[str] = field(default_factory=list)
    main: bool = True  # False in torchrun's other processes, which export nothing


def check_budget(triplets: int | None, minutes: float | None) -> None:
    """Refuse a budget that trains on nothing."""
    if triplets is not None and triplets < 1:
        raise AdaptError(f"--triplets must be at least 1, got {triplets}")
    if minutes is not None and not minutes > 0:
        raise AdaptError(f"--minutes must be positive, got {minutes}")


def plan_triplets(triplets: int | None, minutes: float | None, rate: float | None = None) -> int:
    """The triplets the learning-rate plan spans: ``triplets``, else what ``minutes`` gives at
    ``rate`` triplets/s, else the default."""
    check_budget(triplets, minutes)
    if triplets is not None:
        return int(triplets)
    if minutes is not None:
        if rate is None:
            raise AdaptError("a --minutes budget needs the machine's measured rate")
        return max(1, int(minutes * 60 * rate))
    return DEFAULT_TRIPLETS


def measured_rate(config, ctx) -> float:
    """Triplets/s that training ``config`` can keep on this machine, over all processes: the
    trainer's bare step (:func:`training.trainer.bare_step_seconds`, on the trainer's thread
    count) times ``LOOP_SHARE``."""
    import torch

    from training.trainer import _threads, bare_step_seconds

    threads = torch.get_num_threads()
    torch.set_num_threads(_threads(config, ctx))  # the trainer's count; the caller's comes back
    try:
        seconds, _ = bare_step_seconds(config, ctx.device, warmup=1, steps=RATE_STEPS)
    finally:
        torch.set_num_threads(threads)
    rate = torch.tensor(config.batch_size / seconds, dtype=torch.float64, device=ctx.device)
    # Every process plans the same: the sum of the ranks' rates.
    return float(distributed.all_reduce_sum(rate, ctx)) * LOOP_SHARE


def recipe_config(cache: str | os.PathLike, base: str, base_model: dict, planned: int,
                  overrides: tuple[str, ...] | list[str] = ()):
    """The release recipe for this run: its sections as they are, but the data (this cache),
    the network (the base model's), the warm start (the base), no development set (it is the
    release's, not the user's), and the cosine plan over ``planned`` triplets; then
    ``overrides`` (``--set``)."""
    d = read_toml(RECIPE, "recipe")
    d.pop("dev", None)
    d["data"] = {"cache": str(Path(cache).resolve())}
    d["model"] = dict(base_model)
    d.setdefault("train", {})["init"] = base
    schedule = d.setdefault("schedule", {})
    schedule["total_triplets"] = planned
    schedule["warmup_triplets"] = min(int(schedule.get("warmup_triplets", 0)),
                                      int(planned * MAX_WARMUP_SHARE))
    for override in overrides:
        apply_override(d, override)
    config = from_dict(d, base_dir=RECIPE.parent)
    # Enough steps for the budget at one process; more processes stop at the budget sooner.
    return dataclasses.replace(config, steps=math.ceil(planned / config.batch_size))


def _audio_source(audio: str, run: Path) -> tuple[str, str | None]:
    """``(manifest, root)`` for ``build_cache``: a folder or CSV as given; files or a glob
    written as a manifest in the run folder (``path,bytes``, so its sha256 covers sizes)."""
    from audioembed.extract import expand_inputs

    path = Path(os.path.expanduser(audio))
    if path.is_dir() or (path.is_file() and path.suffix.lower() == ".csv"):
        return str(path.resolve()), None
    sources, failures = expand_inputs([audio])
    if not sources:
        raise AdaptError(failures[0] if failures else f"{audio}: no audio files")
    run.mkdir(parents=True, exist_ok=True)
    manifest = run / GLOB_MANIFEST
    write_csv(manifest, [["path", "bytes"]]
              + [[str(src.path.resolve()), src.path.stat().st_size] for src in sources])
    return str(manifest), None


def _base_spec(base: str | None) -> str:
    """A registry or Hub name as given; a folder as its absolute path."""
    if base is None:
        return registry.DEFAULT_MODEL
    path = Path(os.path.expanduser(base))
    return str(path.resolve()) if path.is_dir() else base


def check_enough_audio(cache: FeatureCache, audio: str) -> None:
    """Refuse a cache with too little audio to train on."""
    seconds, recordings = cache.seconds(), cache.num_recordings
    if recordings < MIN_RECORDINGS or seconds < MIN_SECONDS:
        _refuse_little(audio, f"{recordings} readable recording{'s' * (recordings != 1)}, "
                              f"{seconds:.0f} s")


def _refuse_little(audio: str, found: str) -> None:
    raise AdaptError(f"{audio}: too little audio to adapt to ({found}); adapt needs at least "
                     f"{MIN_RECORDINGS} recordings and {MIN_SECONDS:.0f} s of audio")


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdaptError(f"{path}: unreadable ({exc}); choose another --out") from exc


def _write_json(path: Path, obj: dict) -> None:
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _request(audio: str, base: str | None, cache: str | None, triplets: int | None,
             minutes: float | None, overrides, out: Path, started: dict | None) -> dict:
    """What this run trains on and for how long: the first call's settings; a rerun must ask
    for the same (what it leaves out, it keeps)."""
    expanded = os.path.expanduser(audio)
    given = {"audio": str(Path(expanded).resolve()) if os.path.exists(expanded) else audio,
             "base": _base_spec(base) if base is not None else None,
             "cache": str(Path(cache).resolve()) if cache is not None else None,
             "overrides": list(overrides) or None}
    check_budget(triplets, minutes)
    # A minutes-only plan is measured once, when training starts (None until then).
    planned = plan_triplets(triplets, None) if triplets is not None or minutes is None else None
    if triplets is not None:
        given["planned"] = planned
    if triplets is not None or minutes is not None:
        given["minutes"] = minutes
    if started is None:
        return {"audio": given["audio"], "base": given["base"] or _base_spec(None),
                "cache": given["cache"] or str((out / CACHE_DIR).resolve()),
                "overrides": given["overrides"] or [], "planned": planned, "minutes": minutes}
    for key, value in given.items():
        if (value is not None or key == "minutes") and value != started[key]:
            raise AdaptError(f"{out} was started with {key} {started[key]!r}, not {value!r}: rerun "
                             "with the first call's settings, or choose another --out (--from "
                             f"{out} trains on from this model)")
    return started


def _progress_bar(planned: int):
    """A tqdm bar over the planned triplets, on stderr, fed by the trainer's progress hook."""
    from tqdm import tqdm

    bar = tqdm(total=planned, unit="triplet", unit_scale=False, desc="adapting", file=sys.stderr,
               dynamic_ncols=True)

    def update(triplets_seen: int, record: dict | None) -> None:
        bar.update(min(triplets_seen, planned) - bar.n)
        if record is not None:
            bar.set_postfix(loss=f"{record['loss']:.3f}", refresh=False)

    return bar, update


def _minutes_left(request: dict, ckpt_path: Path) -> float | None:
    if request["minutes"] is None:
        return None
    spent = read_checkpoint(ckpt_path)["elapsed_s"] / 60 if ckpt_path.exists() else 0.0
    return max(request["minutes"] - spent, 0.0)


def adapt(audio: str, out: str | os.PathLike, *, base: str | None = None,
          cache: str | os.PathLike | None = None, triplets: int | None = None,
          minutes: float | None = None, overrides: tuple[str, ...] | list[str] = (),
          jobs: int = 1, echo: Callable[[str], None] = print, progress: bool = True) -> AdaptResult:
    """Adapt ``base`` to the audio of ``audio`` (folder, glob, file or manifest CSV) and export
    the result into ``out``; resumes the run already there. See the module docstring."""
    from training.trainer import train

    out = Path(out)
    run = out / RUN_DIR
    state = _read_json(run / STATE_NAME)
    if state is None and (out / CONFIG_NAME).exists():
        made = (_read_json(out / CONFIG_NAME) or {}).get("provenance", {}).get("adaptation")
        if made is None:
            raise AdaptError(f"{out}: holds a model folder that adapt did not make; choose another --out")
        # Finished, and its run folder deleted to ship the model.
        return AdaptResult(out, made["triplets"], made["budget"]["planned_triplets"], True, already=True)
    # A new run writes only into an empty folder (or one an interrupted cache build left).
    others = sorted(p.name for p in out.iterdir() if p.name not in (RUN_DIR, CACHE_DIR)) \
        if state is None and out.is_dir() else []
    if others:
        raise AdaptError(f"{out}: not empty ({', '.join(others[:3])}{', ...' * (len(others) > 3)}) "
                         "and holds no adapt run; choose a new folder for --out")
    request = _request(audio, base, cache, triplets, minutes, overrides, out,
                       state["request"] if state else None)
    if state is not None and state.get("finished"):
        return AdaptResult(out, state["triplets_seen"], request["planned"], True, already=True)
    from audioembed import load_model

    base_model = load_model(request["base"])
    base_sha256 = base_model.info.get("sha256")
    network = base_model.config.to_dict()
    del base_model

    def configured(planned: int):
        return recipe_config(request["cache"], request["base"], network, planned, request["overrides"])

    ctx = distributed.setup(configured(request["planned"] or DEFAULT_TRIPLETS).device)
    failures: list[str] = []
    error = None
    if ctx.is_main:
        try:
            failures = _prepare(audio, request, run, jobs, progress, echo)
        except AudioembedError as exc:
            error = exc
    # The other processes wait for the cache; if it failed, every process stops.
    if distributed.any_rank(error is not None, ctx):
        distributed.teardown(ctx)
        if error is not None:
            raise error
        raise AdaptError("the main process could not prepare the run")
    if request["planned"] is None:
        rate = measured_rate(configured(DEFAULT_TRIPLETS), ctx)
        request = dict(request, planned=plan_triplets(None, request["minutes"], rate))
        echo(f"planning {request['planned']:,} triplets for {request['minutes']:g} minutes at the "
             f"{rate:.1f} triplets/s measured here")
    if state is None and ctx.is_main:
        run.mkdir(parents=True, exist_ok=True)
        _write_json(run / STATE_NAME, {"request": request, "finished": False})
    config = configured(request["planned"])
    ckpt_path = run / CHECKPOINT_NAME
    bar, hook = _progress_bar(request["planned"]) if progress and ctx.is_main else (None, None)
    try:
        result = train(config, run, resume=ckpt_path.exists(), max_triplets=request["planned"],
                       max_minutes=_minutes_left(request, ckpt_path),
                       echo=(lambda line: bar.write(line, file=sys.stderr)) if bar is not None else echo,
                       progress=hook)
        if hook is not None:
            hook(result.triplets_seen, None)  # the last steps, logged or not
    finally:
        if bar is not None:
            bar.close()
    finished = result.reason in ("steps", "max_triplets", "max_minutes")
    outcome = AdaptResult(out, result.triplets_seen, request["planned"], finished,
                          reason=result.reason, failures=failures, main=ctx.is_main)
    if ctx.is_main and finished:
        _export(out, run, request, base_sha256, result.triplets_seen)
    return outcome


def _prepare(audio: str, request: dict, run: Path, jobs: int, progress: bool, echo) -> list[str]:
    """Cache the audio (unless a resumed run's cache is complete); returns the files that could
    not be read."""
    cache = Path(request["cache"])
    meta = _read_json(cache / META_NAME) or {}
    failures: list[str] = []
    if not meta.get("complete"):
        manifest, root = _audio_source(request["audio"], run)
        found = len(read_manifest(manifest, root))
        if found < MIN_RECORDINGS:  # refused before decoding anything
            _refuse_little(audio, f"{found} audio file{'s' * (found != 1)}")
        report = build_cache(manifest, cache, root=root, jobs=jobs, progress=progress)
        failures = report.failures
        echo(f"cached {report.added} files ({report.skipped} already cached, "
             f"{len(failures)} unreadable) in {cache}")
    check_enough_audio(FeatureCache(cache), audio)
    return failures


def lineage(request: dict, base_sha256: str | None, cache: FeatureCache, triplets_seen: int) -> dict:
    """What the adapted model came from: base and its sha256, data, triplets, recipe."""
    return {
        "base_model": request["base"],
        "base_model_sha256": base_sha256,
        "data": {"source": request["audio"], "fingerprint_sha256": cache.fingerprint(),
                 "manifest_sha256": cache.meta.get("manifest_sha256"),
                 "files": cache.num_files, "recordings": cache.num_recordings,
                 "hours": round(cache.seconds() / 3600, 4),
                 "files_failed": cache.meta.get("files_failed", 0)},
        "triplets": triplets_seen,
        "budget": {"planned_triplets": request["planned"], "minutes": request["minutes"]},
        "recipe": RECIPE.relative_to(RECIPE.parents[3]).as_posix(),
        "recipe_sha256": sha256_file(RECIPE),
        "overrides": list(request["overrides"]),
    }


def _export(out: Path, run: Path, request: dict, base_sha256: str | None, triplets_seen: int) -> None:
    """The model folder, its card, and the run marked finished."""
    cache = FeatureCache(request["cache"])
    lin = lineage(request, base_sha256, cache, triplets_seen)
    export_checkpoint(run / CHECKPOINT_NAME, out, name=out.resolve().name, extra={"adaptation": lin})
    card = model_card(out, lin, sha256_file(out / WEIGHTS_NAME))
    atomic_write(out / CARD_NAME, lambda f: f.write(card.encode("utf-8")))
    _write_json(run / STATE_NAME, {"request": request, "finished": True, "triplets_seen": triplets_seen})


_CARD = """# {name}

An audioembed model adapted without labels to the audio of `{source}`: the base model
`{base}` trained on for {triplets:,} triplets with the release recipe
`{recipe}` (soft-margin triplets over a cross-batch memory, warmup and
cosine decay over a plan of {planned:,} triplets){overrides}.

| | |
| --- | --- |
| base model | `{base}`, sha256 `{base_sha256}` |
| data | {files:,} files, {hours:.2f} h ({failed} unreadable, skipped); fingerprint sha256 `{fingerprint}` |
| triplets | {triplets:,} |
| recipe | `{recipe}`, sha256 `{recipe_sha256}` |
| weights | `model.safetensors`, sha256 `{weights_sha256}` |
| made | {date} by `python -m training adapt` |

Use it like any model folder:

```sh
audioembed extract clip.wav -o clip.npy --model {folder}
audioembed export-onnx {name}.onnx --model {folder}
```

```python
from audioembed import embed
e = embed("clip.wav", model="{folder}")
```

`config.json` records the same lineage (`provenance.adaptation`). The `adapt/` and `cache/`
folders hold the training run and its features: the model does not need them.
"""


def model_card(out: Path, lin: dict, weights_sha256: str) -> str:
    """The short card written beside the adapted model (``out``, as the user named it)."""
    lin = release_provenance(lin)  # paths as config.json records them
    data = lin["data"]
    overrides = f", with {', '.join(f'`{o}`' for o in lin['overrides'])}" if lin["overrides"] else ""
    return _CARD.format(name=out.resolve().name, folder=os.fspath(out), source=data["source"],
                        base=lin["base_model"], base_sha256=lin["base_model_sha256"],
                        triplets=lin["triplets"], planned=lin["budget"]["planned_triplets"],
                        recipe=lin["recipe"], recipe_sha256=lin["recipe_sha256"],
                        overrides=overrides, files=data["files"], hours=data["hours"],
                        failed=data["files_failed"], fingerprint=data["fingerprint_sha256"],
                        weights_sha256=weights_sha256,
                        date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
