"""allbatch: GPU batch classifier for B-ALL in peripheral blood smear images.

Method: Ghaderzadeh M., Aria M. et al., Int J Intell Syst 2022;37:5113-5133 (DOI 10.1002/int.22753):
HSV colour-threshold segmentation plus a two-channel DenseNet201 network.

The folders follow the data flow: ``input`` (discover, read, check, decode) -> ``prepare`` (the one recipe, CPU
and DALI) -> ``backends`` (infer, with ``model``) -> ``qc`` -> ``results`` (write) -> ``summarize`` -> ``report``;
``run`` plans a run and executes it (one process, local workers, Ray); ``cli`` is the edge; ``core`` holds value
types and text, ``environment`` the machine's facts; ``evaluation`` and ``bench`` measure. Model making lives
beside the package, in ``factory/``.
"""

__version__ = "0.1.0"

CLASS_NAMES: tuple[str, ...] = ("Benign", "Early", "Pre", "Pro")
"""Class order of every model and results file: hematogones, Early Pre-B, Pre-B, Pro-B ALL."""
