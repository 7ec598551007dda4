"""A checkpoint directory with random weights in the shape of a config directory's model.

On a lent GPU the real SmolLM2 weights (98 MB) cannot travel; kernels, launches, memory and
timings depend on the shapes, not the values. ``python random_checkpoint.py SRC DST`` writes
DST with SRC's config and tokenizer files and seeded random weights.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM


def main() -> None:
    source, target = Path(sys.argv[1]), Path(sys.argv[2])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source))
    model.save_pretrained(target)
    for path in source.iterdir():
        if path.is_file() and not (target / path.name).exists():
            shutil.copy(path, target / path.name)
    print(f"{target}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M random parameters in {source}'s shape")


if __name__ == "__main__":
    main()
