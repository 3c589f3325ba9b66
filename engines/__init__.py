"""Run model files: one small protocol and its ONNX Runtime implementation."""
