#!/usr/bin/env bash
# Issue 11's last goal on a GPU, where a latency is stable enough to test it: repeats: auto and
# racing against a fixed 20-pass protocol, every front point's P95 within 2% of the fixed one's.
# On this project's 2-core machine the fixed protocol differs from itself by 10-35%, so the goal
# cannot be measured there. Run benchmarks/gpu/prepare.sh here first, then:
#   device run: carry [".whl", ".gpu"], timeout_s 600, command "bash benchmarks/gpu/issue11.sh"
# (after issue15.sh in the same session: BUDGET=<seconds left> bash benchmarks/gpu/issue11.sh).
# A rehearsal here, on CPU and small: DEVICE=cpu PY=.venv/bin/python bash benchmarks/gpu/issue11.sh
source benchmarks/gpu/common.sh
if [[ $DEVICE == cuda ]]; then
  # The flex kernel and the compiled sketch, so a P95 is the device's work: on an H200 (docs/gpu.md)
  # the batched kernel and eager sketch at 8K (P95s of 14-43 ms, hundreds of launches per layer)
  # made the fixed protocol differ from itself by up to 78%. At 32K, 8 x 128 heads, one layer's
  # SketchWalk is ~2 ms and dense ~5 ms (between that run's 16K and 64K): a draw (batch 2, 4
  # layers, both arms) ~50 ms, ~2,300 draws, plus compiling per block size. Not yet run.
  sketch="--seq-len 32768 --dtype bfloat16 --questions 8 --kernel flex --sketch compiled"
  lm="--dtype bfloat16 --questions 8 --blocks 10 30"
else
  sketch="--seq-len 256 --questions 2 --repeats 2 --min-repeats 1 --block-sizes 32 --top-k 2 4"
  lm="--questions 2 --repeats 2 --min-repeats 1 --blocks 10 30 --tokens 2"
fi
repeats="$PY benchmarks/adaptive_repeats.py --device $DEVICE"
# SketchWalk on seed 004's synthetic Q/K/V (8 heads x 128, batch 2, 4 layers): mostly kernels.
step repeats_sketchwalk 280 $repeats --workload sketchwalk $sketch
# SmolLM2's shape, random weights: decoding that is host-bound on a GPU (issue 15), so its P95
# is the host's; a second answer, not the goal's test.
step repeats_lm 240 $repeats --model /tmp/smollm2-random $lm
echo "done after ${SECONDS}s"
