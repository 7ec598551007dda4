#!/usr/bin/env bash
# Run HERE (a machine with PyPI) before issue15.sh runs on a lent GPU: downloads the wheels the
# device image lacks (knobscope's spec models need pydantic) into .whl/, and copies SmolLM2-135M's
# config and tokenizer into .gpu/smollm2-shape/ (its 98 MB of weights exceed what a device call
# carries; the device builds random weights of the same shape). Both folders are git-excluded.
# Then call the device tool with: carry [".whl", ".gpu"], command "bash benchmarks/gpu/issue15.sh".
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
for dir in /.whl/ /.gpu/; do grep -qxF "$dir" .git/info/exclude || echo "$dir" >> .git/info/exclude; done
rm -rf .whl .gpu && mkdir -p .whl .gpu
py=.venv/bin/python
platforms="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
# moocore (and what it needs) for the analysis that adaptive_repeats.py (issue11.sh) imports.
for pkg in pydantic pydantic_core annotated_types typing_inspection typing_extensions moocore cffi pycparser platformdirs; do
  version=$($py -c "import importlib.metadata as m; print(m.version('$pkg'))")
  $py -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $platforms \
    -d .whl "$pkg==$version"
done
$py - <<'PY'
import shutil
from pathlib import Path

from knobscope.models.loading import DEFAULT_MODEL, _load_pretrained

source = Path(_load_pretrained(DEFAULT_MODEL, None, None, "cpu", None, tokenizer_only=True).source)
target = Path(".gpu/smollm2-shape")
target.mkdir(parents=True)
for path in source.iterdir():
    if path.is_file() and path.suffix not in (".safetensors", ".bin", ".gguf"):
        shutil.copy(path, target / path.name)
print("config and tokenizer of", source, "->", target)
PY
du -sh .whl .gpu
