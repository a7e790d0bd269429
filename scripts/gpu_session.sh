#!/usr/bin/env bash
# One device call (about 10 min of one H100): the GPU tests (kernels after the redesign, the one-token decode
# kernel, the graphed step, runs trained together: its xfail test decides whether the refusal can be lifted),
# then the paper sweep resumed from the committed export, one run per process, stopped (SIGINT, resumable) before
# the call's limit; its database and run files come back in $OUT/paper.tgz. Wheels for missing packages in .whl/.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1
DEADLINE=${DEADLINE:-560}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee $OUT/card.txt
if [ "${TESTS:-1}" = 1 ]; then
  timeout 200 python3 -m pytest -m gpu -q -rxX tests/ops/test_triton_gpu.py tests/ops/test_triton_decode.py \
    tests/training tests/bench > $OUT/gpu-tests.log 2>&1
  tail -8 $OUT/gpu-tests.log
fi
mkdir -p /tmp/paper
if [ -f carry/paper.tgz ]; then tar xzf carry/paper.tgz -C /tmp/paper; IMPORT=""; else IMPORT="--import docs/results/paper.jsonl"; fi
LEFT=$((DEADLINE - SECONDS - 25))
( time timeout -s INT $LEFT python3 -m decaylab sweep paper --out /tmp/paper $IMPORT --devices cuda:0 ) > $OUT/sweep.log 2>&1
tail -4 $OUT/sweep.log
cd /tmp/paper && tar czf $OUT/paper.tgz results.sqlite sweep.json logs $(ls -d runs/*/ | while read d; do for f in config.json summary.json eval.json metrics.jsonl; do [ -f $d$f ] && echo $d$f; done; done)
