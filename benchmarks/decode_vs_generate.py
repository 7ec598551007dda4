"""knobscope's greedy decode loop against ``model.generate`` on SmolLM2, side by side in one run.

Both arms generate exactly ``--tokens`` new tokens greedily from the same prompt with a
``DynamicCache``: knobscope's loop as a sweep runs it (inside ``timer.sample()``, with the
tokenize/prefill/decode stages timed and, with ``--breakdown``, hooks on every block's
attention and MLP), and ``generate(do_sample=False, min_new_tokens=N, max_new_tokens=N)``.
Calls alternate one by one (this machine drifts by +-10% over seconds); the figure of merit
is the median tokens per second of each arm and their ratio. Goal: knobscope within 5%.

On a GPU (``--device cuda``) each call ends with a device synchronisation, so both arms are
timed to the end of their work.

Usage:  .venv/bin/python benchmarks/decode_vs_generate.py [--rounds 20] [--tokens 32] [--breakdown]
            [--model smollm2] [--device cpu]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import torch

from knobscope.measure import StageTimer
from knobscope.workloads.base import WorkloadContext
from knobscope.workloads.lm import LMWorkload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20, help="generations per arm")
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per generation")
    parser.add_argument("--breakdown", action="store_true", help="also hook attention and MLP of every block")
    parser.add_argument("--model", default="smollm2", help="the lm workload's model (a path, a hub id, or smollm2)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    timer = StageTimer(args.device)
    lm = LMWorkload(model=args.model, ignore_eos=True, breakdown=args.breakdown)
    lm.setup(WorkloadContext(args.device, 0, timer, Path(tempfile.mkdtemp())))
    lm.apply({"max_new_tokens": args.tokens})
    sample = lm.samples()[0]
    ids = torch.tensor([lm._encode(sample["question"], None)], device=args.device)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else next(iter(lm.eos_ids))

    def ours() -> tuple[float, int]:
        start = time.perf_counter()
        with timer.sample() as timing:
            record = lm.run(sample, timer)
        sync()
        elapsed = time.perf_counter() - start
        assert timing.stages_ms["prefill"] > 0
        return elapsed, record["tokens_out"]

    def theirs() -> tuple[float, int]:
        start = time.perf_counter()
        with torch.inference_mode():
            out = lm.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, pad_token_id=pad,
                                    min_new_tokens=args.tokens, max_new_tokens=args.tokens)  # fmt: skip
        sync()
        elapsed = time.perf_counter() - start
        return elapsed, out.shape[1] - ids.shape[1]

    for _ in range(2):  # warm-up both
        ours(), theirs()
    rates = {"knobscope": [], "generate": []}
    for _ in range(args.rounds):  # alternate call by call
        for name, arm in (("knobscope", ours), ("generate", theirs)):
            elapsed, tokens = arm()
            assert tokens == args.tokens, (name, tokens)
            rates[name].append(tokens / elapsed)
    first_ours = lm._greedy(ids, lambda _: contextlib.nullcontext(), args.tokens, True)
    with torch.inference_mode():
        first_theirs = lm.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, pad_token_id=pad,
                                         min_new_tokens=args.tokens, max_new_tokens=args.tokens)[0, ids.shape[1]:].tolist()  # fmt: skip
    ours_med, theirs_med = statistics.median(rates["knobscope"]), statistics.median(rates["generate"])
    print(f"{args.model} on {args.device}, torch threads {torch.get_num_threads()}, prompt {ids.shape[1]} tokens, "
          f"{args.tokens} new tokens, {args.rounds} generations per arm, breakdown hooks {'on' if args.breakdown else 'off'}")  # fmt: skip
    print(f"  knobscope loop (stages timed)  {ours_med:8.2f} tok/s  (IQR {_iqr(rates['knobscope'])})")
    print(f"  model.generate                 {theirs_med:8.2f} tok/s  (IQR {_iqr(rates['generate'])})")
    print(f"  ratio knobscope / generate     {ours_med / theirs_med:8.3f}   goal >= 0.95")
    # generate(min_new_tokens) masks EOS until the length is reached, ignore_eos keeps it: the
    # sequences may part after an EOS, never before it.
    end = next((i for i, t in enumerate(first_ours) if t in lm.eos_ids), len(first_ours))
    print(f"  same tokens up to the first EOS {first_ours[:end] == first_theirs[:end]} ({end} tokens)")


def _iqr(values: list[float]) -> str:
    q = statistics.quantiles(values, n=4)
    return f"{q[0]:.1f}-{q[2]:.1f}"


if __name__ == "__main__":
    main()
