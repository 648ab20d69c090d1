"""The pipeline's qc stage: a prepared batch and the model's outputs -> /qc columns (never a prediction).

It runs where the batch lives: on the GPU path the inputs are a CuPy array and every measure is computed
on the device (the host outputs are copied there, about 1 MB per 64 images), then copied back once.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt

from allbatch.backends.base import InferenceOutput
from allbatch.core.records import PreparedBatch
from allbatch.model.manifest import ModelManifest
from allbatch.qc.measures import array_module, confidence_measures, input_measures, mahalanobis_distance, scalar_measures
from allbatch.qc.schema import empty_qc
from allbatch.qc.stats import QcStats, Rule, parse_qc

log = logging.getLogger("allbatch.qc")


def apply_rules(scalars: dict[str, Any], rules: tuple[Rule, ...], n: int, xp: Any = np) -> Any:
    """(N,) uint16 flags: the bit of each rule whose measure is beyond its threshold (NaN never fires).

    A rule whose measure is absent (e.g. no feature statistics, or sizes not reported) does not fire.
    """
    flags = xp.zeros(n, dtype=xp.uint16)
    for rule in rules:
        values = scalars.get(rule.measure)
        if values is None:
            continue
        values = values.astype(xp.float64)
        fired = values < rule.threshold if rule.side == "below" else values > rule.threshold
        flags |= xp.where(fired, xp.uint16(int(rule.flag)), xp.uint16(0)).astype(xp.uint16)
    return flags


class QcStage:
    """Computes the /qc columns of one batch with the statistics of ``manifest`` (its ``qc`` field).

    A model without statistics still gets every measure; no flag is set then, and a warning says so once.
    """

    def __init__(self, manifest: ModelManifest) -> None:
        self.prep = manifest.prep
        self.stats: QcStats | None = parse_qc(manifest.qc, manifest.num_features, len(manifest.class_names))
        if self.stats is None:
            log.warning(
                "model %s carries no quality-control statistics: no image will be flagged (factory/scripts/fit_qc_stats.py)", manifest.name
            )
        self._device_stats: dict[int, tuple[Any, Any, Any]] = {}

    def _feature_stats(self, xp: Any) -> tuple[Any, Any, Any] | None:
        """The feature statistics as arrays of ``xp`` (copied to the device once)."""
        if self.stats is None or self.stats.features is None:
            return None
        key = id(xp)
        if key not in self._device_stats:
            f = self.stats.features
            self._device_stats[key] = (xp.asarray(f.class_means), xp.asarray(f.basis), xp.asarray(f.variances))
        return self._device_stats[key]

    def measure_inputs(self, inputs: Any) -> dict[str, Any]:
        """The input measures of (n_ok, 2, 3, S, S) ``inputs`` (NumPy or CuPy), on their device: the part of
        quality control that needs no model output, so the preparing thread can take it (``PreparedBatch.input_measures``)."""
        return input_measures(inputs, self.prep)

    def measure(
        self, inputs: Any, output: InferenceOutput, mask_fraction: Any, sizes: Any, measured_inputs: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Measures and flags of n_ok images, as arrays of the module of ``inputs``.

        Args:
            inputs: (n_ok, 2, 3, S, S) model input (NumPy or CuPy). output: the backend's (n_ok, ...) host arrays.
            mask_fraction: (n_ok,) float32. sizes: (n_ok, 2) int32 (height, width), 0 when unknown.
            measured_inputs: ``measure_inputs(inputs)`` when already taken, else None.
        Returns:
            key -> (n_ok, ...) arrays, keys as ``allbatch.qc.schema.QC_COLUMNS``.
        """
        xp = array_module(inputs)
        if measured_inputs is None:
            measured_inputs = self.measure_inputs(inputs)
        measures: dict[str, Any] = {**measured_inputs, **confidence_measures(xp.asarray(output.logits))}
        return self.flag(measures, xp.asarray(output.features), xp.asarray(mask_fraction), xp.asarray(sizes))

    def flag(self, measures: dict[str, Any], features: Any, mask_fraction: Any, sizes: Any) -> dict[str, Any]:
        """Add the feature distance and the flags to ``measures`` (arrays of one module, n rows each).

        Args:
            measures: what ``input_measures`` and ``confidence_measures`` return.
            features: (n, F) pooled features. mask_fraction: (n,) float32. sizes: (n, 2) (height, width), 0 unknown.
        """
        xp = array_module(features)
        n = int(features.shape[0])
        distance = None
        device_stats = self._feature_stats(xp)
        if device_stats is not None and self.stats is not None and self.stats.features is not None:
            means, basis, variances = device_stats
            distance = mahalanobis_distance(features, means, basis, variances, self.stats.features.residual_variance)
        scalars = scalar_measures(measures, mask_fraction, sizes, distance)
        if not bool((sizes > 0).all()):
            scalars.pop("min_side")  # a preparer that does not report sizes: no size check
        rules = self.stats.rules if self.stats is not None else ()
        return {
            **measures,
            "distance": distance if distance is not None else xp.full(n, xp.nan, dtype=xp.float32),
            "size": sizes.astype(xp.int32),
            "flags": apply_rules(scalars, rules, n, xp),
        }

    def __call__(self, batch: PreparedBatch, output: InferenceOutput) -> dict[str, npt.NDArray[Any]]:
        """The /qc columns of every image of ``batch`` (host arrays, n rows; failed rows get fill values)."""
        n = len(batch.images)
        columns = empty_qc(n)
        ok = batch.ok_positions
        if not ok:
            return columns
        sizes = batch.sizes[ok] if batch.sizes is not None else np.zeros((len(ok), 2), np.int32)
        measured = self.measure(batch.inputs, output, batch.mask_fraction[ok], sizes, batch.input_measures)
        wanted = {key: value for key, value in measured.items() if key in columns}  # stain_hue only feeds the rules
        for key, value in to_host_once(wanted).items():
            columns[key][ok] = value
        return columns


def to_host_once(arrays: dict[str, Any]) -> dict[str, npt.NDArray[Any]]:
    """Device arrays (CuPy) of one batch brought to the host in one copy: one synchronisation per batch, not
    one per column (issue 22). Host (NumPy) arrays pass through.

    Every column is widened to float64 on the device, concatenated, copied once and cut and narrowed back
    on the host: float32, float16, (u)int8/16/32 and bool survive the round trip exactly (float64 holds
    every value of each; NaN stays NaN); 64-bit integers are copied on their own (a float64 would round them).
    """
    on_device = {key: value for key, value in arrays.items() if not isinstance(value, np.ndarray) and hasattr(value, "get")}
    out: dict[str, npt.NDArray[Any]] = {key: value for key, value in arrays.items() if key not in on_device}
    exact = {key: value for key, value in on_device.items() if np.dtype(value.dtype).itemsize <= 4 or np.dtype(value.dtype).kind == "f"}
    for key in on_device.keys() - exact.keys():
        out[key] = on_device[key].get()
    if exact:
        xp = array_module(next(iter(exact.values())))
        joined = xp.concatenate([value.astype(xp.float64).ravel() for value in exact.values()])
        flat = joined.get() if hasattr(joined, "get") else np.asarray(joined)  # the one device-to-host copy
        offset = 0
        for key, value in exact.items():
            size = int(value.size)
            out[key] = flat[offset : offset + size].reshape(value.shape).astype(value.dtype)
            offset += size
    return {key: out[key] for key in arrays}
