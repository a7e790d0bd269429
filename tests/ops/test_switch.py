"""The switch between a fast path on CUDA and the torch code, and the three places that use it."""

from __future__ import annotations

import pytest
import torch

from decaylab.layers import projections
from decaylab.ops import norm, positional
from decaylab.ops.switch import DeviceSwitch


def test_the_switch_is_on_for_cuda_by_default_and_forced_within_a_context():
    switch = DeviceSwitch()
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert switch.on(cuda) and not switch.on(cpu)
    with switch.forced(True):
        assert switch.on(cpu) and switch.on(cuda)
        with switch.forced(False):
            assert not switch.on(cuda) and switch.mode is False
        assert switch.mode is True
    assert switch.mode is None


def test_the_switch_comes_back_after_an_error():
    switch = DeviceSwitch()
    with pytest.raises(RuntimeError), switch.forced(False):
        raise RuntimeError
    assert switch.mode is None


@pytest.mark.parametrize("module, force", [(positional, positional.use_kernels), (norm, norm.use_kernels),
                                           (projections, projections.fuse)], ids=["positional", "norm", "projections"])
def test_each_switch_restores_its_mode(module, force):
    with force(False):
        with force(True):
            assert module._switch.mode is True
        assert module._switch.mode is False
    assert module._switch.mode is None
