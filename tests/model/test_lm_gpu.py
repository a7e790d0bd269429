"""DecayLM on a CUDA GPU with the Triton kernels: torch.compile over the model gives eager's loss and gradients.

Skipped without CUDA (the ``gpu`` marker).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from decaylab import DecayLM, ModelConfig


def _loss_and_grads(model, ids):
    logits = model(ids[:, :-1])
    loss = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
    grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])
    return loss.detach(), grads


@pytest.mark.gpu
@pytest.mark.parametrize("overrides", [{"decay.kind": "simple", "decay.granularity": "vector"},
                                       {"decay.kind": "mamba2", "decay.granularity": "scalar"}],
                         ids=["vector", "scalar"])
def test_compiled_model_matches_eager_on_triton_kernels(overrides):
    torch.manual_seed(0)
    model = DecayLM(ModelConfig.from_preset("tiny", overrides)).cuda().set_backend("triton")
    ids = torch.randint(0, model.cfg.vocab_size, (2, 301), device="cuda")
    loss, grads = _loss_and_grads(model, ids)
    compiled_loss, compiled_grads = _loss_and_grads(torch.compile(model), ids)
    assert torch.isfinite(compiled_loss)
    torch.testing.assert_close(compiled_loss, loss, rtol=1e-4, atol=1e-5)
    for g, ref in zip(compiled_grads, grads):
        torch.testing.assert_close(g, ref, rtol=1e-3, atol=1e-5)
