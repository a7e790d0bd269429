"""Benchmarks: ``decaylab bench ops`` (every ops backend on CPU against softmax attention) and
``decaylab bench kernels`` (the Triton kernels on a GPU)."""
