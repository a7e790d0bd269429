"""The subcommands of ``decaylab`` (the table is in ``decaylab.cli``), one module each, and their shared helpers.

Every module here has ``configure(parser)`` and ``run(args) -> int`` and imports nothing heavy at import time;
the work is imported inside ``run``. ``args`` holds the argument types and flags several commands share,
``subcommands`` the lazy subparsers.
"""
