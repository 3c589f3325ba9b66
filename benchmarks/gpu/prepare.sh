#!/usr/bin/env bash
# GPU procedure, step 0 (HERE, on the development machine; no GPU needed).
#
# The lent device machine (one H200, CPython 3.12, torch with CUDA 13, CPU onnxruntime, no
# registry) lacks onnxruntime-gpu, SimpleITK, pydantic and nnunetv2. This script installs
# them into a prefix for the device's Python (pip --target with the device's platform and
# Python version; nothing runs), slims it to what the device run loads (slim_prefix.sh: the
# CUDA EP keeps only CUDA_ARCH=90 code, default), packs the prefix as ONE xz-compressed tar,
# and splits that into at most 4 parts that each fit one device call beside the working tree
# (a call carries at most 64 MiB in all; measured 2026-12-01: 91 MiB packed -> 3 parts).
# Parts and checksums go to .gpu/ (git-ignored).
#
#   bash benchmarks/gpu/prepare.sh                 # for the device (CPython 3.12)
#   PYVER=3.11 bash benchmarks/gpu/prepare.sh      # rehearsal for this machine's Python
#
# Then run the calls benchmarks/README.md lists ("GPU procedure"), or rehearse them here
# with benchmarks/gpu/rehearse.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PYVER=${PYVER:-3.12}
ORT_GPU=${ORT_GPU:-onnxruntime-gpu==1.31.1}   # the CUDA 13 build (the device has CUDA 13)
MAX_PARTS=${MAX_PARTS:-4}
CALL_LIMIT=$((64 * 1024 * 1024))
MARGIN=$((2 * 1024 * 1024))
exclude=$(git rev-parse --git-path info/exclude)
grep -qx '/.gpu/' "$exclude" 2>/dev/null || echo '/.gpu/' >> "$exclude"
work=$(mktemp -d /tmp/hccatom-gpu-prepare.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/wheels" "$work/prefix"

plat=(--only-binary=:all: --python-version "$PYVER" --implementation cp
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any)
echo "== wheels for CPython $PYVER x86-64" >&2
# compiled or binary-only: downloaded for the device's platform
python3 -m pip download -q --no-deps "${plat[@]}" -d "$work/wheels" \
  "$ORT_GPU" "SimpleITK==2.5.7" "pydantic-core==2.50.5" connected-components-3d blosc2 \
  numexpr ndindex
# pure Python (some ship only as sdists): built into wheels here
python3 -m pip wheel -q --no-deps -w "$work/wheels" "nnunetv2==2.8.1" "acvl-utils==0.2.6" \
  "dynamic-network-architectures==0.4.4" "batchgenerators==0.25.5" "batchgeneratorsv2==0.3.6" \
  "pydantic==2.14.4" annotated-types typing-inspection nibabel graphviz yacs unittest2 \
  traceback2 linecache2 future
echo "== install into the prefix (pip --target, device platform, no dependencies resolved)" >&2
python3 -m pip install -q --no-deps --no-compile --target "$work/prefix" "${plat[@]}" \
  "$work"/wheels/*.whl
echo "== slim the prefix: drop what the device run never loads" >&2
du -sh "$work/prefix" >&2
bash benchmarks/gpu/slim_prefix.sh "$work/prefix"
du -sh "$work/prefix" >&2
echo "largest files after slimming (MiB):" >&2
find "$work/prefix" -type f -size +1M -printf '%s %P\n' | sort -nr | head -8 \
  | awk '{printf "  %7.1f %s\n", $1 / 1048576, $2}' >&2

echo "== pack (tar | xz -${XZ_LEVEL:-9e}) and split" >&2
rm -rf .gpu && mkdir -p .gpu
tar -C "$work/prefix" -cf - . | xz -"${XZ_LEVEL:-9e}" -T"$(nproc)" > "$work/prefix.tar.xz"
total=$(stat -c %s "$work/prefix.tar.xz")
# what every call sends anyway: tracked + untracked-not-ignored files of the checkout
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null \
       | tail -1 | cut -f1)
room=$((CALL_LIMIT - tree - MARGIN))
parts=$(( (total + room - 1) / room ))
echo "packed $((total >> 20)) MiB; working tree $((tree >> 20)) MiB; room per call" \
     "$((room >> 20)) MiB -> $parts part(s)" >&2
if [ "$parts" -gt "$MAX_PARTS" ]; then
  echo "error: $parts parts > $MAX_PARTS calls; the procedure would need more calls" >&2
  exit 1
fi
size=$(( (total + parts - 1) / parts ))
split -b "$size" -d -a 1 "$work/prefix.tar.xz" .gpu/part
(cd .gpu && sha256sum part* > SHA256SUMS && echo "$PYVER" > PYVER)
ls -la .gpu >&2
echo "parts ready: $(cd .gpu && ls part* | tr '\n' ' ')" >&2
