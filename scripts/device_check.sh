#!/usr/bin/env bash
# Everything that needs a GPU, in one command: versions, the CUDA-parametrised tests, then the measurements of
# benchmarks/device_check.py (JSON and a markdown table under --out; default $OUT, else runs/device_check/).
#   bash scripts/device_check.sh [--quick] [--device cuda|cpu] [--out DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
py=.venv/bin/python
out="${OUT:-runs/device_check}"
args=()
quick=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --quick) quick=1; args+=("$1"); shift ;;
    *) args+=("$1"); shift ;;
  esac
done
mkdir -p "$out"
{
  echo "# device check $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "nvidia-smi: no NVIDIA GPU"
  "$py" -c "import torch, platform; print('python', platform.python_version(), 'torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"
} | tee "$out/versions.txt"
if [ "$quick" -eq 0 ]; then
  # the CUDA cases of the test suite (skipped without a GPU), with a time limit
  timeout 240 "$py" -m pytest -q -m cuda -p no:cacheprovider 2>&1 | tail -n 30 | tee "$out/cuda_tests.txt"
fi
cd benchmarks && exec "../$py" device_check.py "${args[@]}" --out "$(cd .. && realpath "$out")"
