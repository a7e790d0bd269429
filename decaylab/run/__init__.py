"""One training run, apart from how it is trained: its configuration (``RunConfig`` = model + train + data), the
learning-rate schedules the configuration names, its checkpoints, and opening a finished run's model.

The run directory's layout (file names, checkpoint listing, the metrics log) is ``decaylab.rundir``. Nothing
here imports ``decaylab.training``, so evaluation, generation, export and sweeps read runs without it.
"""
