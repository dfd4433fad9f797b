"""What ``python -m training adapt`` buys on the development sets: QbE mAP before and after.

    python training/recipes/adapt/measure.py DATASET PROTOCOL [--triplets N]   # one measurement
    python training/recipes/adapt/measure.py --table                          # the results table

DATASET is ``fsdd`` or ``debian-sfx``. PROTOCOL:

- ``transductive``: adapt on the dataset's own audio (labels unused), evaluate on all of it;
- ``split``: adapt on half of the groups (FSDD: 3 of the 6 speakers; debian-sfx: the
  ``topline-train`` packages of the paper-tables split), evaluate on the other half, which the
  adaptation never heard.

Each measurement also evaluates the *other* development set before and after, for what
adapting to one domain costs elsewhere. QbE only (``evaluate --no-classifiers``), 2 threads. The
adapted model, its cache and the evaluation caches go under ``~/.cache/audioembed/adapt-measure``;
one JSON per measurement lands in ``results/`` beside this script (a rerun of a finished one
only re-reads it; an interrupted adaptation resumes).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(REPO))  # run as a script: the training package lives at the repository root

from audioembed.outputs import atomic_write, write_csv  # noqa: E402
from training.adapt import DEFAULT_TRIPLETS  # noqa: E402  (adapt's own default budget)

RESULTS = HERE / "results"
WORK = Path("~/.cache/audioembed/adapt-measure").expanduser()
DATASETS = ("fsdd", "debian-sfx")
OTHER = {"fsdd": "debian-sfx", "debian-sfx": "fsdd"}
BASE = "triplet-resnet50-joint"


def _parts(dataset: str) -> tuple[list[str], str]:
    """(paths to adapt on, ``--dataset`` spec to evaluate on) of the split protocol."""
    from training.evaluation.datasets import load_dataset

    if dataset == "debian-sfx":
        return list(load_dataset("debian-sfx-topline-train").paths), "debian-sfx-eval"
    ds = load_dataset("fsdd")
    speakers = sorted(set(ds.groups))
    heard = set(speakers[: len(speakers) // 2])
    adapt_paths = [p for p, g in zip(ds.paths, ds.groups) if g in heard]
    manifest = WORK / "fsdd-split-eval.csv"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    rows = [["path", "labels", "group"]] + [[p, ";".join(labels), g]
                                            for p, labels, g in zip(ds.paths, ds.labels, ds.groups) if g not in heard]
    write_csv(manifest, rows)
    return adapt_paths, str(manifest)


def _adapt_source(dataset: str, protocol: str, name: str) -> tuple[str, str]:
    from training.evaluation.datasets import load_dataset

    if protocol == "transductive":
        paths, target = list(load_dataset(dataset).paths), dataset
    else:
        paths, target = _parts(dataset)
    manifest = WORK / f"{name}-audio.csv"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    write_csv(manifest, [["path"]] + [[p] for p in paths])
    return str(manifest), target


def _qbe(model: str, dataset: str, tag: str) -> float:
    out = WORK / "eval" / f"{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.exists():
        subprocess.run([sys.executable, "-m", "training", "evaluate", "--model", model,
                        "--dataset", dataset, "--no-classifiers", "--threads", "2",
                        "--cache-dir", str(WORK / "eval-cache"), "--out", str(out)], check=True, cwd=REPO)
    return round(json.loads(out.read_text())["qbe"]["map"], 4)


def measure(dataset: str, protocol: str, triplets: int) -> dict:
    from training.machine import machine_info

    name = f"{dataset}_{protocol}_{triplets}"
    record = RESULTS / f"{name}.json"
    if record.exists():
        return json.loads(record.read_text())
    audio, target = _adapt_source(dataset, protocol, name)
    model_dir = WORK / name
    command = [sys.executable, "-m", "training", "adapt", audio, "--out", str(model_dir),
               "--triplets", str(triplets)]
    t0 = time.time()
    subprocess.run(command, check=True, cwd=REPO)
    seconds = time.time() - t0
    evaluated = {target: "target", OTHER[dataset]: "other"}
    before = {ds: _qbe(BASE, ds, f"base_{Path(ds).stem}") for ds in evaluated}
    after = {ds: _qbe(str(model_dir), ds, f"{name}_{Path(ds).stem}") for ds in evaluated}
    log = [json.loads(line) for line in open(model_dir / "adapt" / "train_log.jsonl")]
    rates = [r["triplets_per_s"] for r in log if "triplets_per_s" in r]
    result = {
        "dataset": dataset, "protocol": protocol, "triplets": triplets, "base_model": BASE,
        "evaluated_on": {role: Path(ds).stem for ds, role in evaluated.items()},
        "qbe_before": {role: before[ds] for ds, role in evaluated.items()},
        "qbe_after": {role: after[ds] for ds, role in evaluated.items()},
        "adapt_wall_s": round(seconds, 1),
        "mean_triplets_per_s": round(sum(rates) / len(rates), 1) if rates else None,
        "command": f"python training/recipes/adapt/measure.py {dataset} {protocol} --triplets {triplets}",
        "machine": machine_info(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=1) + "\n"
    atomic_write(record, lambda f: f.write(text.encode("utf-8")))
    return result


def table() -> str:
    rows = ["| adapted on | protocol | triplets | QbE there, before → after | other set, before → after | adapt time | host |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    records = [json.loads(path.read_text()) for path in RESULTS.glob("*.json")]
    for r in sorted(records, key=lambda r: (r["dataset"], r["protocol"] != "transductive", r["triplets"])):
        b, a = r["qbe_before"], r["qbe_after"]
        m = r["machine"]
        rows.append(f"| {r['dataset']} | {r['protocol']} ({r['evaluated_on']['target']}) | "
                    f"{r['triplets']:,} | {b['target']:.3f} → {a['target']:.3f} | "
                    f"{r['evaluated_on']['other']}: {b['other']:.3f} → {a['other']:.3f} | "
                    f"{r['adapt_wall_s'] / 60:.0f} min | {m.get('cpu', '')}, {' '.join(m.get('cpu_flags', []))} |")
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dataset", nargs="?", choices=DATASETS)
    p.add_argument("protocol", nargs="?", choices=("transductive", "split"))
    p.add_argument("--triplets", type=int, default=DEFAULT_TRIPLETS)
    p.add_argument("--table", action="store_true", help="print the Markdown table of results/")
    args = p.parse_args()
    if args.table:
        print(table())
        return
    if not (args.dataset and args.protocol):
        p.error("give DATASET and PROTOCOL, or --table")
    print(json.dumps(measure(args.dataset, args.protocol, args.triplets), indent=1))


if __name__ == "__main__":
    main()
