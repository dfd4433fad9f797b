#!/usr/bin/env bash
# Regenerates every number in MODEL_CARD.md: the paper's protocols (python -m training evaluate)
# for the log-mel baseline and MODEL on debian-sfx and fsdd, then the card's generated blocks.
#   bash training/recipes/debian/evaluate_release.sh MODEL [RUN_DIR [STEP]]
# MODEL: anything audioembed.load_model accepts. RUN_DIR (optional): the training run whose
# train_log.jsonl is summarised into train_summary.json (otherwise the committed summary is used),
# up to STEP (default: the model's provenance step, so a run trained on after the export still
# gives the released model's summary).
set -euo pipefail
cd "$(dirname "$0")/../../.."
model=${1:?usage: evaluate_release.sh MODEL [RUN_DIR [STEP]]}
run=${2:-}
step=${3:-$(python -c 'import sys, audioembed; print(audioembed.load_model(sys.argv[1]).info["config"]["provenance"]["steps"])' "$model")}
here=training/recipes/debian
out=$here/results
mkdir -p "$out"
for ds in debian-sfx fsdd; do
  python -m training evaluate --model logmel --dataset "$ds" --out "$out/${ds}_logmel.json"
  python -m training evaluate --model "$model" --dataset "$ds" --out "$out/${ds}_triplet-resnet50-joint.json"
done
args=(--train-summary "$here/train_summary.json")
[ -n "$run" ] && args+=(--run-log "$run/train_log.jsonl" --up-to-step "$step")
python -m training model-card "${args[@]}" --figure "$out/figures/release_dev_qbe.png" \
  --results "$out/debian-sfx_logmel.json" --results "$out/debian-sfx_triplet-resnet50-joint.json" \
  --results "$out/fsdd_logmel.json" --results "$out/fsdd_triplet-resnet50-joint.json"
