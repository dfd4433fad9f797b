"""``python -m training experiment RECIPE``: run the arms, then the tables (and figures)."""
from __future__ import annotations

import sys

import click


def _log(msg: str) -> None:
    click.echo(msg, err=True)


@click.command("experiment")
@click.argument("recipe", type=click.Path(exists=True, dir_okay=False))
@click.option("--only", metavar="ARM,...", default=None, help="Run only these arms (in recipe order).")
@click.option("--report-only", is_flag=True, help="Run no arm: regenerate the Markdown and figures.")
@click.option("--check", is_flag=True,
              help="Run nothing; exit 1 if the Markdown differs from what the JSONs give.")
@click.option("--no-figures", is_flag=True, help="Do not (re)draw the PNG figures.")
def experiment(recipe, only, report_only, check, no_figures):
    """Train and evaluate every arm of RECIPE whose results are missing, then write its tables.

    Resumable: rerun the same command after an interruption; finished arms are skipped.
    """
    from training.experiments import tables
    from training.experiments.recipe import RecipeError, load_experiment
    from training.experiments.runner import ExperimentError, run_experiment

    try:
        exp = load_experiment(recipe)
        names = [n.strip() for n in only.split(",") if n.strip()] if only else None
        for n in names or []:
            exp.arm(n)
    except RecipeError as exc:
        raise click.ClickException(str(exc)) from exc
    if check:
        problem = tables.check(exp)
        if problem:
            click.echo(f"{exp.markdown} is stale:\n{problem}", err=True)
            sys.exit(1)
        click.echo(f"{exp.markdown} matches {len(tables.load_arm_results(exp))} arm results")
        return
    if not report_only:
        try:
            run_experiment(exp, names, log=_log)
        except ExperimentError as exc:
            raise click.ClickException(str(exc)) from exc
    # Figures first: the card's block links the figures that exist.
    if not no_figures:
        from training.experiments.figures import FiguresUnavailable, draw_all

        try:
            for path in draw_all(exp, log=_log):
                click.echo(f"wrote {path}")
        except FiguresUnavailable as exc:
            _log(f"warning: no figures: {exc}")
    for path in tables.write(exp):
        click.echo(f"wrote {path}")
