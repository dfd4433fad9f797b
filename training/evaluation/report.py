"""Markdown tables from results JSONs, in the layout of the paper's Table 2.

Recovery = (model - baseline) / (topline - baseline), on the same dataset: the share of the
gap between the log-mel baseline and a (supervised) topline that a representation closes. The
baseline is the ``logmel`` result on that dataset among the inputs (or ``--baseline-json``);
the topline comes only from ``--topline-json``. Without either, recovery shows "–".
The model card's table is generated with this module; do not edit such tables by hand.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from audioembed.errors import AudioembedError
from training.evaluation.features import LOGMEL
from training.evaluation.run import LAYERS, RESULTS_SCHEMA

DASH = "–"
HEADER = ["Representation", "Dataset", "Dim", "QbE mAP", "QbE recovery",
          "Classifier mAP, 1 layer", "Classifier mAP, 2 layers", "Classifier recovery (1 / 2 layers)",
          "Accuracy (1 / 2 layers)", "Light supervision mAP (1 / 2 layers)"]


class ReportError(AudioembedError, ValueError):
    """A results file that cannot be tabulated."""


def load_results(path: str | os.PathLike) -> dict:
    try:
        results = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: cannot read results ({exc})") from exc
    if results.get("schema") != RESULTS_SCHEMA:
        raise ReportError(f"{path}: not an audioembed evaluation result (schema "
                          f"{results.get('schema')!r}, expected {RESULTS_SCHEMA!r})")
    return results


def recovery(model: float | None, baseline: float | None, topline: float | None) -> float | None:
    """``(model - baseline) / (topline - baseline)``, or None when it is undefined."""
    if model is None or baseline is None or topline is None or topline == baseline:
        return None
    return (model - baseline) / (topline - baseline)


def _get(results: dict | None, *keys):
    for k in keys:
        if results is None:
            return None
        results = results.get(k) if isinstance(results, dict) else None
    return results


def _num(x: float | None, sd: float | None = None) -> str:
    if x is None:
        return DASH
    return f"{x:.3f}" if sd is None else f"{x:.3f} ± {sd:.3f}"


def _pct(x: float | None) -> str:
    return DASH if x is None else f"{100 * x:.0f}%"


def _name(results: dict, role: str | None) -> str:
    model = results["model"]
    if model["name"] == LOGMEL:
        label = "log-mel (baseline)"
    else:
        label = Path(model["name"]).name if os.sep in model["name"] else model["name"]
        if model.get("sha256"):
            label += f" `{model['sha256'][:8]}`"
    return f"{label} (topline)" if role == "topline" else label


def _row(r: dict, base: dict | None, top: dict | None, role: str | None) -> list[str]:
    qbe = _get(r, "qbe", "map")
    clf = [_get(r, "classifier", str(n), "map") for n in LAYERS]
    clf_sd = [_get(r, "classifier", str(n), "map_sd") for n in LAYERS]
    acc = [_get(r, "classifier", str(n), "accuracy") for n in LAYERS]
    light = [(_get(r, "light_supervision", str(n), "map"), _get(r, "light_supervision", str(n), "map_sd"))
             for n in LAYERS]
    rec_clf = [recovery(c, _get(base, "classifier", str(n), "map"), _get(top, "classifier", str(n), "map"))
               for c, n in zip(clf, LAYERS)]
    return [
        _name(r, role), r["dataset"]["name"], str(r["embedding_dim"]),
        f"{qbe:.3f} (chance {r['qbe']['chance']:.3f})",
        _pct(recovery(qbe, _get(base, "qbe", "map"), _get(top, "qbe", "map"))),
        _num(clf[0], clf_sd[0]), _num(clf[1], clf_sd[1]),
        " / ".join(_pct(x) for x in rec_clf) if any(x is not None for x in rec_clf) else DASH,
        " / ".join(_num(a) for a in acc) if any(a is not None for a in acc) else DASH,
        " / ".join(_num(m, sd) for m, sd in light) if any(m is not None for m, _ in light) else DASH,
    ]


def markdown_table(results: list[dict], baselines: list[dict] = (), toplines: list[dict] = ()) -> str:
    """One row per result (toplines appended, marked), grouped by dataset in input order."""
    rows = [(r, None) for r in results] + [(t, "topline") for t in toplines]
    if not rows:
        raise ReportError("no results to tabulate")
    by_dataset = {}
    for r in list(baselines) + results:
        if r["model"]["name"] == LOGMEL:
            by_dataset.setdefault(r["dataset"]["name"], r)
    for b in baselines:  # an explicit baseline wins over one found among the inputs
        by_dataset[b["dataset"]["name"]] = b
    tops = {t["dataset"]["name"]: t for t in toplines}
    datasets = list(dict.fromkeys(r["dataset"]["name"] for r, _ in rows))
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join(["---"] * len(HEADER)) + "|"]
    for d in datasets:
        for r, role in rows:
            if r["dataset"]["name"] == d:
                cells = _row(r, by_dataset.get(d), tops.get(d), role)
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def notes(results: list[dict]) -> str:
    """How the numbers were made, once per distinct protocol, under the table."""
    seen = []
    for r in results:
        ds, settings = r["dataset"], r.get("settings", {})
        line = (f"- {ds['name']}: {ds['n_segments']} segments, {ds['n_classes']} classes; QbE over "
                f"{r['qbe']['draws']} draws of up to {r['qbe']['max_per_class']} present/absent "
                "segments per class")
        if "classifier" in r:
            line += f"; classifiers: {r['classifier']['split']}, {r['classifier']['stopping']}"
        if "light_supervision" in r:
            line += (f"; light supervision: {settings.get('light_per_class', 20)} segments per class, "
                     f"{settings.get('light_trials', 3)} trials, {r['light_supervision']['stopping']}")
        if line not in seen:
            seen.append(line)
    return "\n".join(seen) + "\n"


def render(results: list[dict], baselines: list[dict] = (), toplines: list[dict] = ()) -> str:
    """The full Markdown: table, protocol notes, and a do-not-edit note."""
    return (markdown_table(results, baselines, toplines) + "\n" + notes(list(results) + list(toplines))
            + "\nGenerated by `python -m training evaluate-report`; regenerate, do not edit by hand. "
              "mAP ± sd is over folds (classifiers) or trials (light supervision).\n")
