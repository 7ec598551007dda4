"""The vlm workload's stage instrumentation on a tiny VLM, measured side by side in one run.

1. Overhead of the stage hooks: one VQA sample (4 crops, 8 forced tokens) run bare (stages and
   hooks are no-ops outside a sample) and with every stage timed: preprocess, prefill, decode,
   the vision_encoder and projector hooks, plus a hook on every layer of the vision encoder and
   of the language model (more than the workload attaches), alternated call by call. Also the
   cost per timed event measured in isolation times the events per sample. Goal: under 1%.
2. Vision-encoder time against crops: max_crops 1 ... 12 with each image resized to one row of
   that many tiles (seed 002's Exp1 tilings), the median vision_encoder time per crop count,
   and its least-squares line with R^2.

The models are random:idefics3 (SmolVLM's architecture, randomly initialised) for 1, and for 2
one whose vision encoder does enough work per crop to be measured against Python's overheads
(6 layers of width 384, as a small SigLIP); --model and --vision-model name others. Latencies
are real, answers are not.

Usage:  .venv/bin/python benchmarks/vlm_stages.py [--rounds 20] [--model M] [--vision-model M]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from scipy.stats import linregress

from event_cost import per_event_us
from knobscope.measure import StageTimer
from knobscope.models.block_mask import find_decoder_layers
from knobscope.workloads.base import WorkloadContext
from knobscope.workloads.vlm import VLMWorkload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20, help="calls per arm (overhead) and per crop count")
    parser.add_argument("--model", default="random:idefics3")
    parser.add_argument("--vision-model", default="random:idefics3:vision_hidden=384,vision_layers=6,vision_heads=6")
    args = parser.parse_args()

    timer = StageTimer("cpu")
    vlm = VLMWorkload(model=args.model, num_samples=4, ignore_eos=True, exact_tiling=True)
    vlm.setup(WorkloadContext("cpu", 0, timer, Path(tempfile.mkdtemp())))  # attaches vision_encoder and projector
    sample = vlm.samples()[0]
    vision_layers = vlm.family.vision_tower(vlm.model).encoder.layers
    text_layers = find_decoder_layers(vlm.family.text_model(vlm.model))
    print(f"model {args.model}, device cpu, torch threads {torch.get_num_threads()}, "
          f"{len(vision_layers)} vision layers, {len(text_layers)} text blocks")  # fmt: skip

    # --- 1. overhead -----------------------------------------------------------------------
    vlm.apply({"max_crops": 4, "max_new_tokens": 8})
    for layer in [*vision_layers, *text_layers]:
        timer.attach(layer, "layer")
    for _ in range(3):  # warm-up
        vlm.run(sample, timer)
    bare_ms, timed_ms, totals, events = [], [], [], 0
    for _ in range(args.rounds):  # alternate call by call: machine drift hits both arms
        start = time.perf_counter()
        vlm.run(sample, timer)  # outside timer.sample(): every stage and hook is a no-op
        bare_ms.append((time.perf_counter() - start) * 1e3)
        start = time.perf_counter()
        with timer.sample() as timing:
            record = vlm.run(sample, timer)
        timed_ms.append((time.perf_counter() - start) * 1e3)
        totals.append(timing.total_ms)
        events = sum(len(c) for c in timing.calls_ms.values())
    bare, timed = statistics.median(bare_ms), statistics.median(timed_ms)

    event_us = per_event_us(timer)  # detaches every hook
    print(f"\n1. stage-hook overhead on one VQA sample ({record['crops']} crops, {record['vision_tokens_actual']} vision "
          f"tokens, {record['tokens_out']} tokens out), {args.rounds} calls per arm, alternated")  # fmt: skip
    print(f"   median, no stage timed            {bare:9.2f} ms")
    print(f"   median, every stage timed         {timed:9.2f} ms  ({events} timed events per sample)")
    print(f"   A/B difference                    {100 * (timed - bare) / bare:+8.2f} %  (includes machine noise)")
    print(f"   cost per timed event              {event_us:9.2f} us")
    print(f"   events x cost / sample time       {100 * events * event_us / 1e3 / bare:8.3f} %   goal < 1%")

    # --- 2. vision encoder against crops ----------------------------------------------------
    vlm.teardown()
    timer = StageTimer("cpu")
    vlm = VLMWorkload(model=args.vision_model, num_samples=1, exact_tiling=True)
    vlm.setup(WorkloadContext("cpu", 0, timer, Path(tempfile.mkdtemp())))
    crops, medians = [], []
    for tiles in range(1, 13):
        vlm.apply({"max_crops": tiles, "max_new_tokens": 1})
        vlm.run(sample, timer)  # warm-up at this shape
        times = []
        for _ in range(args.rounds):
            with timer.sample() as timing:
                record = vlm.run(sample, timer)
            times.append(timing.stages_ms["vision_encoder"])
        crops.append(record["crops"])
        medians.append(statistics.median(times))
    fit = linregress(crops, medians)
    print(f"\n2. vision encoder time against crops on {args.vision_model}\n"
          f"   (tilings 1x1 ... 1x12, median of {args.rounds} calls each)")
    print("   crops  vision_encoder ms")
    for c, m in zip(crops, medians):
        print(f"   {c:5d}  {m:10.3f}")
    print(f"   fit: {fit.slope:.4f} ms per crop + {fit.intercept:.3f} ms, R^2 = {fit.rvalue**2:.4f}")
    vlm.teardown()


if __name__ == "__main__":
    main()
