"""``python -m training evaluate`` and ``python -m training evaluate-report``."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from audioembed.outputs import atomic_write
from training.evaluation.settings import EvalSettings

DATASET_HELP = ("fsdd, fsdd-speaker, debian-sfx, debian-sfx-eval / debian-sfx-topline-train (the "
                "package-disjoint paper-tables parts), esc50 (with --data-root), an ESC-50 folder, an "
                "AudioSet segments CSV (audio named YTID_START.wav, YTID_START.flac or YTID.wav "
                "under --data-root), or a manifest CSV path,labels[,fold][,group] with "
                "';'-separated multi-labels")


def _log(msg: str) -> None:
    click.echo(msg, err=True)


def _write(path: str, text: str) -> None:
    atomic_write(Path(path), lambda f: f.write(text.encode("utf-8")))
    _log(f"wrote {path}")


@click.command("evaluate")
@click.option("--model", required=True,
              help="A registry name, model folder, hf-hub:org/repo[@rev], or 'logmel' (the paper's "
                   "baseline: flattened 64x96 log-mel windows).")
@click.option("--dataset", required=True, help=DATASET_HELP)
@click.option("--data-root", type=click.Path(file_okay=False), default=None,
              help="Where the dataset's audio is (overrides the default location).")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the results JSON here.")
@click.option("--markdown", type=click.Path(dir_okay=False), default=None,
              help="Write a Markdown table (paper Table 2 columns) here.")
@click.option("--baseline-json", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Results of --model logmel on this dataset, for the recovery columns.")
@click.option("--topline-json", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Results of a topline (e.g. supervised) model on this dataset, for recovery.")
@click.option("--device", default=None, help="torch device for the model (default: CPU).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Windows per forward pass.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default="~/.cache/audioembed/eval",
              show_default=True, help="Where window embeddings are cached.")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the embedding cache.")
@click.option("--no-classifiers", is_flag=True, help="Only query-by-example retrieval (fast).")
@click.option("--epochs", type=click.IntRange(min=1), default=EvalSettings.epochs, show_default=True,
              help="Most classifier epochs (early stopping on an inner validation split).")
@click.option("--patience", type=click.IntRange(min=1), default=EvalSettings.patience, show_default=True,
              help="Epochs without a lower validation loss before a classifier stops.")
@click.option("--threads", type=click.IntRange(min=0), default=1, show_default=True,
              help="CPU threads for torch and BLAS; 0 = their defaults (all cores).")
@click.option("--seed", type=int, default=EvalSettings.seed, show_default=True)
@click.option("--backend", type=click.Choice(("torch", "onnx", "onnx-int8")), default="torch",
              show_default=True, help="Network runtime, as audioembed extract --backend (onnx-int8: "
                                      "the statically quantized network).")
@click.option("--layer", type=click.Choice(("embedding", "pooled")), default="embedding",
              show_default=True, help="Window readout: the 128-d embedding, or the 2048-d pooled "
                                      "features before it (probes).")
def evaluate(model, dataset, data_root, out, markdown, baseline_json, topline_json, device,
             batch_size, cache_dir, no_cache, no_classifiers, epochs, patience, threads, seed,
             backend, layer):
    """Evaluate MODEL on DATASET: QbE retrieval mAP, shallow-classifier mAP, light supervision.

    Progress goes to stderr, the summary to stdout.
    """
    # One thread by default: the frontend's small FFTs, the QbE products and the MLP steps are
    # too small to scale, and on a shared 2-core machine (load 9) two OpenMP threads made them
    # 2.5x (MLP step) to 8x (log-mel features) slower than one.
    import torch
    from threadpoolctl import threadpool_limits

    if threads:
        torch.set_num_threads(threads)
    with threadpool_limits(limits=threads or None):
        _evaluate(model, dataset, data_root, out, markdown, baseline_json, topline_json, device,
                  batch_size, cache_dir, no_cache, no_classifiers, epochs, patience, seed, backend, layer)


def _evaluate(model, dataset, data_root, out, markdown, baseline_json, topline_json, device,
              batch_size, cache_dir, no_cache, no_classifiers, epochs, patience, seed, backend, layer):
    from training.evaluation.report import ReportError, load_results, render
    from training.evaluation.run import EvaluationError, evaluate_model, summary_lines

    try:
        baselines = [load_results(baseline_json)] if baseline_json else []
        toplines = [load_results(topline_json)] if topline_json else []
    except ReportError as exc:
        raise click.ClickException(str(exc)) from exc
    settings = EvalSettings(seed=seed, classifiers=not no_classifiers, epochs=epochs, patience=patience)
    try:
        results = evaluate_model(model, dataset, settings, data_root=data_root, device=device,
                                 batch_size=batch_size, cache_dir=None if no_cache else cache_dir, log=_log,
                                 backend=backend, layer=layer)
    except EvaluationError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo("\n".join(summary_lines(results)))
    if out:
        _write(out, json.dumps(results, indent=2) + "\n")
    if markdown:
        _write(markdown, render([results], baselines, toplines))


@click.command("evaluate-report")
@click.argument("results_json", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write the Markdown here (default: stdout).")
@click.option("--baseline-json", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Baseline results (default: the logmel results among RESULTS_JSON), per dataset.")
@click.option("--topline-json", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Topline results, per dataset; shown as rows and used for recovery.")
def evaluate_report(results_json, output, baseline_json, topline_json):
    """Markdown table (paper Table 2 columns) from one or more `evaluate --out` results."""
    from training.evaluation.report import ReportError, load_results, render

    try:
        text = render([load_results(p) for p in results_json],
                      [load_results(p) for p in baseline_json], [load_results(p) for p in topline_json])
    except ReportError as exc:
        raise click.ClickException(str(exc)) from exc
    if output:
        _write(output, text)
    else:
        sys.stdout.write(text)
