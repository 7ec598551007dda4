"""knobscope's timing cost and accuracy on SmolLM2, measured side by side in one run.

1. Overhead: the same generation (one QA sample, 16 new tokens) with knobscope's full
   instrumentation (sample + stage bookkeeping + forward hooks on all 30 decoder blocks) and
   without any (stages are no-ops outside a sample), alternated call by call; plus the cost per timer
   event measured in isolation times the number of events per sample. Goal: under 1%.
2. Agreement: the median of one prefill forward pass as knobscope's StageTimer reports it and
   as torch.utils.benchmark.Timer reports it (same thread count), interleaved rounds.
   Goal: within 2%. Both arms alternate call by call, because this machine drifts by
   +-10% over seconds and blocks of calls would measure the drift, not the timers.

Usage:  .venv/bin/python benchmarks/timing_overhead.py [--rounds 5] [--model smollm2] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.utils.benchmark as tbench

from event_cost import per_event_us
from knobscope.measure import StageTimer
from knobscope.models.block_mask import find_decoder_layers
from knobscope.workloads.base import WorkloadContext
from knobscope.workloads.lm import LMWorkload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--samples", type=int, default=6, help="generations per round and arm")
    parser.add_argument("--model", default="smollm2", help="the lm workload's model (a path, a hub id, or smollm2)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    timer = StageTimer(args.device)
    lm = LMWorkload(model=args.model)
    lm.setup(WorkloadContext(args.device, 0, timer, Path(tempfile.mkdtemp())))
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    lm.apply({"max_new_tokens": 16})
    lm.args = lm.args.model_copy(update={"ignore_eos": True})  # same work every time
    sample = lm.samples()[0]
    layers = find_decoder_layers(lm.model)
    print(f"{args.model} on {args.device}, torch threads {torch.get_num_threads()}, {len(layers)} decoder blocks")

    # --- 1. overhead -----------------------------------------------------------------------
    bare_ms, instrumented_ms, events = [], [], 0
    for _ in range(2):  # warm-up
        lm.run(sample, timer)
    handles = [timer.attach(layer, "block") for layer in layers]  # hooks fire only inside timer.sample()
    for _ in range(args.rounds * args.samples):  # alternate call by call: machine drift hits both arms
        start = time.perf_counter()
        lm.run(sample, timer)  # outside timer.sample(): stages and hooks are no-ops
        sync()
        bare_ms.append((time.perf_counter() - start) * 1e3)
        start = time.perf_counter()
        with timer.sample() as timing:
            lm.run(sample, timer)
        sync()
        instrumented_ms.append((time.perf_counter() - start) * 1e3)
        events = sum(len(c) for c in timing.calls_ms.values())
    for h in handles:
        h.remove()
    bare, inst = statistics.median(bare_ms), statistics.median(instrumented_ms)

    event_us = per_event_us(timer)  # detaches every hook
    estimate = events * event_us / 1e3 / bare
    print("\n1. timing overhead on one generation (16 tokens)")
    print(f"   median without instrumentation  {bare:9.2f} ms")
    print(f"   median with full instrumentation {inst:9.2f} ms  ({events} timed events per sample)")
    print(f"   A/B difference                   {100 * (inst - bare) / bare:+8.2f} %  (includes machine noise)")
    print(f"   cost per timed event             {event_us:9.2f} us")
    print(f"   events x cost / sample time      {100 * estimate:8.3f} %   goal < 1%")

    # --- 2. agreement with torch.utils.benchmark ---------------------------------------------
    ids = torch.tensor([lm._encode(sample["question"], None)], device=args.device)

    def prefill() -> None:
        with torch.inference_mode():
            lm.model(input_ids=ids, use_cache=False, logits_to_keep=1)
        sync()  # torch.utils.benchmark's Timer synchronises on CUDA too

    ours, theirs = [], []
    torch_timer = tbench.Timer(stmt="prefill()", globals={"prefill": prefill}, num_threads=torch.get_num_threads())
    for _ in range(3):
        prefill()
    for _ in range(args.rounds * 20):  # alternate call by call
        with timer.sample() as timing:
            with timer.stage("prefill"):
                prefill()
        ours.append(timing.stages_ms["prefill"])
        theirs.append(torch_timer.timeit(1).median * 1e3)
    o, t = statistics.median(ours), statistics.median(theirs)
    print(f"\n2. one prefill forward ({ids.shape[1]} tokens), {len(ours)} calls each, alternated")
    print(f"   knobscope StageTimer             {o:9.3f} ms")
    print(f"   torch.utils.benchmark.Timer      {t:9.3f} ms")
    print(f"   ratio knobscope / torch          {o / t:9.4f}     goal within 2% (0.98..1.02)")


if __name__ == "__main__":
    main()
