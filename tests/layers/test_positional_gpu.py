"""Models with RoPE or LRPE train the same on the positional kernels as on the torch code (``gpu`` marker).

The kernels give the torch code's bits (tests/ops/test_positional_triton.py); here a whole model, eager and in a
graphed training run, must follow the torch code's losses.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from decaylab import DecayLM, ModelConfig
from decaylab.ops.positional import use_kernels

pytestmark = pytest.mark.gpu


def _steps(model: DecayLM, batches: list[torch.Tensor]) -> list[float]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for ids in batches:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("mixer, pos", [("linear", "rope"), ("linear", "lrpe"), ("softmax", "rope"),
                                        ("softmax", "lrpe")])  # fmt: skip
def test_model_trains_the_same_on_kernels_and_torch_code(mixer, pos, monkeypatch):
    from decaylab.ops.triton import positional as kernels

    torch.manual_seed(0)
    cfg = ModelConfig.from_preset("tiny", {"mixer": mixer, "pos": pos, "d_model": 64, "ffn_dim": 128})  # head dim 32
    model = DecayLM(cfg).cuda()
    twin = copy.deepcopy(model)
    batches = [torch.randint(0, cfg.vocab_size, (4, 130), device="cuda") for _ in range(5)]
    with use_kernels(False):
        want = _steps(model, batches)
    calls = []
    launch = kernels._launch
    monkeypatch.setattr(kernels, "_launch", lambda pairs, *a, **kw: (calls.append(len(pairs)), launch(pairs, *a, **kw)))
    got = _steps(twin, batches)
    assert len(calls) == 2 * cfg.n_layers * len(batches)  # forward and backward per layer and step
    torch.testing.assert_close(torch.tensor(got), torch.tensor(want), rtol=1e-3, atol=0)
    for a, b in zip(twin.parameters(), model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-4)


@pytest.mark.parametrize("pos", ["rope", "lrpe"])
def test_graphed_run_on_kernels_follows_the_eager_torch_curve(tmp_path, pos):
    from decaylab.rundir import read_metrics
    from decaylab.training.loop import train
    from tests.training.training_helpers import small_run

    run = {"train.device": "cuda", "model.dropout": 0.0, "train.max_steps": 12, "train.eval_every": 6,
           "train.precision": "bf16", "model.pos": pos}
    with use_kernels(False):
        train(small_run(**run, **{"train.cuda_graph": "off"}), tmp_path / "eager")
    train(small_run(**run, **{"train.cuda_graph": "on"}), tmp_path / "graphed")
    eager, graphed = (read_metrics(tmp_path / name) for name in ("eager", "graphed"))
    assert [r["step"] for r in graphed] == [r["step"] for r in eager] and len(eager) == 12
    for a, b in zip(eager, graphed):
        torch.testing.assert_close(torch.tensor([b["loss"], b["grad_norm"]]), torch.tensor([a["loss"], a["grad_norm"]]),
                                   rtol=3e-2, atol=0)
