"""Serving on NVIDIA Triton (``serve`` extra: nvidia-pytriton, tritonclient[grpc]).

- :mod:`hccatom.serve.triton_repo`: a Triton model repository from a bundle
  (``hccatom export triton``), every ``config.pbtxt`` checked against Triton's schema.
- :mod:`hccatom.serve.onnx_host`: hosts a repository's ONNX files through ONNX Runtime in
  PyTriton (what the tests use in place of a full Triton server).
- :mod:`hccatom.serve.server`: ``hccatom serve``, ``Predictor.recommend`` behind PyTriton.
- :mod:`hccatom.serve.wire`: tensor names and the typed-error encoding client and server share.

Importing this package loads neither PyTriton nor tritonclient; the modules that need them
import them when used and raise :class:`~hccatom.serve.errors.ServeExtraMissingError`
naming the extra when they are absent.
"""
