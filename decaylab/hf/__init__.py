"""decaylab models in Hugging Face transformers and lm-evaluation-harness (the ``hf`` extra).

    decaylab export RUN_DIR --format hf --out DIR     a transformers model folder (``decaylab.hf.export``)
    AutoModelForCausalLM.from_pretrained(DIR)         after ``import decaylab`` (or with trust_remote_code=True)
    decaylab eval RUN_DIR --lm-eval TASKS             lm-evaluation-harness in-process (``decaylab.hf.harness``)

Importing this package is free: transformers is imported by the submodules only (configuration, modeling, cache,
tokenizer, export, harness). See docs/huggingface.md.
"""
