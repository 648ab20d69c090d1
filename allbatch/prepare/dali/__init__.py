"""GPU preparation stage: DALI decode + OpenCV-exact HSV segmentation + resize, CuPy assembly
(``allbatch.prepare.assemble``, the same code as the CPU's).

The same DALI graph runs with ``device="gpu"`` (nvJPEG through the ``mixed`` decoder, arithmetic on
the GPU) or ``device="cpu"`` (libjpeg-turbo, CPU operators; what CI runs). Modules:

- ``dali_graph``: pure functions that add graph nodes (decode, blank band, HSV threshold, resize).
- ``dali_pipeline``: the ``@pipeline_def`` wrapper and a runner that feeds encoded bytes.
- ``isolation``: header pre-validation and bisecting retry, so one corrupt file does not lose a batch.
- ``dali_preparer``: ``DaliPreparer``, the ``Preparer`` built from the above.

Nothing here imports nvidia.dali or cupy at import time.
"""
