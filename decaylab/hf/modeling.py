"""DecayLabForCausalLM: a decaylab ``DecayLM`` as a transformers causal LM (``PreTrainedModel`` + ``GenerationMixin``).

The wrapper owns one ``DecayLM`` (``self.model``) and adds nothing to its computation: ``forward`` is DecayLM's
forward, ``generate()`` steps it with a ``DecayLabCache``. Its weights are DecayLM's under the ``model.`` prefix.

    out = model(input_ids, labels=input_ids)        CausalLMOutputWithPast: loss (next-token, mean), logits
    out = model(input_ids, logits_to_keep=1)        logits of the last position only
    model.generate(**tokenizer(texts, return_tensors="pt", padding=True), max_new_tokens=20)

A left-padded batch (``attention_mask`` with zeros first) is prefilled row by row and decoded together, each row at
its own position (``decaylab.model.padding``); padding on the right needs nothing, as the model is causal.
Importing this module registers the class with ``AutoModelForCausalLM``.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from decaylab.hf.cache import DecayLabCache
from decaylab.hf.configuration import DecayLabConfig
from decaylab.model.lm import DecayLM
from decaylab.model.padding import left_padding, prefill_left_padded


class DecayLabForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = DecayLabConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules = ["Block"]
    _is_stateful = True  # recurrent state: generation strategies that rewind the cache are unavailable

    def __init__(self, config: DecayLabConfig, model: DecayLM | None = None):
        super().__init__(config)
        self.model = model if model is not None else DecayLM(config.model_config())
        self.post_init()

    @classmethod
    def from_decaylm(cls, model: DecayLM, **config_kwargs) -> "DecayLabForCausalLM":
        """Wrap an existing DecayLM (shares its modules and weights; nothing is copied)."""
        return cls(DecayLabConfig.from_model_config(model.cfg, **config_kwargs), model=model)

    def _init_weights(self, module):
        # DecayLM initializes itself when built; from_pretrained then loads every weight. transformers' generic
        # init would overwrite DecayLM's (trained or paper-initialized) weights, so it is left out.
        pass

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # forward creates its own DecayLabCache

    def get_input_embeddings(self):
        return self.model.embed

    def set_input_embeddings(self, value):
        self.model.embed = value

    def get_output_embeddings(self):
        return self.model.lm_head

    def set_output_embeddings(self, value):
        self.model.lm_head = value

    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                cache: DecayLabCache | None = None, labels: torch.LongTensor | None = None,
                use_cache: bool | None = None, logits_to_keep: int | torch.Tensor = 0,
                inputs_embeds: torch.Tensor | None = None, return_dict: bool | None = None,
                past_key_values: DecayLabCache | None = None, **kwargs) -> CausalLMOutputWithPast | tuple:
        """``use_cache``: return a cache to continue from (default: only when one was passed in).

        ``past_key_values`` is the name transformers used for ``cache`` before 5.x; either is accepted.
        """
        if inputs_embeds is not None or input_ids is None:
            raise ValueError("decaylab models take input_ids (inputs_embeds is not supported)")
        cache = cache if cache is not None else past_key_values
        if cache is not None and not isinstance(cache, DecayLabCache):
            raise ValueError(f"cache must be a DecayLabCache (got {type(cache).__name__}); leave it out and the model "
                             f"creates one")
        use_cache = cache is not None if use_cache is None else use_cache
        state = None if cache is None else cache.state
        pad = None
        if attention_mask is not None:
            if state is None:
                pad = left_padding(attention_mask)
                if pad is None and use_cache and not bool(attention_mask[:, -1].bool().all()):
                    raise ValueError("a cache would hold the right padding of these prompts; pad them on the left "
                                     "(tokenizer.padding_side = 'left') to continue from them")
            elif not bool(attention_mask[:, -input_ids.shape[1] :].bool().all()):
                raise ValueError("tokens after the prompt must all be real (attention_mask 1); pad prompts on the left")
        if pad is not None:
            keep = logits_to_keep if isinstance(logits_to_keep, int) else 0
            logits, new_state = prefill_left_padded(self.model, input_ids, pad, keep)
            if isinstance(logits_to_keep, torch.Tensor):
                logits = logits[:, logits_to_keep]
        elif use_cache:
            logits, new_state = self.model(input_ids, cache=state, use_cache=True, logits_to_keep=logits_to_keep)
        else:
            logits, new_state = self.model(input_ids, logits_to_keep=logits_to_keep), None
        if use_cache:
            cache = cache if cache is not None else DecayLabCache()
            cache.advance(new_state, input_ids.shape[1])
        else:
            cache = None
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        out = CausalLMOutputWithPast(loss=loss, logits=logits, cache=cache)
        return out if return_dict is None or return_dict else out.to_tuple()


AutoModelForCausalLM.register(DecayLabConfig, DecayLabForCausalLM, exist_ok=True)  # defining the class registers it
