"""kulit's web app and JSON API (FastAPI). Torch-free: it serves an ONNX model directory."""
