"""Where allbatch runs: CPU features, GPUs, library versions, the machine's load and git state.

The one home of environment probing; ``allbatch info``, backend selection, provenance and the benchmark ask here.
"""
