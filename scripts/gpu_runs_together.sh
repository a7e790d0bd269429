#!/usr/bin/env bash
# On a GPU machine: the GPU tests of the graphed step and of runs trained together, then K graphed ptb-small runs
# in one process against one alone (decaylab bench training --together). Wheels for missing packages in .whl/.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
python3 -m pytest -m gpu tests/training/test_together.py tests/training/test_cuda_graph.py -q -x 2>&1 | tail -3
python3 -m decaylab bench training --preset ptb-small --steps 1400 --set train.eval_every=0 --set train.eval_batches=5 \
  --together 1 4 8 --cuda-graph on --json $OUT/together.json 2>&1 | tee $OUT/together.log | tail -8
