"""Benchmarks behind ``decaylab bench``: ``ops`` (every ops backend on CPU against softmax attention),
``kernels`` (the Triton kernels on a GPU, in sections: the table against the memory floor and fla, accuracy,
profiles, host time, ...), ``training`` (whole training runs) and ``data`` (corpus preparation).
docs/benchmarks.md gives the current numbers and the command behind each."""
