"""``python -m training ...``: the click command group. The commands ``cache``, ``cache-stats``,
``train``, ``export`` and ``adapt`` are defined here; the others live with the code they drive
(``corpus``, ``evaluate``, ``model-card``, ``experiment``) and are collected by :func:`_register`.
Every command defers its heavy imports (torch, the trainer) to when it runs."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from audioembed.errors import AudioembedError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Train, evaluate and export audioembed models."""
    from audioembed.allocator import keep_freed_memory  # before torch allocates (audioembed.allocator)

    keep_freed_memory()


@click.command()
@click.option("--manifest", required=True, type=click.Path(exists=True),
              help="Manifest CSV (path[,label][,recording] or package,path,duration_s) or audio folder.")
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="Folder the manifest's paths are relative to (default: the manifest's folder).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Cache folder.")
@click.option("--jobs", type=int, default=1, show_default=True, help="Decoding worker processes.")
@click.option("--block-frames", type=int, default=None, help="Frames per cache block file (default 2^20).")
def cache(manifest, root, out, jobs, block_frames):
    """Decode audio once into a memory-mapped mel-energy cache (resumable)."""
    from training.feature_cache import BLOCK_FRAMES, CacheError, build_cache

    if jobs < 1:
        raise click.BadParameter("must be at least 1", param_hint="--jobs")
    try:
        report = build_cache(manifest, out, root=root, jobs=jobs,
                             block_frames=block_frames or BLOCK_FRAMES, progress=True)
    except CacheError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{report.added} files cached ({report.frames} frames), {report.skipped} already "
               f"cached, {len(report.failures)} failed; {report.clipped} values clipped to the "
               f"fp16 maximum")
    _list_failures(report.failures, Path(out))


def _list_failures(failures: list[str], cache_dir: Path, shown: int = 20) -> None:
    """The files a cache build skipped, one line each (the first ``shown``), on stderr."""
    from training.feature_cache import FAILURES_NAME

    for line in failures[:shown]:
        click.echo(f"  skipped {line}", err=True)
    if len(failures) > shown:
        click.echo(f"  ... and {len(failures) - shown} more: see {cache_dir / FAILURES_NAME}", err=True)


@click.command("cache-stats")
@click.argument("cache_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--max-offset-frames", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Temporal proximity's reach (frames of 10 ms), as in the recipe's sampler.")
@click.option("--draws", type=click.IntRange(min=1), default=20000, show_default=True,
              help="Temporal-proximity draws to measure offsets on.")
def cache_stats(cache_dir, max_offset_frames, draws):
    """What CACHE_DIR offers the samplers: file lengths, and how far temporal proximity's
    positives lie from their anchors."""
    from training.cache_stats import describe, format_stats
    from training.feature_cache import CacheError, FeatureCache

    try:
        stats = describe(FeatureCache(cache_dir), max_offset_frames=max_offset_frames, draws=draws)
    except CacheError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(format_stats(stats))


@click.command()
@click.option("--config", "config_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="TOML configuration (see training/config.py).")
@click.option("--out", "out", type=click.Path(file_okay=False), default=None,
              help="Run folder (default: runs/<config name>).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint.")
@click.option("--max-triplets", type=int, default=None, help="Stop (with a checkpoint) after this many triplets in total.")
@click.option("--max-minutes", type=float, default=None, help="Stop (with a checkpoint) after this many minutes.")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override one config value (a TOML value, e.g. --set train.lr=3e-4), or replace a "
                   "whole section with an inline table (--set 'samplers={translation={}}'); repeatable. "
                   "The run's config.json records the result.")
@click.option("--write-checksums", is_flag=True, hidden=True,
              help="Each rank writes a sha256 of its parameters (tests of distributed runs).")
def train(config_path, out, resume, max_triplets, max_minutes, overrides, write_checksums):
    """Train an embedding model with triplet loss (torchrun for several processes)."""
    from training.config import ConfigError, load_config
    from training.trainer import train as run_training

    try:
        config = load_config(config_path, overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    out = out or os.path.join("runs", Path(config_path).stem)
    try:
        run_training(config, out, resume=resume, max_triplets=max_triplets, max_minutes=max_minutes,
                     write_checksums=write_checksums, echo=click.echo)
    except AudioembedError as exc:
        raise click.ClickException(str(exc)) from exc


@click.command("export")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.argument("outdir", type=click.Path(file_okay=False))
@click.option("--name", default=None, help="Model name recorded in the provenance.")
@click.option("--push-to-hub", "repo_id", default=None, help="Also upload to this Hub repo (org/repo).")
def export(checkpoint, outdir, name, repo_id):
    """Write a checkpoint as a release model folder (fp16 safetensors + config.json)."""
    from training.export import export_checkpoint, push_to_hub

    try:
        folder = export_checkpoint(checkpoint, outdir, name=name)
    except AudioembedError as exc:
        raise click.ClickException(str(exc)) from exc
    from audioembed.model_folder import WEIGHTS_NAME, sha256_file

    click.echo(f"wrote {folder}")
    # The registry pins this digest for bundled and Hub releases.
    click.echo(f"sha256 of {WEIGHTS_NAME}: {sha256_file(Path(folder) / WEIGHTS_NAME)}")
    if repo_id:
        url = push_to_hub(folder, repo_id)
        click.echo(f"uploaded to {url}")
    sys.stdout.flush()


@click.command()
@click.argument("audio")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Model folder to write (and the run, resumed when rerun).")
@click.option("--from", "base", default=None,
              help="Model to start from: a registry name, a model folder or hf-hub:org/repo "
                   "(default: the bundled default model).")
@click.option("--triplets", type=click.IntRange(min=1), default=None,
              help="Budget in triplets (default 12,000: 4-16 minutes on 2 CPU cores with bf16, "
                   "by CPU; see training/README.md).")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Budget in minutes of training; the learning-rate plan spans what this "
                   "machine's rate, measured in a few steps before training, fits in them.")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False), default=None,
              help="Feature cache folder (default: MODEL_DIR/cache).")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Decoding worker processes for the cache.")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override one value of the release recipe, as train --set does; repeatable.")
def adapt(audio, out, base, triplets, minutes, cache_dir, jobs, overrides):
    """Adapt a model to AUDIO without labels, and export it into --out.

    \b
    AUDIO is a folder (searched at every level), a glob (quoted) or a manifest CSV (a path
    column; see the cache command). The command caches its features, warm-starts from --from,
    trains with the release recipe (training/recipes/debian/joint_v04.toml: soft-margin triplets
    over a cross-batch memory, warmup and cosine decay over the budget) and writes a model
    folder that audioembed extract --model, embed(model=...), the HEAR API and export-onnx
    load, with its lineage in config.json and a short README.md. Rerunning the same command
    resumes an interrupted run; a finished one says so. Under torchrun every process trains.
    """
    from training.adapt import CACHE_DIR, adapt as run_adapt

    try:
        result = run_adapt(audio, out, base=base, cache=cache_dir, triplets=triplets,
                           minutes=minutes, overrides=overrides, jobs=jobs,
                           echo=lambda line: click.echo(line, err=True))
    except AudioembedError as exc:
        raise click.ClickException(str(exc)) from exc
    if not result.main:
        return  # torchrun's other processes: the main one reports
    _list_failures(result.failures, Path(cache_dir or Path(out) / CACHE_DIR))
    if result.already:
        click.echo(f"{out}: already finished ({result.triplets_seen} triplets); nothing to do")
    elif result.finished:
        click.echo(f"wrote {out} ({result.triplets_seen} triplets)")
    else:
        raise click.ClickException(f"stopped ({result.reason}) at {result.triplets_seen} of "
                                   f"{result.planned} triplets; rerun the same command to resume")


def _register() -> None:
    # The commands defined above, and those that live with the code they drive.
    from training.corpus.cli import corpus
    main.add_command(corpus)
    for command in (cache, cache_stats, train, export, adapt):
        main.add_command(command)
    from training.evaluation.cli import evaluate, evaluate_report
    main.add_command(evaluate)
    main.add_command(evaluate_report)
    from training.model_card import model_card
    main.add_command(model_card)
    from training.experiments.cli import experiment
    main.add_command(experiment)


_register()
