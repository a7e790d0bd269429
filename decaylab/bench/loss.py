"""``decaylab bench ops --compare loss``: the language-model loss from hidden states, forward + backward, the plain
formula (logits, then cross-entropy) against the cache-sized blocks of ``decaylab.ops.linear_cross_entropy``."""

from __future__ import annotations

from decaylab.bench.cpu_timing import best_cpu_seconds

# tokens x d x vocab: the quick study's tiny model on PTB, ptb-small, and a 160m-wide model on the paper's vocabulary
LOSS_SHAPES = ("1024x64x10000", "2048x256x10000", "2048x768x50304")


def compare_loss(shapes, repeats) -> list[dict]:
    """The LM loss from hidden states, forward + backward: the plain formula against the cache-sized blocks."""
    import torch

    from decaylab.ops import linear_cross_entropy as lce

    rows = []
    for text in shapes:
        try:
            N, D, V = (int(x) for x in text.lower().split("x"))
        except ValueError:
            raise ValueError(f"--compare loss takes tokens x d x vocab such as 1024x64x10000; got {text!r}") from None
        g = torch.Generator().manual_seed(0)
        x = torch.randn(N, D, generator=g, requires_grad=True)
        w = (torch.randn(V, D, generator=g) * 0.02).requires_grad_()
        y = torch.randint(0, V, (N,), generator=g)

        def call(fn):
            def fwd_bwd():
                x.grad = w.grad = None
                fn(x, w, y).backward()
            return fwd_bwd

        ms = {n: 1e3 * t for n, t in best_cpu_seconds({n: call(getattr(lce, n)) for n in ("reference", "chunked")},
                                                        repeats).items()}  # fmt: skip
        # Times to 4 decimals: a small shape takes a few hundredths of a millisecond, and times rounded to 2 would
        # no longer give back the speedup (computed from the unrounded times).
        row = {"shape": f"N{N}·d{D}·V{V}", "rows_per_block": lce.rows_per_block(V),
               **{f"{n}_ms": round(t, 4) for n, t in ms.items()}, "speedup": round(ms["reference"] / ms["chunked"], 2)}
        print(" ".join(f"{key} {value}" for key, value in row.items()), flush=True)
        rows.append(row)
    return rows
