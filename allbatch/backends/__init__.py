"""Stage 4, infer: one protocol (``Backend``), one module per runtime (ONNX Runtime, OpenVINO, torch, TensorRT),
chosen by ``select``; reduced precision is accepted only after ``fp16_check`` against fp32."""
