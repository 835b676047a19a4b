#!/usr/bin/env bash
# Prepare, on this machine (which can reach a package index), what a lent GPU machine needs for
# `bench/gpu_session.sh`: (1) the wheels it lacks, in .whl/ (git-ignored) — that machine has no network;
# its image has Python 3.12 with torch, accelerate, huggingface_hub, tokenizers, safetensors, numpy,
# pillow, pytest and nvidia-ml-py, but no diffusers and other versions of transformers/peft (see
# /work/.library/device/KINDS.md), so tunelab's pins of those travel as wheels (~21 MB); (2) the tiny
# model the GPU tests and the benchmark's tokenizer use, in .cache/tunelab-test/ (5 MB; building it
# there would cost a minute of device time).
#
#   bash bench/gpu_prepare.sh    # PYVER=3.11 WHEELS=/tmp/whl311: wheels for a local dry run on Python 3.11
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=${PYVER:-3.12}
WHL=${WHEELS:-.whl}
pin() { sed -n "s/^ *\"$1==\([^\"]*\)\".*/\1/p" pyproject.toml; }  # a direct dependency's pin
WANT=(
  "diffusers==$(pin diffusers)" "transformers==$(pin transformers)" "peft==$(pin peft)" "tomli-w==$(pin tomli-w)"
  # needed by those at versions the image may not have (transformers: regex >= 2025.10.22; diffusers
  # declares importlib_metadata)
  "regex==2026.11.19" "importlib_metadata==10.2.0"
)
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf "$WHL" && mkdir -p "$WHL"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$WHL" "${WANT[@]}"
ls -la "$WHL"
du -sh "$WHL"
if [ -x .venv/bin/python ]; then
  TUNELAB_CACHE="$PWD/.cache/tunelab-test" .venv/bin/python -c \
    'from engine.train.tiny import ensure_tiny; print("tiny model:", ensure_tiny())'
else
  echo "no .venv: run ./dev setup first, then this again, so the tiny model can travel (.cache/tunelab-test)" >&2
  exit 2
fi
