"""Register decaylab with transformers' auto classes, without importing transformers for it.

``import decaylab`` calls ``register_when_imported()``: if transformers' auto modules are already loaded, the
config and model are registered at once; otherwise a one-shot import hook registers each right after transformers
loads the matching auto module (``AutoConfig``: configuration_auto, ``AutoModelForCausalLM``: modeling_auto), so a
process that never uses transformers never pays for it.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from typing import Callable

CONFIG_MODULE = "transformers.models.auto.configuration_auto"
MODEL_MODULE = "transformers.models.auto.modeling_auto"


def register_config() -> None:
    importlib.import_module("decaylab.hf.configuration")  # registers itself


def register_model() -> None:
    # Importing a module returns it even while it is still executing (transformers may load its auto module from
    # within our own import of it); the module then registers itself when it finishes.
    importlib.import_module("decaylab.hf.modeling")


def register() -> None:
    """Register DecayLabConfig and DecayLabForCausalLM now (imports transformers)."""
    register_model()


def _safely(callback: Callable[[], None]) -> None:
    try:
        callback()
    except Exception as e:  # an incompatible transformers must not break the user's own import of it
        warnings.warn(f"decaylab could not register with transformers ({type(e).__name__}: {e}); "
                      f"load exported models with trust_remote_code=True", stacklevel=2)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs a callback right after a module's first import finishes (a post-import hook), once per module."""

    def __init__(self, callbacks: dict[str, Callable[[], None]]):
        self.callbacks = callbacks
        self.searching = False

    def find_spec(self, name, path=None, target=None):
        if name not in self.callbacks or self.searching:
            return None
        self.searching = True  # let the real finders locate the module
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self.searching = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        callback = self.callbacks.pop(name)
        if not self.callbacks:
            sys.meta_path.remove(self)
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            _safely(callback)

        spec.loader.exec_module = exec_then_register  # this loader instance serves this one import only
        return spec


def register_when_imported() -> None:
    pending = {}
    for module, callback in ((CONFIG_MODULE, register_config), (MODEL_MODULE, register_model)):
        if module in sys.modules:
            _safely(callback)
        else:
            pending[module] = callback
    if pending and not any(isinstance(f, _AfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(pending))
