#!/usr/bin/env bash
# Issue 7 on one H100 (a remote runner): GPU-recovered pruned UNets judged on 2,000 images each, and the no-recovery
# rows of every method and ratio on 256 images, as parallel processes (a recovery step of this small UNet is
# launch-bound, so several processes share the GPU). What comes back is packed into few files (the remote runner
# brings back at most 8, each <= 16 MiB: larger ones are split into .partNN, `cat` joins them).
#
#   bash scripts/prune_h100.sh PLAN CODE WHEELS OUT
#
# PLAN: one process per line, `<tag> <benchmarks.prune_recovery arguments>` (scripts/prune_h100-*.plan).
# CODE: a folder holding this branch's workbench/ and benchmarks/ (first on PYTHONPATH); WHEELS: diffusers 0.42.1,
# torch-pruning 1.6.1, importlib_metadata, zipp. Each process stops at LIMIT_S (default 540 s); the rows, images
# and artifact tars it finished are written by then.
set -u
plan=$(realpath "$1") code=$(realpath "$2") wheels=$(realpath "$3") out=$(realpath "$4")
cd "$code" || exit 1  # `python -m` puts the working directory first on sys.path: run from the code folder
limit=${LIMIT_S:-540}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$wheels"/*.whl || exit 1
export PYTHONPATH=/tmp/site:$code PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_THREADS:-3} TOKENIZERS_PARALLELISM=false
mkdir -p "$out/meta"
nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv,noheader
tags=() pids=()
while read -r tag args; do
  { [ -z "$tag" ] || [ "${tag:0:1}" = "#" ]; } && continue
  mkdir -p "$out/img-$tag"
  # shellcheck disable=SC2086
  timeout "$limit" python3 -m benchmarks.prune_recovery $args --out "$out/img-$tag" --tag="-$tag" \
    > "$out/meta/log-$tag.txt" 2>&1 &
  pids+=($!) tags+=("$tag")
  sleep 1
done < "$plan"
(while sleep 20; do nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader; done) \
  > "$out/meta/gpu-util.txt" 2>&1 &
mon=$!
for i in "${!pids[@]}"; do wait "${pids[$i]}"; echo "${tags[$i]} exit $?"; tail -n 4 "$out/meta/log-${tags[$i]}.txt"; done
kill "$mon"
# the teacher samples of CPU budgets (<= 1,000 steps): the CPU sweep's trials then load them
python3 - "$out" <<'PY'
import json, sys, tarfile
from pathlib import Path
out = Path(sys.argv[1])
for meta in Path("results/compressed").glob("teacher-samples-*/meta.json"):
    if json.loads(meta.read_text())["inputs"]["n"] <= 1024:
        with tarfile.open(out / "meta" / f"{meta.parent.name}.tar", "w") as tar:
            tar.add(meta.parent, arcname=meta.parent.name)
PY
# everything comes back as few files (the remote runner returns at most 8): one tar of the images of every process,
# one of the artifact tars, one of the logs and JSONs; each split into 15 MiB parts where larger
mkdir -p "$out/images" "$out/artifacts"
for tag in "${tags[@]}"; do
  d="$out/img-$tag"
  mv "$d"/*.tar "$out/artifacts/" 2>/dev/null
  mv "$d"/recovery-*.json "$out/meta/" 2>/dev/null
  mv "$d"/*.npy.xz "$out/images/" 2>/dev/null
  rm -rf "$d"
done
for part in images artifacts meta; do
  [ -n "$(ls -A "$out/$part")" ] && tar -cf "$out/$part.tar" -C "$out" "$part"
  rm -rf "${out:?}/$part"
done
for f in "$out"/*.tar; do
  [ "$(stat -c %s "$f")" -gt 15728640 ] && split -b 15M -d "$f" "$f.part" && rm "$f"
done
ls -la "$out"
