"""``decaylab bench``: sub-subcommands ``ops``, ``kernels``, ``training`` and ``data``, each a module with
``configure`` and ``run``.

The modules are imported only when their subcommand is chosen (``decaylab bench --help`` imports none of them),
and none imports torch before ``run``, so every ``--help`` answers at once. One that cannot be imported still gets
a subcommand that explains what is missing instead of vanishing.
"""

from __future__ import annotations

import argparse

from decaylab.commands.subcommands import LazySubcommands, module_setup

# name -> (module, one-line description)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "ops": ("decaylab.bench.ops", "every ops backend vs causal softmax attention on CPU: time and peak memory"),
    "kernels": ("decaylab.bench.kernels", "the Triton kernels on a GPU against the memory floor (and fla)"),
    "training": ("decaylab.bench.training", "tokens/s of whole training runs, variants and CUDA-graph modes"),
    "data": ("decaylab.bench.data", "corpus preparation: BPE training and tokenization, time and peak memory"),
    "decode": ("decaylab.bench.decode", "per-token generation latency after N tokens of context, linear vs softmax"),
}


def _unavailable(name: str, module_name: str, error: ImportError):
    def run(args: argparse.Namespace) -> int:
        raise ValueError(
            f"'bench {name}' is not available in this installation: importing {module_name} failed ({error}). "
            "Install the missing dependency (for kernels: pip install 'decaylab[triton]' on a CUDA machine)."
        )

    return run


def _setup(name: str, module_name: str):
    def setup(parser: argparse.ArgumentParser) -> None:
        try:
            module_setup(module_name, "_bench_run")(parser)
        except ImportError as error:
            parser.set_defaults(_bench_run=_unavailable(name, module_name, error))

    return setup


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True, action=LazySubcommands)
    for name, (module_name, description) in BENCHMARKS.items():
        sub.add_lazy(name, description, _setup(name, module_name))


def run(args: argparse.Namespace) -> int:
    return int(args._bench_run(args) or 0)
