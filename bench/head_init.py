"""How much a distilled checkpoint's score depends on the fresh head its learners start from.

  python bench/head_init.py docs/reproduction/runs/sst2-sl-al-1x1-long [--checkpoint best] [--learners 10]

Scores the checkpoint on the whole evaluation split from heads drawn as the protocol draws them
(normal(0, initializer_range)), from the same draws scaled by 0.5 and 2, and from a zero head. A small
spread across learners, and no gain from a zero head, say the head's randomness is not what limits
the score: the distilled data is.
"""

from __future__ import annotations

import sys

from _common import checkpoint_parser, emit, load_run_checkpoint, machine


def main(argv: list[str]) -> None:
    p = checkpoint_parser(__doc__, learners=10)
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from distill_core.evaluation import compute_metrics, eval_batches, predict_logits
    from distill_core.inner import fine_tune

    run, cfg, prep, distilled = load_run_checkpoint(args.run, args.checkpoint, args.data_dir, args.threads)
    learner = prep.learner
    batches = eval_batches(learner, prep.eval)
    labels = prep.eval.labels.numpy()

    def score(scale: float, seed: int) -> float:
        theta0 = learner.fresh_params(torch.Generator().manual_seed(seed))
        theta0.update({k: theta0[k] * scale for k in learner.head_names})
        logits = predict_logits(learner, fine_tune(learner, theta0, distilled), prep.eval, batches=batches)
        return compute_metrics(logits.argmax(-1).numpy(), labels, ("accuracy",))["accuracy"]

    rows = []
    for scale in (1.0, 0.5, 2.0, 0.0):
        scores = [score(scale, i) for i in range(1 if scale == 0 else args.learners)]
        rows.append({"head_scale": scale, "learners": len(scores), "mean": round(float(np.mean(scores)), 2),
                     "std": round(float(np.std(scores, ddof=1)), 2) if len(scores) > 1 else 0.0})
        print(f"head x {scale:g}: {rows[-1]['mean']:.1f} ± {rows[-1]['std']:.1f} ({len(scores)} learners)",
              file=sys.stderr)
    emit({"bench": "head_init", "run": str(run.path), "checkpoint": args.checkpoint, "task": cfg.data.task,
          "eval_rows": len(labels), "rows": rows, "machine": machine()})


if __name__ == "__main__":
    main(sys.argv[1:])
