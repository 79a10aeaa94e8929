#!/usr/bin/env bash
# Set up dyaug on a fresh machine: a virtual environment in .venv with torch and dyaug (editable) installed.
# Idempotent and quick when nothing changed. Torch is chosen so that no GPU machine is left on a CPU build
# and no CPU machine downloads gigabytes of CUDA libraries:
#   - DYAUG_TORCH (e.g. "torch==2.5.1" or a wheel path) wins when set;
#   - with an NVIDIA GPU (nvidia-smi works): the default PyPI build of torch, which ships CUDA;
#   - otherwise torch==2.13.0, the CPU build where a local wheel or DYAUG_TORCH_INDEX (a CPU wheel index)
#     provides it.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip_install() {  # quiet, minus the notes some pip configurations print for every missing local index entry
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "$@" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  if [ -n "${DYAUG_TORCH:-}" ]; then
    pip_install "$DYAUG_TORCH"
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    pip_install "torch>=2.4"
  elif [ -n "${DYAUG_TORCH_INDEX:-}" ]; then
    pip_install "torch==2.13.0" --index-url "$DYAUG_TORCH_INDEX"
  else
    pip_install "torch==2.13.0"
  fi
fi

stamp=.venv/.dyaug-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  pip_install -e ".[dev,bench,forge]"
  touch "$stamp"
fi
