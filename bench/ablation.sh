#!/usr/bin/env bash
# The lever ablation of issue #17 on SST-2 from the cpu preset (SL+AL unless a row says otherwise). Every
# row of a group does the same work (BUDGET exact hypergradients = outer steps x meta-batch), is chosen on
# the whole dev split (10 learners) and reported on the validation split (20 learners).
#   bash bench/ablation.sh [names...]       # rows already in docs/ablation/ are skipped: a re-run resumes
#   LANES=2 bash bench/ablation.sh          # two rows at a time, one thread each (2 cores, no contention)
#   RUNS=runs/ablation bash bench/ablation.sh ROW   # also keep each row's run (checkpoints) to score it again;
#                                                   # a row whose run is there resumes from its last evaluation
set -u
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
OUT=${OUT:-docs/ablation}
LANES=${LANES:-1}
THREADS=${THREADS:-$((2 / LANES))}
COMMON=(--preset cpu --task sst2 --data-dir "$DATA" --threads "$THREADS" --no-baselines --eval-learners 4
        --final-learners 20 --dev-learners 10 --json --eval-every 150)
# name | flags (the one-step group: 1200 draws; the multi-step group: 600 outer steps, T=10: 300; the long
# pair: 4500 draws at the study's SST-2 outer lr, the '-long' rows' budget; the 1500 pair: how soon the
# real-fill init reaches that budget's plateau, and the teacher pair (--teacher-weight 1 and 0.5, beyond the
# paper) against real-1500, and teacher-long against long-average99; the mrpc rows: MRPC SL+AL at three
# times the study's 300 steps; long-ms-3x3-diff: SL+AL 3x3 with different data at about the CPU of the long
# pair, a T = 3 step costing about 2.4 of T = 1; long-seq128 and long-random-init: L = 128, and the paper's
# random inits, on the long budget; long-lr-attention: the attention labels' outer lr at 0.1, the rest at 0.03;
# long-lr-embeds: the embeddings' outer lr at 0.01, the rest at 0.03; long-average999: the average at 0.999;
# long-meta2: two heads and real batches per hypergradient, half the steps; long-adamw: AdamW, decay 0.01;
# long-2shot: two samples per class (four in all) in the one step, beside the 1-shot rows, not the paper's 1x1;
# long-unrestricted: the paper's third label type; long-attn-all: attention labels for every query, not [CLS] only,
# and long-attn-all-mean the same with mean pooling, whose head reads every token those labels shape;
# long-lr01 and long-lr01-linear: the top of the paper's outer-lr grid (1e-1), flat and with its linear decay,
# the latter on seeds 1 and 2 too; mid-10shot: ten samples per class (twenty in all) in the one step on the 1,500
# budget beside real-1500, a check of whether the count of synthetic samples holds the plateau, not the paper's 1x1;
# long6000-lr01-linear (seeds 0-2): long-lr01-linear over 6,000 steps, the most a one-thread run fits in the issue's 60 CPU
# minutes a seed at 0.57 s a step; long6000-lr01-linear-hl and -seq32 (seeds 0-2): the same with hard labels
# (HL+AL), and with L = 32 instead of 64, which makes a step cheaper; pool-mean-long-seed1: the 6-layer side
# of bench/depth_check.sh on a second seed; long7000-lr01-linear-seq32 (seeds 0-1): L = 32 over the 7,000 steps
# its cheaper step (0.50 s) fits in the same 60 CPU minutes, since over 3 seeds L = 32 and 64 tie on 6,000 steps;
# hour-sent10 and hour-batch64: LONGEST's lr and schedule with sentences of 10 words or more, and with a real
# batch of 64, each over the steps its dearer step fits in the same 60 CPU minutes (0.83 and 0.88 s a step alone
# at one thread on an AMD EPYC, against 0.58 for LONGEST: 4,200 and 4,000 steps); hour-lr03: LONGEST at the outer
# lr 0.3; hour-meta2: two heads and real batches per hypergradient (the unit data-parallel runs split), so half
# of LONGEST's steps for the same 6,000 hypergradients; hour-batch16 (seeds 0-1): a real batch of 16, whose cheaper
# step (0.48 s against 0.67 for LONGEST, alone at one thread on an AMD EPYC) fits 8,400 steps in the same CPU;
# hour-bf16real (seeds 0-1): LONGEST with its real-batch pass under bf16 autocast (--real-precision bfloat16, beyond
# the paper), whose cheaper step (0.48 s against 0.56, alone at one thread on an AMD EPYC) fits 7,000 steps;
# hour-features and hour-features-w01: LONGEST with feature labels (--feature-labels pooled, beyond the paper: a
# learned target of each sample's pooled output in the inner loss) at mu 1 and 0.1 (mu 1 sat at the majority
# class by step 500 and was stopped there, so it is not in ORDER); long8000-lr01-linear (seeds 0-2): LONGEST over
# the 8,000 steps 60 CPU minutes buy at one thread on the Intel Xeon of 2026-12-06 (0.43 s a step there, against
# 0.57 on the AMD EPYC LONGEST's step count was sized on; the record's train_cpu_seconds is the measured budget)
# hour-worddrop01 (seeds 0-2): LONGEST with 10 % of each real example's tokens dropped afresh every step
# (--real-word-dropout 0.1, beyond the paper): bench/one_step_ceiling.py found that one step holds every
# validation sentence when the data is tuned on them, so what limits validation is what the data learns
# from train, not what one step can hold; this asks whether data that cannot fit train's exact wording
# generalises further
# hour-synthnoise03, hour-modelnoise005 and hour-modelnoise01: LONGEST with each draw's inner steps on the
# synthetic embeddings plus Gaussian noise of 0.3 of their own std (--synthetic-noise 0.3), and from the
# pre-trained weights plus noise of 0.05 and 0.1 of each tensor's std (--model-noise, beyond the paper); the
# clean data is what is updated and scored. Regularisers of the data itself, after word dropout on the real
# side did not help; on long8000-lr01-linear's final data these strengths cost 0.4, 0.2 and 1.6 points of
# validation (8 learners) when applied at scoring time, so each perturbs the step without wrecking it
# hour-embcap15: LONGEST with each synthetic token vector fed to the model at a length of at most 1.5
# (--embed-max-norm 1.5, beyond the paper; a real word embedding's is ~1): uncapped, the vectors grow ~50x
# over a long run and drown the position embeddings, so the data holds no word order; capped, it keeps a
# real sentence's share of position
# hour-ms-3x3-diff (seeds 0-1): SL+AL 3x3 with different data per step (the paper's multi-step, 3 samples per
# class) on LONGEST's lr and schedule over the 3,300 steps its dearer step fits in the same 60 CPU minutes (a
# T = 3 step costs about 2.4 of T = 1: ~1.08 s at one thread on the Intel Xeon); long-ms-3x3-diff ran it at the
# long pair's constant 0.03 over 1,900 steps, before LONGEST's recipe existed
# hour-lr-head (seeds 0-1): LONGEST with one inner lr for the head and one for the encoder (--inner-lr-groups head,
# beyond the paper): the step anatomy (inspect --anatomy) found the head's own move adds nothing to the score
# at this budget, so the data may do better steering the two moves apart; lr-head ran it at 1,200 steps only
# the budgets most rows share; a row adds the one lever it measures (LONGEST: the best long recipe's lr and
# schedule over 6,000 steps, its seeds and the hour-* rows the only rows on that CPU)
ONE="--outer-steps 1200 --budget-draws 1200"
MID="--outer-steps 1500 --lr 0.03 --eval-every 375 --budget-draws 1500"
LONG="--outer-steps 4500 --lr 0.03 --eval-every 375 --budget-draws 4500"
LONGEST="--outer-steps 6000 --lr 0.1 --schedule linear --eval-every 500 --budget-draws 6000"
declare -A ROWS=(
  [base]="$ONE"
  [meta4]="--outer-steps 300 --meta-batch 4 --eval-every 38 --budget-draws 1200"
  [bound1]="$ONE --inner-lr-max 1.0"
  [frozen-lr]="$ONE --lr-inner-lr 0"
  [slow-lr]="$ONE --lr-inner-lr 0.001"
  [linear]="$ONE --schedule linear"
  [meta4-bound1]="--outer-steps 300 --meta-batch 4 --inner-lr-max 1.0 --eval-every 38 --budget-draws 1200"
  [seq128]="$ONE --seq-len 128"
  [seq256]="$ONE --seq-len 256"
  [outer-lr-3e-2]="$ONE --lr 0.03"
  [outer-lr-3e-3]="$ONE --lr 0.003"
  [hl-al]="$ONE --label-type hard"
  [attn-all]="$ONE --attention-labels all"
  [lambda3]="$ONE --attention-weight 3"
  [lambda03]="$ONE --attention-weight 0.3"
  [base-disjoint]="$ONE --dev-disjoint"
  [lr-layer-average99]="$ONE --inner-lr-groups layer"
  [init-fill]="$ONE --init real-fill"
  [long-init-fill]="$LONG --init real-fill"
  [fill-1500]="$MID --init real-fill"
  [real-1500]="$MID"
  [teacher-1500]="$MID --teacher-weight 1.0"
  [teacher05-1500]="$MID --teacher-weight 0.5"
  [teacher-long]="$LONG --teacher-weight 1.0"
  [long-seq128]="$LONG --seq-len 128"
  [long-random-init]="$LONG --init random --attention-init random"
  [long-lr-attention]="$LONG --lr-attention 0.1"
  [long-lr-embeds]="$LONG --lr-embeds 0.01"
  [long-average999]="$LONG --average 0.999"
  [long-meta2]="--outer-steps 2250 --meta-batch 2 --lr 0.03 --eval-every 188 --budget-draws 4500"
  [long-2shot]="$LONG --samples-per-class 2"
  [mid-10shot]="$MID --samples-per-class 10"
  [long-adamw]="$LONG --optimizer adamw --weight-decay 0.01"
  [long-unrestricted]="$LONG --label-type unrestricted"
  [long-attn-all]="$LONG --attention-labels all"
  [long-attn-all-mean]="$LONG --attention-labels all --pooling mean"
  [long-linear]="$LONG --schedule linear"
  [long-lr01]="$LONG --lr 0.1"
  [long-lr01-linear]="$LONG --lr 0.1 --schedule linear"
  [long6000-lr01-linear]="$LONGEST"
  [hour-worddrop01]="$LONGEST --real-word-dropout 0.1"
  [hour-synthnoise03]="$LONGEST --synthetic-noise 0.3"
  [hour-modelnoise005]="$LONGEST --model-noise 0.05"
  [hour-ms-3x3-diff]="--outer-steps 3300 --lr 0.1 --schedule linear --samples-per-class 3 --inner-steps 3 --different-data-per-step --split-inner-lr --eval-every 550 --budget-draws 3300"
  [hour-modelnoise01]="$LONGEST --model-noise 0.1"
  [hour-embcap15]="$LONGEST --embed-max-norm 1.5"
  [hour-lr-head]="$LONGEST --inner-lr-groups head"
  [long6000-lr01-linear-hl]="$LONGEST --label-type hard"
  [long6000-lr01-linear-seq32]="$LONGEST --seq-len 32"
  [long8000-lr01-linear]="${LONGEST//6000/8000}"    # LONGEST over 8,000 steps
  [long7000-lr01-linear-seq32]="${LONGEST//6000/7000} --seq-len 32"    # LONGEST over 7,000 steps
  [hour-sent10]="--outer-steps 4200 --lr 0.1 --schedule linear --eval-every 420 --budget-draws 4200 --train-min-words 10"
  [hour-batch64]="--outer-steps 4000 --lr 0.1 --schedule linear --eval-every 400 --budget-draws 4000 --real-batch 64"
  [hour-lr03]="${LONGEST/--lr 0.1/--lr 0.3}"
  [hour-meta2]="--outer-steps 3000 --meta-batch 2 --lr 0.1 --schedule linear --eval-every 250 --budget-draws 6000"
  [hour-batch16]="--outer-steps 8400 --lr 0.1 --schedule linear --eval-every 700 --budget-draws 8400 --real-batch 16"
  [hour-bf16real]="--outer-steps 7000 --lr 0.1 --schedule linear --eval-every 500 --budget-draws 7000 --real-precision bfloat16"
  [hour-features]="$LONGEST --feature-labels pooled"
  [hour-features-w01]="$LONGEST --feature-labels pooled --feature-weight 0.1"
  [long-lr-layer]="$LONG --inner-lr-groups layer"
  [batch128]="$ONE --real-batch 128"
  [sent10]="$ONE --train-min-words 10"
  [sent10-batch128]="$ONE --train-min-words 10 --real-batch 128"
  [sent10-lr-layer]="$ONE --train-min-words 10 --inner-lr-groups layer"
  [seq128-lr-layer]="$ONE --seq-len 128 --inner-lr-groups layer"
  [base-average99]="$ONE"
  [pool-mean]="$ONE --pooling mean"
  [pool-mean-sent10]="$ONE --pooling mean --train-min-words 10"
  [long-average99]="$LONG"
  [pool-mean-long]="$LONG --pooling mean"
  [lr-head]="$ONE --inner-lr-groups head"
  [lr-layer]="$ONE --inner-lr-groups layer"
  [mrpc-900-seed1]="--task mrpc --outer-steps 900 --lr 0.01 --budget-draws 900 --seed 1"
  [mrpc-900-lr03-seed1]="--task mrpc --outer-steps 900 --lr 0.03 --budget-draws 900 --seed 1"
  [long-ms-3x3-diff]="--outer-steps 1900 --lr 0.03 --samples-per-class 3 --inner-steps 3 --different-data-per-step --split-inner-lr --eval-every 475 --budget-draws 1900"
  [ms-1x1]="--outer-steps 600 --budget-draws 600"
  [ms-1x3-same]="--outer-steps 600 --inner-steps 3 --no-split-inner-lr --budget-draws 600"
  [ms-1x3-same-split]="--outer-steps 600 --inner-steps 3 --split-inner-lr --budget-draws 600"
  [ms-3x3-diff]="--outer-steps 600 --samples-per-class 3 --inner-steps 3 --different-data-per-step --no-split-inner-lr --budget-draws 600"
  [ms-3x3-diff-split]="--outer-steps 600 --samples-per-class 3 --inner-steps 3 --different-data-per-step --split-inner-lr --budget-draws 600"
  [ms-1x3-same-split-long]="--outer-steps 1800 --inner-steps 3 --split-inner-lr --budget-draws 1800"
  [ms-10x10-diff-split]="--outer-steps 300 --samples-per-class 10 --inner-steps 10 --different-data-per-step --split-inner-lr --eval-every 75 --budget-draws 300"
)
ORDER=(base lr-head lr-layer meta4 bound1 frozen-lr seq128 ms-1x1 ms-1x3-same ms-1x3-same-split attn-all ms-3x3-diff-split
       outer-lr-3e-2 lambda3 seq256 hl-al batch128 linear meta4-bound1 ms-3x3-diff outer-lr-3e-3 slow-lr
       ms-10x10-diff-split sent10 sent10-lr-layer ms-1x3-same-split-long sent10-batch128
       seq128-lr-layer base-average99 pool-mean pool-mean-sent10 pool-mean-long
       long-average99 long-average99-seed1 long-average99-seed2 lambda03 base-disjoint lr-layer-average99
       long-linear long-lr-layer init-fill long-init-fill init-fill-seed1 base-average99-seed1
       long-init-fill-seed1 fill-1500 real-1500 mrpc-900-seed1 mrpc-900-lr03-seed1
       long-ms-3x3-diff teacher-1500 teacher05-1500 teacher-long teacher-1500-seed1 real-1500-seed1
       long-seq128 long-random-init long-lr-attention long-lr-embeds long-average999 long-meta2
       long-adamw long-2shot long-unrestricted long-attn-all long-attn-all-mean long-lr01 long-lr01-linear
       long-lr01-linear-seed1 long-lr01-linear-seed2 mid-10shot long6000-lr01-linear
       long6000-lr01-linear-seed1 long6000-lr01-linear-seed2 pool-mean-long-seed1
       long6000-lr01-linear-hl long6000-lr01-linear-seq32 long6000-lr01-linear-hl-seed1
       long6000-lr01-linear-seq32-seed1 long6000-lr01-linear-hl-seed2 long6000-lr01-linear-seq32-seed2
       long7000-lr01-linear-seq32 long7000-lr01-linear-seq32-seed1 hour-sent10 hour-batch64
       hour-lr03 hour-meta2 hour-batch16 hour-batch16-seed1 hour-bf16real hour-bf16real-seed1
       hour-features-w01 hour-features-w01-seed1 hour-features-w01-seed2 long8000-lr01-linear
       long8000-lr01-linear-seed1 long8000-lr01-linear-seed2 hour-worddrop01 hour-worddrop01-seed1
       hour-worddrop01-seed2 hour-synthnoise03 hour-modelnoise005 hour-modelnoise01
       hour-embcap15 hour-modelnoise005-seed1 hour-modelnoise005-seed2 hour-ms-3x3-diff hour-ms-3x3-diff-seed1
       hour-lr-head hour-lr-head-seed1)
[ $# -gt 0 ] && ORDER=("$@")

# a row's flags; NAME-seedN, unless ROWS lists it, is row NAME on seed N (--seed also moves the data seed)
row_flags() {
  local name=$1
  if [ -n "${ROWS[$name]+set}" ]; then printf '%s' "${ROWS[$name]}"; return; fi
  if [[ $name =~ ^(.+)-seed([0-9]+)$ ]] && [ -n "${ROWS[${BASH_REMATCH[1]}]+set}" ]; then
    printf '%s --seed %s' "${ROWS[${BASH_REMATCH[1]}]}" "${BASH_REMATCH[2]}"; return
  fi
  echo "unknown row $name (not in bench/ablation.sh's ROWS, nor NAME-seedN of a row there)" >&2
  return 1
}

run_row() {
  local name=$1 flags
  flags=$(row_flags "$name") || return 0
  [ -f "$OUT/$name.json" ] && { echo "skip $name (done)"; return; }
  mkdir -p "$OUT/.claims"
  mkdir "$OUT/.claims/$name" 2>/dev/null || return 0    # another lane (or a runner before this one) has it
  echo "$(date -u +%H:%M:%S) start $name: $flags"
  # shellcheck disable=SC2086
  python bench/time_to_accuracy.py "${COMMON[@]}" $flags --out "$OUT/$name.json" \
    ${RUNS:+--run-dir "$RUNS/$name"} \
    > "/tmp/ablation-$name.log" 2>&1 &
  echo $! > "$OUT/.claims/$name/pid"
  wait $! || echo "FAILED $name (see /tmp/ablation-$name.log)"
  rm -rf "$OUT/.claims/$name"
  echo "$(date -u +%H:%M:%S) end $name"
}

lane() { for name in "${ORDER[@]}"; do run_row "$name"; done; }
# a claim whose process is gone was left by a killed runner; a live one keeps running (its row is skipped)
for claim in "$OUT"/.claims/*/; do
  [ -d "$claim" ] || continue
  pid=$(cat "$claim/pid" 2>/dev/null || true)
  { [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; } || rm -rf "$claim"
done
for _ in $(seq "$LANES"); do lane & sleep 2; done
wait
