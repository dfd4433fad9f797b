"""PNG figures of an experiment, drawn from its committed JSONs (matplotlib: the ``train`` extra).

- ``dev_qbe.png``: dev QbE mAP (the training-time tracking subset) against triplets seen, per arm;
- ``table2_bars.png``: Table 2's QbE and 1-layer classifier mAP per row, per dataset;
- ``map_2d.png``: a 2-D t-SNE map of a dataset's clips (segment means), coloured by class, for
  the recipe's ``map`` models side by side. Its coordinates are computed once from the evaluation cache and
  stored in ``map_2d.json`` beside the arm JSONs, so the figure redraws from committed data.
"""
from __future__ import annotations

import json
from pathlib import Path

from audioembed.outputs import atomic_write
from training.plots import DPI, FiguresUnavailable, plot_dev_curves, pyplot  # noqa: F401 (FiguresUnavailable: experiments.cli catches it here)
from training.experiments.recipe import Experiment
from training.experiments.tables import _metric, load_arm_results

def dev_curves(exp: Experiment, results: dict, out: Path) -> Path | None:
    arms = [(a.label, results[a.name]["train"]["dev_curve"]) for a in exp.arms
            if a.name in results and results[a.name].get("train", {}).get("dev_curve")]
    return plot_dev_curves(arms, f"{exp.title}: dev QbE during training", out) if arms else None


def table2_bars(exp: Experiment, results: dict, out: Path) -> Path | None:
    plt = pyplot()
    arms = [a for a in exp.arms if "2" in a.tables and a.name in results]
    if not arms:
        return None
    fig, axes = plt.subplots(1, len(exp.datasets), figsize=(5 * len(exp.datasets), 0.35 * len(arms) + 1.6),
                             squeeze=False)
    for ax, dataset in zip(axes[0], exp.datasets):
        ys = range(len(arms))
        for k, (metric, name) in enumerate((("qbe", "QbE"), ("clf1", "classifier, 1 layer"))):
            vals = [_metric(results[a.name], dataset, metric) or 0.0 for a in arms]
            ax.barh([y + 0.4 * k for y in ys], vals, height=0.4, label=name)
        ax.set_yticks([y + 0.2 for y in ys])
        ax.set_yticklabels([a.label for a in arms], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("mAP")
        ax.set_title(dataset, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    atomic_write(out, lambda f: fig.savefig(f, format="png", dpi=DPI))
    plt.close(fig)
    return out


def map_coordinates(exp: Experiment, path: Path, log=print) -> dict:
    """t-SNE coordinates of the segment means of the recipe's ``map`` models (cached in ``path``)."""
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    from sklearn.manifold import TSNE

    from training.evaluation.datasets import load_dataset
    from training.evaluation.features import extract
    from training.evaluation.metrics import segment_means

    ds = load_dataset(exp.map["dataset"])
    out = {"dataset": exp.map["dataset"], "method": "t-SNE (sklearn, perplexity 30, PCA init, seed 0) of "
           "L2-normalised segment means", "models": {}}
    for model in exp.map["models"]:
        we = extract(ds, model, cache_dir=exp.eval_cache, log=log)
        kept = ds.subset(we.kept)
        x = segment_means(we.emb, we.seg, len(kept))
        x = x / (((x ** 2).sum(axis=1, keepdims=True)) ** 0.5 + 1e-12)
        xy = TSNE(n_components=2, perplexity=30, init="pca", random_state=0).fit_transform(x)
        out["models"][model] = {"x": [round(float(v), 3) for v in xy[:, 0]],
                                "y": [round(float(v), 3) for v in xy[:, 1]],
                                "labels": [labs[0] for labs in kept.labels]}
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(out) + "\n"
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    return out


def map_2d(coords: dict, out: Path) -> Path:
    plt = pyplot()
    models = list(coords["models"])
    classes = sorted({lab for m in models for lab in coords["models"][m]["labels"]})
    cmap = plt.get_cmap("tab20", len(classes))
    markers = "os^D"
    fig, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 5.2), squeeze=False)
    for ax, model in zip(axes[0], models):
        m = coords["models"][model]
        for c, cls in enumerate(classes):
            idx = [i for i, lab in enumerate(m["labels"]) if lab == cls]
            ax.scatter([m["x"][i] for i in idx], [m["y"][i] for i in idx], s=6, color=cmap(c),
                       marker=markers[c % len(markers)], label=cls, linewidths=0)
        ax.set_title(f"{model} ({coords['dataset']}, {len(m['labels'])} clips)", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][-1].legend(fontsize=5, ncol=2, loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=1.5)
    fig.tight_layout()
    atomic_write(out, lambda f: fig.savefig(f, format="png", dpi=DPI))
    plt.close(fig)
    return out


def draw_all(exp: Experiment, log=print) -> list[Path]:
    """Every figure whose data exists; returns the files written."""
    pyplot()
    exp.figures.mkdir(parents=True, exist_ok=True)
    results = load_arm_results(exp)
    written = [dev_curves(exp, results, exp.figures / "dev_qbe.png"),
               table2_bars(exp, results, exp.figures / "table2_bars.png")]
    if exp.map:
        coords = map_coordinates(exp, exp.results / "map_2d.json", log)
        written.append(map_2d(coords, exp.figures / "map_2d.png"))
    return [p for p in written if p is not None]
