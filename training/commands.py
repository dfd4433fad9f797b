"""Click commands ``cache``, ``cache-stats``, ``train`` and ``export`` (registered in ``training.cli``)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from audioembed.errors import AudioembedError


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
    for line in report.failures[:20]:
        click.echo(f"  skipped {line}", err=True)
    if len(report.failures) > 20:
        click.echo(f"  ... and {len(report.failures) - 20} more: see {Path(out) / 'failures.json'}", err=True)


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
