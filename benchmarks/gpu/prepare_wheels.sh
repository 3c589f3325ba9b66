#!/usr/bin/env bash
# Prepare, on the development machine, what the GPU benchmark needs on the lent device machine
# but that machine's image lacks: onnxruntime-gpu (~255 MB, carried in parts of < 60 MB because a
# call carries at most 64 MiB), nnunetv2 and its pure-Python/small dependencies, SimpleITK and
# pydantic. Wheels are for CPython 3.12 on x86-64 manylinux (the device's Python).
#
#   bash benchmarks/gpu/prepare_wheels.sh          # fills .whl/ (ignored by git)
#
# Then follow benchmarks/README.md ("GPU benchmark") to carry .whl/partN and .whl/small
# across consecutive warm `run` calls and start benchmarks/gpu_benchmark.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
ORT_GPU_VERSION=${ORT_GPU_VERSION:-1.31.1}
rm -rf .whl && mkdir -p .whl/small .whl/big
plat=(--only-binary=:all: --python-version 3.12 --implementation cp
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
      --platform manylinux1_x86_64 --platform any)
dl() { python3 -m pip download -q --no-deps "${plat[@]}" -d "$1" "${@:2}"; }
# small wheels, one carry. Pure-Python packages (some ship only as sdists) are built here;
# compiled ones are downloaded for the device's platform.
python3 -m pip wheel -q --no-deps -w .whl/small nnunetv2==2.8.1 acvl-utils==0.2.6 \
  dynamic-network-architectures==0.4.4 batchgenerators==0.25.5 batchgeneratorsv2==0.3.6 \
  graphviz yacs unittest2 traceback2 linecache2 future \
  pydantic==2.14.4 annotated-types typing-inspection nibabel
dl .whl/small pydantic-core==2.50.5 connected-components-3d blosc2 numexpr ndindex
# SimpleITK (~50 MB) on its own carry; onnxruntime-gpu split in parts
dl .whl/big SimpleITK==2.5.7
dl .whl/big "onnxruntime-gpu==${ORT_GPU_VERSION}"
ort=$(ls .whl/big/onnxruntime_gpu-*.whl)
(cd .whl/big && split -b "${PART_MB:-40}m" -d "$(basename "$ort")" ortgpu.part && rm "$(basename "$ort")" \
  && basename "$ort" > ortgpu.name && sha256sum ortgpu.part* > ortgpu.sha256)
du -sh .whl/small .whl/big/*
