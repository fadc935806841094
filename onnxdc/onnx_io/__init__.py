"""onnx_io."""
