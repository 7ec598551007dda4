#!/usr/bin/env bash
# Issue 15's GPU measurements in one device call (run benchmarks/gpu/prepare.sh here first):
#   device run: carry [".whl", ".gpu"], timeout_s 600, command "bash benchmarks/gpu/issue15.sh 2>&1 | tee $OUT/console.log"
# Steps run in order of what the issue needs most, each under its own time limit (step() in
# common.sh: skipped when the call's budget, BUDGET seconds, default 540, could not hold it).
# A rehearsal here, on CPU with short lengths: DEVICE=cpu PY=.venv/bin/python bash benchmarks/gpu/issue15.sh
source benchmarks/gpu/common.sh
if [[ $DEVICE == cuda ]]; then
  lengths=16384,65536,131072; dtype=bfloat16; small="s/^//"
else  # the rehearsal: the same steps, small (and no CUDA graphs)
  lengths=1024,2048; dtype=float32; small="s/, reduce-overhead//; s/num_samples: 8/num_samples: 2/; s/\[32\]/[4]/; s/seq_len: 16384/seq_len: 1024/"
fi

spec() {  # spec FILE: the shipped spec for this device
  sed -e "s/device: cuda/device: $DEVICE/" -e "s/bfloat16/$dtype/" -e "$small" "$1"
}
knobscope() { $PY -c 'import sys; from knobscope.cli import main; sys.argv[0] = "knobscope"; sys.exit(main())' "$@"; }
table() {  # the columns that answer the issue, from a run's results.csv
  $PY - "$1" <<'PY'
import sys, pandas as pd
df = pd.read_csv(sys.argv[1] + "/results.csv")
wanted = ("compile", "dtype", "sparse_kernel", "sketch_kernel", "status", "cosine", "cosine_min", "speedup", "total_ms_p50", "prefill_ms_p50", "decode_per_call_ms_p50", "device_busy_share",
          "prefill_busy_share", "decode_busy_share", "prefill_launches_per_call", "decode_launches_per_call", "host_bound",
          "gflops_total", "gflops_theoretical")
print(df[[c for c in wanted if c in df.columns]].to_string())
PY
}
bench="$PY benchmarks/sketchwalk_vs_sdpa.py --device $DEVICE --dtype $dtype --lengths $lengths --skip-real --rounds 5"
export -f spec knobscope table
export OUT DEVICE PY dtype small
# Measured on an H200 on 2026-12-04 (docs/gpu.md); what that run left open comes first:
# 1. where the flex kernel's time goes (the goal, half the pairs bound, was missed at 64K/128K);
step profile_flex 150 $bench --shape smollm2 --kernel flex --profile --lengths ${lengths#*,}
#    and B = 128 with tau = 8, the same pairs bound: FlexAttention's tiles need not be halved to 64 x 64
step flex_b128 100 $bench --shape smollm2 --kernel flex --block-size 128 --tau 8 --lengths ${lengths#*,}
# 2. the cosine on the seed's synthetic data with each kernel on the GPU;
cosine() { spec benchmarks/gpu/sketchwalk_cosine.yaml > /tmp/cos.yaml && rm -rf /tmp/cos &&
           knobscope run /tmp/cos.yaml --out /tmp/cos --no-progress > /dev/null && table /tmp/cos; }
export -f cosine
step cosine 150 cosine
# 3. the diagnostic's busy share, corrected since (it counted the profiler's annotations as work);
lm() { spec benchmarks/gpu/lm_cuda.yaml > /tmp/lm.yaml && rm -rf /tmp/lm && knobscope run /tmp/lm.yaml --out /tmp/lm --no-progress &&
       table /tmp/lm; }
export -f lm
step lm 150 lm
# then the rest again: the goal's speed (three warm-up rounds now), chunk 256 against FlashAttention-2 too.
step flex_smollm2 200 $bench --shape smollm2 --kernel flex
step chunk256_smollm2 70 $bench --shape smollm2 --chunk 256 --kernel batched
LOGS=/tmp/logs  # the tails printed are enough for the steps below: their whole logs stay on the device
step sketch_compiled 60 $PY benchmarks/sketch_compiled.py --device $DEVICE --dtype $dtype --lengths ${lengths%,*}
# The breakdown's cost (13% on an H100, 18% on the H200 with sync): hooks timed by synchronising, by CUDA events, none.
hooks() {  # hooks sync|events|none (none: no breakdown, the baseline)
  spec benchmarks/gpu/lm_hooks.yaml | sed -e "s/hook_timing: sync/hook_timing: ${1/none/sync}/" \
      -e "$([[ $1 == none ]] && echo 's/breakdown: true/breakdown: false/' || echo 's/^//')" > /tmp/hooks_$1.yaml && rm -rf /tmp/hooks_$1 &&
          knobscope run /tmp/hooks_$1.yaml --out /tmp/hooks_$1 --no-progress && table /tmp/hooks_$1; }
export -f hooks
step hooks_sync 50 hooks sync
step hooks_events 50 hooks events
step hooks_none 50 hooks none
LOGS=$OUT step flex_seed 120 $bench --shape seed --kernel flex
echo "done after ${SECONDS}s"
