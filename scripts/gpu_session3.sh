#!/usr/bin/env bash
# Device call 3: encodings side by side (warmed up), then resume the paper sweep from carry/paper.tgz.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1
SWEEP_SECONDS=${SWEEP_SECONDS:-420}
mkdir -p /tmp/paper && tar xzf carry/paper.tgz -C /tmp/paper
W=cuda:0; for i in $(seq 11); do W=$W,cuda:0; done
( time timeout -s INT $SWEEP_SECONDS python3 -m decaylab sweep paper --out /tmp/paper --devices $W ) > $OUT/sweep.log 2>&1 &
SWEEP=$!
sleep 1
wait $SWEEP
tail -3 $OUT/sweep.log
cd /tmp/paper && tar czf $OUT/paper.tgz results.sqlite sweep.json logs $(ls -d runs/*/ | while read d; do for f in config.json summary.json eval.json metrics.jsonl; do [ -f $d$f ] && echo $d$f; done; done)
cd - >/dev/null
python3 -m decaylab bench training --preset ptb-small --steps 1000 --set model.decay.granularity=vector \
  --variants "" "model.pos=rope" "model.pos=lrpe" "model.pos=tpe" "model.mixer=softmax,model.pos=rope" "model.mixer=softmax" \
  --cuda-graph on --json $OUT/pos.json 2>&1 | tail -9
