"""How far one step can go on the evaluation sentences themselves: a diagnostic, never a result.

  python bench/one_step_ceiling.py docs/reproduction/runs/sst2-sl-al-1x1-long --mode fit [--steps 1500]
  python bench/one_step_ceiling.py RUN --mode split        # distil on one half, score the other
  python bench/one_step_ceiling.py RUN --mode fit --from-scratch --steps 3000 --lr 0.1 --schedule linear \
      --dev-fraction 0.05                                  # from the run's own init, 5 % held out

The outer loss draws its real batches from the task's evaluation split instead of train (`fit`: all of it,
scored on all of it; `split`: a random half, scored on the other half), starting from the run's distilled
data (or, with --from-scratch, from the run's own initialisation). `fit` asks whether one step of this
model can do better on those sentences than the run does, when the sentences themselves are the target:
if the run's data, tuned on them, climbs far above its own score, the one step has room and the limit is
what train teaches; if it stays near, one step of this model holds the score. `split` asks the same of
sentences it did not see. The halves are written to a temporary folder and removed; nothing leaves it.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from _common import emit, load_run_checkpoint, machine


def main(argv: list[str]) -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a run directory whose config (and checkpoint) to start from")
    p.add_argument("--checkpoint", default="last")
    p.add_argument("--mode", choices=["fit", "split"], default="fit")
    p.add_argument("--from-scratch", action="store_true", help="start from the run's initialisation instead")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--lr", type=float, default=0.03, help="outer lr (all parts)")
    p.add_argument("--schedule", choices=["constant", "linear"], default="constant")
    p.add_argument("--learners", type=int, default=20)
    p.add_argument("--seed", type=int, default=0, help="the halves' split and the run's seed")
    p.add_argument("--dev-fraction", type=float, default=0.0,
                   help="rows of the train side held out as the run's dev split (0: every row is a target)")
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--threads", type=int)
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from distill_core.distiller import Distiller, prepare
    from distill_core.evaluation import EvalConfig, evaluate_distilled

    run, cfg, prep, start = load_run_checkpoint(args.run, args.checkpoint, args.data_dir, args.threads)
    spec = prep.task.spec
    if len(spec.text_fields) != 1:
        raise SystemExit("one_step_ceiling writes single-sentence halves; pick a single-sentence task (sst2)")
    frame = _evaluation_frame(prep.task.eval)
    order = np.random.default_rng(args.seed).permutation(len(frame))
    half = len(frame) // 2
    with tempfile.TemporaryDirectory() as tmp:
        if args.mode == "fit":
            train_file = eval_file = Path(tmp) / "all.parquet"
            frame.to_parquet(train_file)
        else:
            train_file, eval_file = Path(tmp) / "a.parquet", Path(tmp) / "b.parquet"
            frame.iloc[np.sort(order[:half])].to_parquet(train_file)
            frame.iloc[np.sort(order[half:])].to_parquet(eval_file)
        d = cfg.data
        d.task, d.train_file, d.eval_file = None, str(train_file), str(eval_file)
        d.text_columns, d.label_column, d.train_min_words, d.dev_disjoint = ["text"], "label", None, False
        d.dev_fraction = args.dev_fraction
        s = cfg.distill
        s.outer_steps, s.schedule, s.seed = args.steps, args.schedule, args.seed
        s.lr_embeds = s.lr_labels = s.lr_attention = s.lr_inner_lr = args.lr
        s.eval_every, s.eval_at_start, s.baselines, s.teacher_weight = args.steps, False, False, 0.0
        own = prepare(cfg, learner=prep.learner)
        target = own.eval
        score = EvalConfig(learners=args.learners)
        before = evaluate_distilled(own.learner, start, target, spec.metrics, score)["metrics"]
        distiller = Distiller(cfg, prepared=own)
        if not args.from_scratch:   # as a resume does: the learnable parts, the fixed label values, the average
            distiller._set_learnable(start.learnable())
            with torch.no_grad():
                distiller.distilled.label_values.copy_(start.label_values)
            if distiller.averaged is not None:
                distiller.averaged = {n: t.detach().clone() for n, t in distiller.distilled.learnable().items()}
        summary = distiller.run_loop()
        after = evaluate_distilled(own.learner, distiller.served(), target, spec.metrics, score)["metrics"]
    emit({"bench": "one_step_ceiling", "run": str(run.path), "checkpoint": args.checkpoint, "mode": args.mode,
          "from_scratch": args.from_scratch, "steps": args.steps, "lr": args.lr, "schedule": args.schedule,
          "train_rows": len(own.train), "dev_rows": len(own.dev) if own.dev is not None else 0,
          "eval_rows": len(target), "learners": args.learners,
          "run_data_on_target": before, "tuned_on_target": after, "status": summary["status"],
          "inner_lr": float(distiller.served().inner_lrs().detach().flatten()[0]),
          "machine": machine()})


def _evaluation_frame(split):
    import pandas as pd

    return pd.DataFrame({"text": [t[0] for t in split.texts], "label": [int(y) for y in split.labels]})


if __name__ == "__main__":
    main(sys.argv[1:])
