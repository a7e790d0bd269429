import pytest

from decaylab.registry import Registry


def test_registry_lookup_and_suggestions():
    reg = Registry("decay kind")
    reg.register("mamba2")(1)
    reg.register("simple")(2)
    assert reg.get("simple") == 2 and reg.names() == ["mamba2", "simple"] and "mamba2" in reg
    with pytest.raises(ValueError, match="Did you mean 'mamba2'"):
        reg.get("mamba")
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("simple")(3)
