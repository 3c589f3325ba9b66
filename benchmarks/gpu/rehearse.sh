#!/usr/bin/env bash
# Rehearse the GPU procedure HERE, without a GPU: every call of the device tool becomes a run
# of on_device.sh in a fresh copy of the working tree that holds only that call's part, with
# one shared stash, exactly as the device machine sees them; the last call assembles and
# installs the prefix and runs `hccatom bench --device cpu --small` from it (the demo bundle).
#
#   PYVER=3.11 bash benchmarks/gpu/prepare.sh && bash benchmarks/gpu/rehearse.sh
# (XZ_LEVEL=1 MAX_PARTS=9 make the rehearsal's packing quick on a slow machine.)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
export HCCATOM_GPU_STASH=$(mktemp -d /tmp/hccatom-gpu-stash.XXXXXX)
export OUT=${OUT:-$(mktemp -d /tmp/hccatom-gpu-out.XXXXXX)}
parts=(.gpu/part*)
n=${#parts[@]}
for i in "${!parts[@]}"; do
  call=$((i + 1))
  tree=$(mktemp -d /tmp/hccatom-gpu-call.XXXXXX)
  git ls-files -z --cached --others --exclude-standard | tar -C "$ROOT" --null -T - -cf - \
    | tar -C "$tree" -xf -
  mkdir -p "$tree/.gpu"
  cp "${parts[$i]}" .gpu/SHA256SUMS .gpu/PYVER "$tree/.gpu/"  # what each call carries
  if [ "$call" -lt "$n" ]; then
    echo "== call $call/$n: stash ${parts[$i]}"
    (cd "$tree" && bash benchmarks/gpu/on_device.sh stash)
  else
    echo "== call $call/$n: stash ${parts[$i]}, assemble, install, run (CPU smoke test)"
    (cd "$tree" && bash benchmarks/gpu/on_device.sh run bench --device cpu --small --cuda-graphs \
      --repeats 2 --warmup 1 --no-mirroring)
  fi
  rm -rf "$tree"
done
echo "results in $OUT"
