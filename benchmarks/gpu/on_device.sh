#!/usr/bin/env bash
# GPU procedure, on the lent device machine (each call runs this in the repository root).
#
#   bash benchmarks/gpu/on_device.sh stash          # calls 1..N-1: keep the part(s) carried
#   bash benchmarks/gpu/on_device.sh run [ARGS...]  # last call: stash, check, assemble, install
#                                                   # into a temp prefix, run the benchmark
#   bash benchmarks/gpu/on_device.sh run bench ...  # ... or `hccatom bench ...` alone
#
# The parts come from benchmarks/gpu/prepare.sh (.gpu/partN + SHA256SUMS). They persist in
# $HCCATOM_GPU_STASH (default /tmp/hccatom-gpu) while the machine stays warm between calls.
# ARGS go to benchmarks/gpu/device_bench.py (default: --device cuda). The benchmark runs under
# a hard time guard (GUARD_S, default 450 s = 7.5 min); results and the log go to $OUT.
set -euo pipefail
STASH=${HCCATOM_GPU_STASH:-/tmp/hccatom-gpu}
GUARD_S=${GUARD_S:-450}
RESULTS=${OUT:-/tmp/hccatom-gpu-results}
mode=${1:-}
[ "$mode" = stash ] || [ "$mode" = run ] || { echo "usage: $0 stash|run [ARGS...]" >&2; exit 2; }
shift || true
mkdir -p "$STASH" "$RESULTS"
shopt -s nullglob
for f in .gpu/part* .gpu/SHA256SUMS .gpu/PYVER; do [ -f "$f" ] && cp -f "$f" "$STASH/"; done
echo "stash: $(cd "$STASH" && ls | tr '\n' ' ')"
[ "$mode" = stash ] && exit 0

t0=$(date +%s)
(cd "$STASH" && sha256sum -c --quiet SHA256SUMS) || {
  echo "error: a part is missing or corrupt (have: $(ls "$STASH")); re-run the stash calls" >&2
  exit 3
}
site=$(mktemp -d /tmp/hccatom-site.XXXXXX)
cat "$STASH"/part* | xz -d | tar -C "$site" -xf -
# hccatom into the same prefix: pip when it can build here (no registry, so no build
# isolation), else the package folders copied to their import paths (pyproject's package-dir:
# sdk -> hccatom, engines/atom/export -> hccatom.*), which is all `pip install .` puts there
if ! python3 -m pip install -q --no-deps --no-build-isolation --no-compile --target "$site" . \
     2>/dev/null; then
  mkdir -p "$site/hccatom"
  cp -r sdk/. "$site/hccatom/"
  for pkg in engines atom export; do cp -r "$pkg" "$site/hccatom/$pkg"; done
  echo "hccatom copied into the prefix (pip could not build without isolation here)"
fi
export PYTHONPATH=$site PYTHONUNBUFFERED=1
echo "assembled and installed into $site in $(( $(date +%s) - t0 )) s"
python3 - <<'PY'
import onnxruntime as ort, hccatom, sys
print("python", sys.version.split()[0], "| onnxruntime", ort.__version__, ort.get_available_providers(),
      "| hccatom", hccatom.__version__, "from", hccatom.__file__)
PY
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
# seconds, not minutes: does the carried (architecture-stripped) CUDA EP run kernels here?
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  timeout -k 5 120 python3 benchmarks/gpu/cuda_smoke.py 2>&1 | tee "$RESULTS/cuda_smoke.log"
  [ "${PIPESTATUS[0]}" = 0 ] || { echo "error: CUDA EP smoke test failed (see above)" >&2; exit 4; }
else
  echo "cuda_smoke: skipped (no GPU on this machine)"
fi
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--device cuda)
set +e
if [ "${args[0]}" = bench ]; then  # `run bench ARGS`: hccatom bench alone (demo bundle default)
  timeout -k 10 "$GUARD_S" python3 -c 'import sys; from hccatom.cli import main; sys.exit(main())' \
    "${args[@]}" --json "$RESULTS/bench.json" 2>&1 | tee "$RESULTS/device_bench.log"
else
  timeout -k 10 "$GUARD_S" python3 benchmarks/gpu/device_bench.py --out /tmp/hccatom-gb \
    --results "$RESULTS" "${args[@]}" 2>&1 | tee "$RESULTS/device_bench.log"
fi
rc=${PIPESTATUS[0]}
set -e
[ "$rc" = 124 ] && echo "time guard: stopped after $GUARD_S s" | tee -a "$RESULTS/device_bench.log"
echo "total $(( $(date +%s) - t0 )) s, exit $rc"
exit "$rc"
