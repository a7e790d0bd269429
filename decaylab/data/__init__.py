"""Data: corpora -> tokenizer -> memory-mapped token arrays -> batches.

```python
from decaylab.data import DataConfig, build_dataset
data = build_dataset(DataConfig())                     # Penn Treebank, word level, no network needed
x, y = data.train_batch(step=0, batch_size=8, seq_len=256, seed=0)             # LongTensors [8, 256]
for x, y in data.eval_batches("valid", seq_len=256, batch_size=8): ...         # y == -100: no loss
data.vocab_size, data.word_level, data.bytes_in_split("test"), data.split("train")  # np.memmap of ids
```

Corpora (``data.corpus``): ``ptb``, ``text`` (local files, byte-level BPE), ``hf`` (`datasets`), ``mqar``.
Corpora are streamed into the cache with bounded memory (``data.max_tokens`` takes the head of a large one);
``decaylab prepare`` does it ahead of training. See docs/data.md.
"""

from decaylab.lazy import lazy_exports

# Names resolve on first use, so importing one submodule (a command-line module, say) does not import
# torch and the rest of the package.
_EXPORTS = {
    "DataConfig": "decaylab.data.config",
    "build_dataset": "decaylab.data.build",
    "CORPORA": "decaylab.data.build",
    "RUN_TOKENIZER": "decaylab.data.build",
    "cache_root": "decaylab.data.cache",
    "IGNORE_INDEX": "decaylab.data.dataset",
    "SPLITS": "decaylab.data.dataset",
    "TokenDataset": "decaylab.data.dataset",
    "MQARDataset": "decaylab.data.mqar",
    "MQARTask": "decaylab.data.mqar",
    "mqar_accuracy": "decaylab.data.mqar",
    "TOKENIZERS": "decaylab.data.tokenizer",
    "BPETokenizer": "decaylab.data.tokenizer",
    "IntegerTokenizer": "decaylab.data.tokenizer",
    "WordTokenizer": "decaylab.data.tokenizer",
    "load_tokenizer": "decaylab.data.tokenizer",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
