#!/usr/bin/env bash
# experiments/compress.yaml's artifacts built on the H100 machine's 16 CPU cores (scripts/compress_artifacts.py, one
# process per prune ratio and kept fraction), brought back as tars of results/compressed/ folders, the expensive
# ones first, within the remote runner's 60 MB.   bash scripts/compress_h100.sh WHEELS OUT
set -u
wheels=$(realpath "$1") out=$(realpath "$2")
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$wheels"/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=2
mkdir -p "$out"
deadline=$(( $(date +%s) + ${LIMIT_S:-520} ))
left() { echo $(( deadline - $(date +%s) )); }
# stage 1, a process per prune ratio at 5 threads: teacher samples, pruned UNet, calibration, importance, PTQ 10 %
for prune in 0.0 0.1 0.2; do
  OMP_NUM_THREADS=5 timeout "$(left)" python3 scripts/compress_artifacts.py --prune $prune --modes ptq --keeps 0.1 \
    > "$out/log-$prune-s1.txt" 2>&1 &
  sleep 2
done
wait
# stage 2, a process per (prune ratio, kept fraction) at 2 threads: QAT, then PTQ
for prune in 0.0 0.1 0.2; do
  for keep in 0 0.1 0.2; do
    timeout "$(left)" python3 scripts/compress_artifacts.py --prune $prune --modes qat,ptq --keeps $keep \
      > "$out/log-$prune-$keep.txt" 2>&1 &
    sleep 2
  done
done
wait
cat "$out"/log-*.txt | grep -E "^prune|Error" ; tar -cf "$out/logs.tar" -C "$out" $(cd "$out" && ls log-*.txt) && rm "$out"/log-*.txt
cd results/compressed || exit 1
du -sm ./* | sort -k2 | awk '{print $1, $2}'
pick=() total=0
for kind in teacher-samples pruned-unet calibration importance int8-unet; do
  for d in $(ls -d ${kind}-* 2>/dev/null); do
    size=$(du -sm "$d" | cut -f1)
    [ $((total + size)) -gt 58 ] && { echo "left out: $d ($size MB)"; continue; }
    pick+=("$d") total=$((total + size))
  done
done
tar -cf "$out/compressed.tar" "${pick[@]}"
cd "$out" && [ "$(stat -c %s compressed.tar)" -gt 15728640 ] && split -b 15M -d compressed.tar compressed.tar.part && rm compressed.tar
ls -la "$out"
