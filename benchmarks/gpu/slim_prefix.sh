#!/usr/bin/env bash
# GPU procedure: cut the pip --target prefix down to what the device run loads
# (prepare.sh calls this before packing; measured sizes in benchmarks/README.md).
#
#   bash benchmarks/gpu/slim_prefix.sh PREFIX
#   CUDA_ARCH=90  (default) keep only sm_90 code in the CUDA EP: the lent H100/H200
#   CUDA_ARCH=all keep every GPU architecture (about 135 MiB more to carry: more calls)
#
# What goes, and why the device run does not need it:
# - libonnxruntime_providers_tensorrt.so: the device has no TensorRT;
# - libonnxruntime.so.*: ONNX Runtime's C-API library; the Python module
#   (onnxruntime_pybind11_state) has the runtime linked in and never loads it;
# - in libonnxruntime_providers_cuda.so, the cubins of other GPUs (strip_fatbin.py; the
#   cuBLAS/cuDNN it needs come from the device's torch nvidia-* wheels, never carried);
# - debug info of the other shared objects (cc3d ships 16 MiB of it), bytecode caches,
#   and the packages' own test suites.
set -euo pipefail
prefix=${1:?usage: slim_prefix.sh PREFIX}
here=$(cd "$(dirname "$0")" && pwd)
CUDA_ARCH=${CUDA_ARCH:-90}
capi=$prefix/onnxruntime/capi
rm -f "$capi"/libonnxruntime_providers_tensorrt.so "$capi"/libonnxruntime.so*
if [ -f "$capi/libonnxruntime_providers_cuda.so" ]; then
  if [ "$CUDA_ARCH" = all ]; then
    echo "slim: CUDA EP kept whole (CUDA_ARCH=all)" >&2
  else
    python3 "$here/strip_fatbin.py" --keep-arch "$CUDA_ARCH" "$capi/libonnxruntime_providers_cuda.so"
  fi
fi
if command -v strip >/dev/null; then
  # never the CUDA EP: its fat binary stays byte for byte as strip_fatbin.py left it
  find "$prefix" -type f -name '*.so*' ! -name 'libonnxruntime_providers_cuda.so' \
    -exec strip --strip-debug {} +
else
  echo "slim: no strip on PATH; debug info kept" >&2
fi
find "$prefix" -depth -type d -name __pycache__ -exec rm -rf {} +
rm -rf "$prefix"/nnunetv2/tests "$prefix"/nibabel/tests "$prefix"/nibabel/*/tests \
       "$prefix"/unittest2/test
