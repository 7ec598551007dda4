#!/usr/bin/env bash
# Sourced by the issue scripts in this folder (from the repository root, as the device tool runs
# them): the device's setup, and step(), which runs one measurement under its own time limit and
# skips it when the call's budget (BUDGET seconds, default 540) could not hold it. Every step's
# output lands in $OUT (the device tool brings back at most 8 files). DEVICE=cpu rehearses here.
set -uo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp/gpu}; BUDGET=${BUDGET:-540}; DEVICE=${DEVICE:-cuda}; PY=${PY:-python3}
mkdir -p "$OUT"
if [[ $DEVICE == cuda ]]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
fi
$PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
$PY benchmarks/gpu/random_checkpoint.py .gpu/smollm2-shape /tmp/smollm2-random > /dev/null || exit 1

step() {  # step NAME LIMIT_S COMMAND...
  local name=$1 limit=$2; shift 2
  if (( SECONDS + limit > BUDGET )); then echo "== $name skipped: ${limit}s would pass the ${BUDGET}s budget"; return; fi
  echo "== $name (limit ${limit}s, at ${SECONDS}s)"
  local log=${LOGS:-$OUT}/$name.log  # LOGS: elsewhere, for steps whose tail below is enough (8 files come back)
  mkdir -p "$(dirname "$log")"
  timeout "$limit" bash -c "$*" > "$log" 2>&1  # bash -c: a step may be a function (exported by the script)
  echo "   exit $? after ${SECONDS}s"; grep -v -i "warn" "$log" | tail -n 12
}
