#!/usr/bin/env bash
# Issue #17's depth check: does one distilled step keep a smaller share of full fine-tuning on a shallower
# model? The bundled all-MiniLM-L6-v2 is cut to its first 3 layers (bench/truncated_model.py), then the
# long-average99 recipe (SL+AL, 4,500 outer steps at outer lr 0.03, 20 learners on validation) and full-data
# fine-tuning (AdamW 5e-5, stopped on dev, the study's full row) run on it, with the pooler at [CLS] (the
# paper) and with mean pooling (beyond the paper: the truncated model's pooler was trained on layer 6's
# output, mean pooling reads layer 3's tokens directly), beside the 6-layer model under mean pooling.
# The 6-layer model with the pooler is the study's (full row) and ablation's (long-average99) own, and its
# one step under mean pooling the ablation's pool-mean-long (seed 1: bench/ablation.sh pool-mean-long-seed1).
#   bash bench/depth_check.sh        # rows whose JSON exists are skipped: a re-run resumes
set -u
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
OUT=${OUT:-docs/ablation/depth}
MODEL=${MODEL:-${TMPDIR:-/tmp}/minilm-l3}
THREADS=${THREADS:-1}
mkdir -p "$OUT"
[ -f "$MODEL/config.json" ] || python bench/truncated_model.py --layers 3 --out "$MODEL" || exit 1
DISTILL=(--preset cpu --task sst2 --data-dir "$DATA" --threads "$THREADS" --no-baselines --eval-learners 4
         --final-learners 20 --dev-learners 10 --json --outer-steps 4500 --lr 0.03 --eval-every 375 --budget-draws 4500)
FULL=(--kind full --task sst2 --data-dir "$DATA" --threads "$THREADS" --epochs 3)

run() {   # name, command...
  local name=$1; shift
  [ -f "$OUT/$name.json" ] && { echo "skip $name (done)"; return; }
  echo "$(date -u +%H:%M:%S) start $name"
  "$@" --out "$OUT/$name.json" > "/tmp/depth-$name.log" 2>&1 || echo "FAILED $name (see /tmp/depth-$name.log)"
}

run full-l3 python -m distill_core baseline "${FULL[@]}" --model "$MODEL" --full-learners 2
run long-average99-l3 python bench/time_to_accuracy.py "${DISTILL[@]}" --model "$MODEL"
run long-average99-l3-mean python bench/time_to_accuracy.py "${DISTILL[@]}" --model "$MODEL" --pooling mean
run long-average99-l3-mean-seed1 python bench/time_to_accuracy.py "${DISTILL[@]}" --model "$MODEL" --pooling mean --seed 1
run full-l3-mean python -m distill_core baseline "${FULL[@]}" --model "$MODEL" --pooling mean --full-learners 1
run full-l6-mean python -m distill_core baseline "${FULL[@]}" --pooling mean --full-learners 1
run full-l3-mean-seed1 python -m distill_core baseline "${FULL[@]}" --model "$MODEL" --pooling mean --full-learners 1 --seed 1
