#!/usr/bin/env bash
# Regenerates every number in MODEL_CARD.md: the paper's protocols (python -m training evaluate)
# for the log-mel baseline and MODEL on debian-sfx and fsdd, then the card's generated blocks.
#   bash training/recipes/debian/evaluate_release.sh MODEL [RUN_DIR]
# MODEL: anything audioembed.load_model accepts. RUN_DIR (optional): the training run whose
# train_log.jsonl is summarised into train_summary.json (otherwise the committed summary is used).
set -euo pipefail
cd "$(dirname "$0")/../../.."
model=${1:?usage: evaluate_release.sh MODEL [RUN_DIR]}
run=${2:-}
here=training/recipes/debian
out=$here/results
mkdir -p "$out"
for ds in debian-sfx fsdd; do
  python -m training evaluate --model logmel --dataset "$ds" --out "$out/${ds}_logmel.json"
  python -m training evaluate --model "$model" --dataset "$ds" --out "$out/${ds}_triplet-resnet50-joint.json"
done
args=(--train-summary "$here/train_summary.json")
[ -n "$run" ] && args+=(--run-log "$run/train_log.jsonl")
python -m training model-card "${args[@]}" \
  --results "$out/debian-sfx_logmel.json" --results "$out/debian-sfx_triplet-resnet50-joint.json" \
  --results "$out/fsdd_logmel.json" --results "$out/fsdd_triplet-resnet50-joint.json"
