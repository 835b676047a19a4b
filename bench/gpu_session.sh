#!/usr/bin/env bash
# Everything issue 8 asks of a GPU, as ONE command for a lent GPU machine (the `device` tool), inside
# its per-call limit: install the carried wheels, record the machine, run the GPU tests, then the GPU
# benchmark with a time budget (most important numbers first; every case is written as it finishes,
# so even a cut run leaves its numbers). Results go to $OUT (the device tool's folder) or, when OUT is
# unset, bench/results/gpu-session/.
#
# Here, once per session (the wheels the GPU machine's image lacks into .whl/, the tiny model into .cache/tunelab-test/):
#     bash bench/gpu_prepare.sh
# Then, with the device tool (15 minutes of device time a session, machine starts included):
#  1. run(command="bash bench/gpu_session.sh", carry=[".whl", ".cache/tunelab-test"], timeout_s=390)
#     then copy its train_step-gpu.json to bench/results/train_step-gpu.json (it travels with the tree);
#  2. if 5+ minutes are left: run(command="CONTINUE=1 SKIP_TESTS=1 BUDGET_S=240 bash bench/gpu_session.sh",
#     same carry, timeout_s=280): measures only what the first call did not reach; copy it back again.
# `python bench/train_step.py --report bench/results/train_step-gpu.json` prints the tables for
# docs/performance.md.
#
# BUDGET_S (default 330): seconds for the whole script, under the call's timeout_s.
# CONTINUE=1: start from bench/results/train_step-gpu.json, or CONTINUE_FROM (`train_step.py --continue`).
# SKIP_TESTS=1: skip tests/test_gpu.py (a second call). STEPS: timed steps per round (default 8).
# SMOKE=1: the same script on a CPU with miniature models (how it is checked without a GPU).
# WHEELS: the folder of wheels to install (default .whl). PYTHON: the interpreter (default python3, which on the GPU machine is the one holding torch).
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
BUDGET=${BUDGET_S:-330}
DEST=${OUT:-bench/results/gpu-session}
PY=${PYTHON:-python3}
mkdir -p "$DEST"
export PYTHONUNBUFFERED=1 TUNELAB_CACHE=${TUNELAB_CACHE:-$PWD/.cache/tunelab-test}
elapsed() { echo $(( $(date +%s) - START )); }
log() { echo "[gpu-session +$(elapsed)s] $*"; }

main() {
  local whl=${WHEELS:-.whl}
  if compgen -G "$whl/*.whl" >/dev/null; then
    log "installing the carried wheels: $(cd "$whl" && ls | tr '\n' ' ')"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/tunelab-site \
      "$whl"/*.whl || { log "FAILED: pip could not install $whl/ (see above)"; return 3; }
    export PYTHONPATH=/tmp/tunelab-site${PYTHONPATH:+:$PYTHONPATH}
  else
    log "no wheels in $whl/: using the interpreter's own packages (bash bench/gpu_prepare.sh fetches them)"
  fi
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

  # Fail in seconds, not minutes, when the environment is wrong: every module the benchmark needs.
  "$PY" - <<'PYEOF' | tee "$DEST/env.txt" || { log "FAILED: the imports above"; return 4; }
import importlib, platform, sys
mods = ["torch", "diffusers", "transformers", "peft", "accelerate", "safetensors", "tokenizers", "tomli_w",
        "PIL", "numpy", "engine.train.loop", "bench.sampling_share"]
versions = {}
for m in mods:
    mod = importlib.import_module(m)
    versions[m] = getattr(mod, "__version__", "")
import torch
print("python", platform.python_version(), sys.executable)
print(" ".join(f"{k}={v}" for k, v in versions.items() if v))
print("cuda", torch.cuda.is_available(), torch.version.cuda,
      torch.cuda.get_device_name() if torch.cuda.is_available() else "-")
PYEOF
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit,clocks.max.sm --format=csv \
      | tee -a "$DEST/env.txt"
  fi

  if [ "${SKIP_TESTS:-0}" != 1 ]; then
    log "GPU tests (tests/test_gpu.py)"
    timeout 150 "$PY" -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$DEST/gpu-tests.log"
    log "GPU tests: exit ${PIPESTATUS[0]}"
  fi

  local left=$(( BUDGET - $(elapsed) - 20 ))
  local args=(--gpu --budget-s "$left" --steps "${STEPS:-8}" --out "$DEST/train_step-gpu.json")
  if [ "${SMOKE:-0}" = 1 ]; then args[0]=--gpu-smoke; fi
  if [ "${CONTINUE:-0}" = 1 ]; then args+=(--continue "${CONTINUE_FROM:-bench/results/train_step-gpu.json}"); fi
  log "benchmark: bench/train_step.py ${args[*]}"
  "$PY" bench/train_step.py "${args[@]}"
  log "benchmark: exit $?"
}

main 2>&1 | tee "$DEST/session.log"
exit "${PIPESTATUS[0]}"
