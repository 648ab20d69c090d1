"""Stage 2, prepare: the one recipe from encoded bytes to the model's two-channel input.

decode -> blank the bottom band -> HSV segmentation at native resolution -> resize -> assemble/normalise.
``recipe`` is that recipe on the CPU (NumPy); ``cpu`` runs it as the Pillow ``Preparer``; ``dali`` runs the
same recipe as a DALI graph (GPU or DALI's CPU operators) with CuPy assembly, tested against ``recipe``.
"""
