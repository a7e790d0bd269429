"""``decaylab bench``: sub-subcommands ``ops`` and ``kernels``, each a module with ``configure`` and ``run``.

The modules are imported only when their subcommand is set up; one that cannot be imported (``kernels`` needs
Triton and a GPU build) still gets a subcommand that explains what is missing instead of vanishing.
"""

from __future__ import annotations

import argparse
import importlib

# name -> (module, one-line description)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "ops": ("decaylab.bench.ops", "every ops backend vs causal softmax attention on CPU: time and peak memory"),
    "kernels": ("decaylab.bench.kernels", "the Triton kernels on a GPU against the memory floor (and fla)"),
    "training": ("decaylab.bench.training", "tokens/s of whole training runs, variants and CUDA-graph modes"),
}


def _unavailable(name: str, module_name: str, error: ImportError):
    def run(args: argparse.Namespace) -> int:
        raise ValueError(
            f"'bench {name}' is not available in this installation: importing {module_name} failed ({error}). "
            "Install the missing dependency (for kernels: pip install 'decaylab[triton]' on a CUDA machine)."
        )

    return run


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for name, (module_name, description) in BENCHMARKS.items():
        p = sub.add_parser(name, help=description, description=description)
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            p.set_defaults(_bench_run=_unavailable(name, module_name, error))
            continue
        module.configure(p)
        p.set_defaults(_bench_run=module.run)


def run(args: argparse.Namespace) -> int:
    return int(args._bench_run(args) or 0)
