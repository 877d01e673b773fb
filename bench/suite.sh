#!/usr/bin/env bash
# Every benchmark once, on whatever machine this is (a GPU server, say); one JSON file each.
#
#   bash bench/suite.sh DATA_DIR OUT_DIR [engine flags, e.g. --model PATH --threads 2]
#
# Each record is also appended, with its name, to $SUMMARY (default OUT_DIR/all.jsonl) as soon as
# it exists, so an interrupted suite keeps what it measured. QUICK=1 shrinks every run (a smoke
# test of the suite itself, not a measurement). SECTIONS picks parts (default: all of
# "outer bf16 evaluation memory tta"), e.g. SECTIONS="outer memory" on a short GPU lease.
set -euo pipefail
DATA=$(realpath "$1"); OUT=$(realpath -m "$2"); shift 2
mkdir -p "$OUT"
SUMMARY=$(realpath -m "${SUMMARY:-$OUT/all.jsonl}")
cd "$(dirname "$0")"
Q=${QUICK:-0}
PY=${PYTHON:-python3}
steps() { if [ "$Q" = 1 ]; then echo 2; else echo "$1"; fi; }
run() {  # name script args...: keep the last line (the JSON record) only when the run succeeded
  local name=$1; shift
  echo "== $name" >&2
  if "$PY" "$@" --data-dir "$DATA" --json "${EXTRA[@]}" > "$OUT/$name.log" 2>&1; then
    tail -1 "$OUT/$name.log" > "$OUT/$name.json"
    "$PY" -c 'import json, sys; r = json.load(open(sys.argv[1])); print(json.dumps({"name": sys.argv[2], **r}))' \
        "$OUT/$name.json" "$name" >> "$SUMMARY"
  else
    echo "   failed, see $OUT/$name.log" >&2
  fi
}
EXTRA=("$@")
SECTIONS=" ${SECTIONS:-outer bf16 evaluation memory tta} "
want() { [[ "$SECTIONS" == *" $1 "* ]]; }
S=(--task sst2 --samples-per-class 1 --real-batch 32 --label-type soft --attention-labels cls)
for lt in "64 1" "128 1" "128 3" "128 5" "512 1"; do
  want outer || break
  set -- $lt
  for impl in engine reference; do
    run "outer_L$1_T$2_$impl" outer_step.py "${S[@]}" --seq-len "$1" --inner-steps "$2" \
        --outer-steps "$(steps 10)" --impl "$impl"
  done
done
for T in 1 3; do
  want bf16 || break
  run "outer_L128_T${T}_engine_bf16" outer_step.py "${S[@]}" --seq-len 128 --inner-steps "$T" \
      --outer-steps "$(steps 10)" --autocast bfloat16 --init real --attention-init model
done
want evaluation && run evaluation evaluation.py --task sst2 --seq-len 64 --init real --learners "$(steps 100)" \
    --plain-learners "$(steps 10)" --distilled ../docs/reproduction/runs/sst2-sl-al-1x1/checkpoints/last.safetensors
M=(--task sst2 --seq-len 128 --real-batch 32 --label-type soft --attention-labels cls --different-data-per-step
   --inner-memory recompute --outer-steps "$(steps 3)" --warmup 1)
want memory && run memory_T1 outer_step.py "${M[@]}" --samples-per-class 1 --inner-steps 1
for T in 10 20; do
  want memory || break
  for c in 1 0; do
    run "memory_T${T}_copies$c" outer_step.py "${M[@]}" --samples-per-class "$T" --inner-steps "$T" \
        --recompute-copies "$c"
  done
done
want tta && run time_to_accuracy time_to_accuracy.py --task sst2 --samples-per-class 1 --inner-steps 1 --seq-len 64 \
    --outer-steps "$(steps 3000)" --budget-minutes "${BUDGET_MINUTES:-3}" --eval-every 500 --eval-learners 4 \
    --eval-rows 300 --no-eval-at-start --final-learners 20 --init real --attention-init model \
    --inner-lr-init 0.3 --lr 0.01 --label-type hard --attention-labels cls --schedule linear
echo "results in $OUT" >&2
