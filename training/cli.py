"""``python -m training ...``: a thin click layer; each subcommand lives in its own module."""
from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Train, evaluate and export audioembed models."""


def _register() -> None:
    # Each subcommand lives with the code it drives; this module only collects them.
    from training.corpus.cli import corpus
    main.add_command(corpus)
    from training.commands import adapt, cache, cache_stats, export, train
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
