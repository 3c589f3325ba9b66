"""Run model files: one small protocol and its ONNX Runtime implementation.

Runtime layer: imports numpy and onnxruntime only (onnxruntime lazily, at engine creation).
"""

from hccatom.engines.base import Engine, TensorSpec, check_feeds
from hccatom.engines.onnxruntime_engine import OnnxRuntimeEngine
from hccatom.engines.providers import (
    available_devices,
    default_cache_root,
    provider_plan,
    tensorrt_cache_dir,
    tensorrt_profile_shapes,
    tensorrt_provider_options,
)
from hccatom.engines.triton_engine import TritonEngine

__all__ = [
    "Engine",
    "OnnxRuntimeEngine",
    "TensorSpec",
    "TritonEngine",
    "available_devices",
    "check_feeds",
    "default_cache_root",
    "provider_plan",
    "tensorrt_cache_dir",
    "tensorrt_profile_shapes",
    "tensorrt_provider_options",
]
