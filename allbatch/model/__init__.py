"""Stage 4's model: the ONNX artifact and its manifest (``manifest``), whether it fits this allbatch (``fit``),
the two-channel network for torch (``network``, ``config``) and its ONNX import/export (``onnx_io``)."""
