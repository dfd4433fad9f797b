"""``python -m training corpus ...``: click wrappers around the corpus builders."""
from __future__ import annotations

from pathlib import Path

import click

from training.corpus import debian as debian_corpus
from training.corpus import github as github_corpus


@click.group()
def corpus() -> None:
    """Build audio corpora for training and evaluation."""


@corpus.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=debian_corpus.DEFAULT_OUT,
              show_default=True, help="Directory receiving OUT/<package>/<path> and report.json.")
@click.option("--keep-debs", is_flag=True, help="Keep downloaded .deb files (under OUT/.debs).")
@click.option("--packages", metavar="NAME,...", help="Only these pinned packages.")
@click.option("--jobs", type=click.IntRange(min=1), default=2, show_default=True,
              help="Packages processed (and files verified) in parallel.")
@click.option("--no-verify", is_flag=True, help="Skip decoding every file with soundfile.")
def debian(out: Path, keep_debs: bool, packages: str | None, jobs: int, no_verify: bool) -> None:
    """Download the pinned Debian packages and keep only the manifest audio.

    Resumable: rerun the same command to continue. Exits 1 if any listed file is missing.
    """
    names = [n.strip() for n in packages.split(",") if n.strip()] if packages else None
    try:
        report = debian_corpus.build(out, names, jobs=jobs, keep_debs=keep_debs, verify=not no_verify)
    except debian_corpus.CorpusError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(debian_corpus.format_summary(report))
    if report["missing"]:
        raise SystemExit(1)


@corpus.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=github_corpus.DEFAULT_OUT,
              show_default=True, help="Directory receiving OUT/<path>, the credits and report.json.")
@click.option("--source", type=click.Path(file_okay=False, path_type=Path),
              default=github_corpus.DEFAULT_SOURCE, show_default=True,
              help="The folder with manifest.csv (shared/corpus/github).")
@click.option("--jobs", type=click.IntRange(min=1), default=2, show_default=True,
              help="Files verified in parallel.")
@click.option("--no-verify", is_flag=True, help="Skip decoding every copy with soundfile.")
def github(out: Path, source: Path, jobs: int, no_verify: bool) -> None:
    """Copy the recordings of SOURCE/manifest.csv (public git repositories) into the corpus.

    Resumable. Exits 1 if a listed file is missing or does not decode.
    """
    try:
        report = github_corpus.build(out, source, jobs=jobs, verify=not no_verify)
    except debian_corpus.CorpusError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(github_corpus.format_summary(report))
    if report["missing"] or report["undecodable"]:
        raise SystemExit(1)
