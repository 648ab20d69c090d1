"""Stage 5, quality control: per-image input checks, confidence and distance from the training data, as flags.

measures.py computes the raw numbers from a prepared batch and the model outputs (array functions
that run under NumPy and CuPy), stats.py holds the training statistics the model manifest carries
(``qc`` field) and turns them into thresholds, flags.py defines the bitfield and the one-word reasons,
stage.py is the run's stage, schema.py the ``/qc`` datasets of results.h5. The statistics are fitted
beside the package (``factory/qc_fit.py``). Quality control never changes a prediction and never drops a row.
"""
