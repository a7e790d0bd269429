#!/usr/bin/env bash
# One device call: GPU tests of the graphed step and of runs trained together; K graphed ptb-small runs in one
# process against one alone; then the paper sweep resumed from the committed export, packed the way the
# measurement above says is fastest, stopped (SIGINT, resumable) before the call's limit and carried back in $OUT.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1
DEADLINE=${DEADLINE:-540}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee $OUT/card.txt
timeout 150 python3 -m pytest -m gpu tests/training/test_together.py tests/training/test_cuda_graph.py -q -x 2>&1 | tail -3 | tee $OUT/tests.log
TESTS_OK=${PIPESTATUS[0]}
timeout 180 python3 -m decaylab bench training --preset ptb-small --steps 1400 --set train.eval_every=0 \
  --set train.eval_batches=5 --together 1 4 8 --cuda-graph on --json $OUT/together.json > $OUT/together.log 2>&1
tail -6 $OUT/together.log
K=$(python3 - <<'PY'
import json, os
try:
    rows = json.load(open(os.environ["OUT"] + "/together.json"))["together"]
except Exception:
    print(1); raise SystemExit
one = next(r["tokens_per_s"] for r in rows if r["runs"] == 1)
best = max(rows, key=lambda r: r["tokens_per_s"])
print(best["runs"] if best["tokens_per_s"] > 1.2 * one else 1)
PY
)
[ "$TESTS_OK" = 0 ] || K=1
if [ "$K" = 1 ]; then N=12; else N=2; fi
W=cuda:0; for i in $(seq $((N - 1))); do W=$W,cuda:0; done
echo "paper sweep: $N workers, $K runs per worker" | tee $OUT/sweep.log
LEFT=$((DEADLINE - SECONDS - 25))
mkdir -p /tmp/paper
( time timeout -s INT $LEFT python3 -m decaylab sweep paper --out /tmp/paper --import docs/results/paper.jsonl \
  --devices $W --runs-per-worker $K ) >> $OUT/sweep.log 2>&1
tail -4 $OUT/sweep.log
cd /tmp/paper && tar czf $OUT/paper.tgz results.sqlite sweep.json logs $(ls -d runs/*/ | while read d; do for f in config.json summary.json eval.json metrics.jsonl; do [ -f $d$f ] && echo $d$f; done; done)
