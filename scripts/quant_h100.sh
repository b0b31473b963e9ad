#!/usr/bin/env bash
# Issue 8's quality rows on the H100 machine's 16 CPU cores (the trials run ONNX Runtime on the CPU, as on a laptop):
# PTQ and QAT at every kept fraction by each importance method, `benchmarks.quant_quality trials --fid-later`
# (FID needs the Inception weights, which do not travel: the trials keep their images and this 2-core CPU computes
# FID/KID afterwards with `quant_quality fid`).
#
#   bash scripts/quant_h100.sh WHEELS OUT        # WHEELS: diffusers 0.42.1, nncf 3.4.0, pydot, openvino-telemetry
#
# Phase 1 (one process, 16 threads): the ONNX Runtime fp32 baseline, calibration, both importance rankings, PTQ at
# 0 and 10 %. Phase 2 (six processes, 3 threads each) fans the other settings out over the cached artifacts. Rows
# are written as each trial ends and skipped when present, so a second call on the same machine resumes. Each
# process stops at DEADLINE_S (default 560) after the start; back come the JSONs, logs and the trials' images.
set -u
wheels=$(realpath "$1") out=$(realpath "$2")
images=${IMAGES:-32} qat=${QAT_STEPS:-100} deadline=$(( $(date +%s) + ${DEADLINE_S:-560} ))
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$wheels"/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$out/logs" results
left() { echo $(( deadline - $(date +%s) )); }
q() { timeout "$(left)" python3 -m benchmarks.quant_quality trials --images "$images" --qat-steps "$qat" --fid-later "$@"; }
OMP_NUM_THREADS=16 q --modes ptq --keeps 0,0.1 --out results/qq-1.json >> "$out/logs/qq-1.txt" 2>&1
phase1=$?
echo "phase 1 exit $phase1, $(left) s left"; tail -n 6 "$out/logs/qq-1.txt"
if [ "$phase1" = 0 ]; then
  i=2
  for args in "--modes ptq --keeps 0.05" "--modes ptq --keeps 0.2,0.4" "--modes qat --keeps 0,0.05" \
              "--modes qat --keeps 0.1" "--modes qat --keeps 0.2" "--modes qat --keeps 0.4"; do
    [ -f "results/qq-$i.json" ] || cp results/qq-1.json "results/qq-$i.json"
    # shellcheck disable=SC2086
    OMP_NUM_THREADS=3 q $args --out "results/qq-$i.json" >> "$out/logs/qq-$i.txt" 2>&1 &
    i=$((i + 1))
    sleep 2
  done
  wait
  for f in "$out"/logs/qq-*.txt; do echo "== $f"; grep -E "keep|Error|error" "$f" | tail -n 5; done
fi
tar -cf "$out/rows.tar" -C results $(cd results && ls qq-*.json)
tar -cf "$out/images.tar" --exclude='grid.png' -C results/artifacts quant-quality
tar -cf "$out/logs.tar" -C "$out" logs && rm -r "$out/logs"
ls -la "$out"
