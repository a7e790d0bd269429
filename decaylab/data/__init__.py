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
``python -m decaylab.data.prepare`` does it ahead of training. See docs/data.md.
"""

from decaylab.data.build import CORPORA, RUN_TOKENIZER, build_dataset
from decaylab.data.cache import cache_root
from decaylab.data.config import DataConfig
from decaylab.data.dataset import IGNORE_INDEX, SPLITS, TokenDataset
from decaylab.data.mqar import MQARDataset, MQARTask, mqar_accuracy
from decaylab.data.tokenizer import TOKENIZERS, BPETokenizer, IntegerTokenizer, WordTokenizer, load_tokenizer

__all__ = [
    "DataConfig", "build_dataset", "CORPORA", "RUN_TOKENIZER", "cache_root", "IGNORE_INDEX", "SPLITS",
    "TokenDataset", "MQARDataset", "MQARTask", "mqar_accuracy", "TOKENIZERS", "BPETokenizer",
    "IntegerTokenizer", "WordTokenizer", "load_tokenizer",
]
