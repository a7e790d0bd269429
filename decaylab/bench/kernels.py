"""``decaylab bench kernels``: the Triton backend on a GPU, in sections (``--section``, ``--list-sections``).

The default section, ``table``, times each shape and decay granularity against the memory floor and, optionally,
fla: bf16 inputs made outside the timed region, warm-up calls (compilation), then the median of
``triton.testing.do_bench`` for the forward and for forward+backward, and with ``--cuda-graph`` for the
forward+backward captured once in a CUDA graph and replayed: the GPU's time without the host's, which at small
shapes is most of an eager call (decaylab.bench.kernel_timing says how the floor is measured). The other sections
(accuracy against the fp64 recurrence, per-kernel profiles, host time, registers, packed documents, the chunk
fallback, model-level tokens/s, the value check's cost) live in ``kernel_sections`` and ``kernel_model``. Every
run prints the card, the software versions and the date, and ``--json`` saves them with the results.
"""

from __future__ import annotations

import argparse
import json

from decaylab.bench import kernel_model, kernel_sections
from decaylab.bench.kernel_timing import (
    DEFAULT_SHAPES,
    PROVIDERS,
    Request,
    Section,
    Shape,
    add_arguments,
    check_config_spec,
    configured,
    floor_bytes,
    floor_flops,
    limit_autotune,
    make_inputs,
    measure_ceilings,
    parse_config_spec,
    replay_of,
    time_provider,
    versions,
)


def _time_column(column: str, inputs: dict, device, vector: bool, D: int, graph: bool) -> dict:
    """Time one table column: "fla", "decaylab" (the pinned config) or "decaylab[spec]" (pinned + overrides)."""
    if not column.startswith("decaylab["):
        return time_provider(column, inputs, graph=graph)
    with configured(column[9:-1], device, vector, D):
        return time_provider("decaylab", inputs, graph=graph)


def bench(shapes: list[Shape], decays: list[str], providers: list[str], device, graph: bool = False) -> dict:
    import torch

    ceilings = measure_ceilings(device)
    rows = []
    for shape in shapes:
        for decay in decays:
            vector = decay == "vector"
            inputs = make_inputs(shape, vector, device)
            floors = {
                mode: max(floor_bytes(shape, vector, bwd) / ceilings["copy_bytes_per_s"],
                          floor_flops(shape, bwd) / ceilings["bf16_flops_per_s"]) * 1e3
                for mode, bwd in (("fwd", False), ("fwd_bwd", True))
            }
            row = {"shape": str(shape), "decay": decay, "floor_fwd_ms": floors["fwd"],
                   "floor_fwd_bwd_ms": floors["fwd_bwd"]}
            if graph:
                row["floor_fwd_bwd_graph_ms"] = floors["fwd_bwd"]
            for provider in providers:
                try:
                    for key, value in _time_column(provider, inputs, device, vector, shape.D, graph).items():
                        row[f"{provider}_{key}"] = value
                except Exception as e:  # one refusing provider (fla on some stacks) must not end the run
                    row[f"{provider}_error"] = f"{type(e).__name__}: {str(e)[:120]}"
            rows.append(row)
            del inputs
            torch.cuda.empty_cache()
    return {"ceilings": ceilings, "rows": rows}


MODE_LABELS = {"fwd": "fwd", "fwd_bwd": "fwd+bwd", "fwd_bwd_graph": "fwd+bwd, CUDA graph"}


def format_table(result: dict, providers: list[str]) -> str:
    """Markdown table; with fla among the columns, the first decaylab column's speedup over it."""
    head = "| shape | decay | mode | floor ms | " + " | ".join(f"{p} ms | {p}/floor" for p in providers)
    ours = next((p for p in providers if p.startswith("decaylab")), None)
    if "fla" in providers and ours:
        head += " | speedup vs fla"
    lines = [head + " |", "|" + "---|" * (head.count("|"))]
    for row in result["rows"]:
        for mode in ("fwd", "fwd_bwd", "fwd_bwd_graph"):
            if f"floor_{mode}_ms" not in row:
                continue
            floor = row[f"floor_{mode}_ms"]
            cells = [row["shape"], row["decay"], MODE_LABELS[mode], f"{floor:.3f}"]
            for p in providers:
                t = row.get(f"{p}_{mode}_ms")
                error = row.get(f"{p}_{mode}_error") or row.get(f"{p}_error", "—")
                cells += [f"{t:.3f}", f"{t / floor:.1f}×"] if t else [error[:40], "—"]
            if "fla" in providers and ours:
                a, b = row.get(f"{ours}_{mode}_ms"), row.get(f"fla_{mode}_ms")
                cells.append(f"{b / a:.2f}×" if a and b else "—")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table(request: Request) -> dict:
    columns = [f"decaylab[{spec}]" if spec else "decaylab" for spec in request.configs] or ["decaylab"]
    providers = [*columns, *request.compare]
    result = bench(list(request.shapes), list(request.decays), providers, request.device, graph=request.cuda_graph)
    c = result["ceilings"]
    print(f"copy {c['copy_bytes_per_s'] / 1e9:.0f} GB/s, bf16 matmul {c['bf16_flops_per_s'] / 1e12:.0f} TFLOP/s "
          "(measured)")
    print(format_table(result, providers))
    return result


SECTIONS: dict[str, Section] = {
    "table": Section("fwd, fwd+bwd (and CUDA-graph) ms per shape and decay against the memory floor; --configs as "
                     "columns side by side, --compare fla chunk", table, DEFAULT_SHAPES),
    **kernel_sections.SECTIONS,
    **kernel_model.SECTIONS,
}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--section", nargs="+", choices=list(SECTIONS), default=["table"], metavar="NAME",
                        help=f"what to run, in this order: {', '.join(SECTIONS)} (default: table; "
                             "--list-sections says what each measures)")
    parser.add_argument("--list-sections", action="store_true", help="list the sections and exit")
    add_arguments(parser)
    parser.add_argument("--fla-max-configs", type=int, default=None, metavar="N",
                        help="cap fla's autotuners at their first N configs (its full autotune takes minutes per "
                             "shape; the published tables use 4); decaylab's kernels do not autotune")
    parser.add_argument("--json", metavar="PATH", help="also write the card, versions and results as JSON to PATH")


def list_sections() -> str:
    lines = []
    for name, section in SECTIONS.items():
        shapes = f" [default shapes: {' '.join(section.shapes)}]" if section.shapes else " [fixed cases]"
        lines.append(f"{name:12s} {section.about}{shapes}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.list_sections:
        print(list_sections())
        return 0
    decays = ("scalar", "vector") if args.decay == "both" else (args.decay,)
    shapes = {name: tuple(Shape.parse(s) for s in args.shapes or SECTIONS[name].shapes) for name in args.section}
    if args.fla_max_configs is not None and args.fla_max_configs < 1:
        raise ValueError("--fla-max-configs must be >= 1 (leave it out for fla's full autotune)")
    dims = tuple(sorted({shape.D for group in shapes.values() for shape in group})) or (64, 128)
    for spec in args.configs:  # a typo fails here, before any GPU work
        check_config_spec(spec, decays, dims)
    import torch

    if not torch.cuda.is_available():
        raise ValueError("bench kernels needs a CUDA GPU (the triton backend); none is visible here")
    from decaylab.ops import BACKENDS

    if "triton" not in BACKENDS:
        raise ValueError("the triton backend is not available: install triton (pip install 'decaylab[triton]')")
    if "fla" in args.compare:
        try:
            import fla.ops.gla  # noqa: F401
        except ImportError as e:
            raise ValueError(f"--compare fla needs fla-core (pip install fla-core==0.6.0): {e}") from None
        if args.fla_max_configs:
            limit_autotune(args.fla_max_configs)
    device = torch.device("cuda")
    result = versions(device)
    print(", ".join(f"{key} {value}" for key, value in result.items()))
    for name in args.section:
        request = Request(shapes[name], decays, tuple(args.configs), tuple(args.compare), args.cuda_graph, device)
        print(f"\n## {name}")
        out = SECTIONS[name].run(request)
        if name == "table":  # at the top level, where the JSON of the table alone has always had it
            result.update(out)
        else:
            result[name] = out
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=str)
    return 0


__all__ = ["PROVIDERS", "SECTIONS", "Shape", "bench", "check_config_spec", "configure", "floor_bytes", "floor_flops",
           "format_table", "make_inputs", "parse_config_spec", "replay_of", "run", "time_provider"]
