"""The model factory: what makes and judges a model, kept beside the installed package (as timm keeps train.py
beside timm/). Training (``training``), QC statistics (``qc_collect``, ``qc_fit``), calibration, the robustness
suite and its perturbations, the int8 gate, segmentation agreement; ``scripts/`` drives them.

Imports allbatch freely; allbatch (the wheel) imports nothing from here. Run from the repository root, e.g.
``python -m factory.training.train`` or ``python -m factory.scripts.validate_model``.
"""
