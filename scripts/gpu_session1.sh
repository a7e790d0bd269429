#!/usr/bin/env bash
# One device call: GPU tests of the graphed step, ptb-small eager vs graphed, encodings side by side, a packed
# smoke sweep for the per-run fixed cost.
set -x
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu --format=csv
python3 -m pytest -m gpu tests/training/test_cuda_graph.py -q -x 2>&1 | tail -15
python3 -m decaylab bench training --preset ptb-small --steps 1400 --cuda-graph off on --json $OUT/ptb_small.json 2>&1 | tail -8
python3 -m decaylab bench training --preset ptb-small --steps 300 --set model.decay.granularity=vector \
  --variants "" "model.pos=rope" "model.pos=lrpe" "model.pos=tpe" "model.mixer=softmax,model.pos=rope" "model.mixer=softmax" \
  --cuda-graph on --json $OUT/pos.json 2>&1 | tail -9
/usr/bin/time -v python3 -m decaylab train --preset ptb-small --out /tmp/r1 --set train.progress=false 2>&1 | grep -E "Elapsed|Maximum resident" 
cat /tmp/r1/summary.json
/usr/bin/time -f "eval wall %e s" python3 -m decaylab eval /tmp/r1 2>&1 | tail -4
python3 -c "import json; d=json.load(open('/tmp/r1/eval.json')); print({k: d[k] for k in d if 'ppl' in k or 'time' in k})"
time python3 -m decaylab sweep paper --study sharing --out /tmp/sw --devices cuda:0,cuda:0,cuda:0,cuda:0,cuda:0,cuda:0,cuda:0,cuda:0 --set train.max_steps=50 2>&1 | tee $OUT/sweep.log | tail -3
python3 - <<'PY'
import json, glob
for f in sorted(glob.glob('/tmp/sw/runs/*/summary.json'))[:6]:
    s = json.load(open(f)); e = json.load(open(f.replace('summary','eval')))
    print(f.split('/')[-2], s['train_time_s'], s['tokens_per_s'], e.get('eval_time_s'))
PY
