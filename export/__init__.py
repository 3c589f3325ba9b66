"""Build-time tools (need the ``export`` extra): SELECTION and nnU-Net to ONNX, bundles."""
