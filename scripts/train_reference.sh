#!/usr/bin/env bash
# Retrain the bundled reference model from scratch (seeded), then assemble the shipped folders.
# Budgets are the ones the shipped model was trained with on one H100 (26.5 GPU-minutes of training).
# Needs the Fashion-MNIST train split: Debian package dataset-fashion-mnist, or FMNIST_DIR=<folder of IDX files>.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORK=${WORK:-results/reference-training}
DEST=${DEST:-results/reference-model}
FM=()
[ -n "${FMNIST_DIR:-}" ] && FM=(--fmnist-dir "$FMNIST_DIR")
train() { "$PY" -m workbench.reference.train --work "$WORK" "${FM[@]}" "$@"; }
train --stage vae --minutes 2.2
train --stage clip --minutes 3.0
train --stage clip --freeze-text --minutes 5.8 --total-minutes 8.8
train --stage unet --minutes 15.5
train --stage export --minutes 0 --out "$WORK/export"
"$PY" -m workbench.reference.assemble "$WORK/export" "$DEST"
"$PY" -m scripts.evaluate_reference --images 2000 --out "$DEST/eval.json"
echo "assembled in $DEST; copy sd/ and clip/ over workbench/assets/reference/ to ship it"
