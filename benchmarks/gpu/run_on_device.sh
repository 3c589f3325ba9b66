#!/usr/bin/env bash
# Runs on the lent GPU machine, in the repository root (the device tool's working copy).
#   run_on_device.sh stash        keep the wheel files carried by this call in /tmp/carry
#   run_on_device.sh [ARGS...]    stash, assemble onnxruntime-gpu from its parts, install the
#                                 carried wheels + hccatom into /tmp/site, run the benchmark
# The wheels come from benchmarks/gpu/prepare_wheels.sh; see benchmarks/README.md.
set -euo pipefail
mkdir -p /tmp/carry
shopt -s nullglob
for f in .whl/small/*.whl .whl/big/*.whl .whl/big/ortgpu.*; do cp -n "$f" /tmp/carry/; done
if [ "${1:-}" = "stash" ]; then ls /tmp/carry; exit 0; fi
(cd /tmp/carry && sha256sum -c --quiet ortgpu.sha256 && cat ortgpu.part* > "$(cat ortgpu.name)")
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /tmp/carry/*.whl
python3 -m pip install -q --no-deps --no-build-isolation --no-compile --target /tmp/site .
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
python3 -c "import torch, onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
out=${OUT:-/tmp}/gpu_benchmark
python3 benchmarks/gpu_benchmark.py --out /tmp/gb "$@" 2>&1 | tee "$out.log"
cp /tmp/gb/gpu_benchmark.json "$out.json" 2>/dev/null || true
