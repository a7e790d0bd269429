#!/usr/bin/env bash
# Device call 2: where a standalone run's time goes, whether runs packed on one card overlap, then the paper sweep
# (stopped by SIGINT before the call's limit; results packed into $OUT so the next call resumes them).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1
SWEEP_SECONDS=${SWEEP_SECONDS:-380}
mkdir -p /tmp/paper
[ -f carry/paper.tgz ] && tar xzf carry/paper.tgz -C /tmp/paper
python3 -m cProfile -o /tmp/train.prof -m decaylab train --preset ptb-small --out /tmp/r1 --set train.progress=false >/dev/null 2>&1
python3 -c "import pstats; pstats.Stats('/tmp/train.prof').sort_stats('cumtime').print_stats(45)" > $OUT/profile.txt
grep -E "function calls|cumtime" -A45 $OUT/profile.txt | cut -c1-150 | head -60
for K in 1 6; do
  for i in $(seq $K); do
    python3 -m decaylab bench training --preset ptb-small --steps 3000 --cuda-graph on > /tmp/conc-$K-$i.log 2>&1 &
  done
  wait
  echo "K=$K: $(grep -h 'round 1' /tmp/conc-$K-*.log | sed 's/.*round 1: //' | tr '\n' ';')"
done
W=cuda:0; for i in $(seq 11); do W=$W,cuda:0; done
nvidia-smi dmon -s u -c 40 > $OUT/dmon.txt 2>&1 &
( time timeout -s INT $SWEEP_SECONDS python3 -m decaylab sweep paper --out /tmp/paper --devices $W ) > $OUT/sweep.log 2>&1
tail -4 $OUT/sweep.log
cd /tmp/paper && tar czf $OUT/paper.tgz results.sqlite sweep.json logs $(ls -d runs/*/ | while read d; do for f in config.json summary.json eval.json metrics.jsonl; do [ -f $d$f ] && echo $d$f; done; done)
ls -la $OUT
