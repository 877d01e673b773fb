"""Where one step on distilled data falls short: the learner's own head, or the features it leaves.

  python bench/step_probe.py docs/reproduction/runs/sst2-sl-al-1x1-long [--checkpoint best] [--learners 5]

For each learner (the protocol's fresh head, then T steps on the distilled data), three scores on the
whole evaluation split: the learner as it is (its one-step head); a logistic-regression probe fitted on
random train rows to the features that head reads, after the step (the best any head could read from the
updated encoder); and the same probe on the features before the step (the pre-trained encoder). If the
probe after the step scores well above the learner, the one-step head is what limits the score; if the
two sit together, the features the step leaves are.
"""

from __future__ import annotations

import sys

from _common import checkpoint_parser, emit, load_run_checkpoint, machine


def main(argv: list[str]) -> None:
    p = checkpoint_parser(__doc__, learners=5)
    p.add_argument("--train-rows", type=int, default=4000)
    args = p.parse_args(argv)

    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression

    from distill_core.data import EncodedSplit
    from distill_core.evaluation import compute_metrics, eval_batches, predict_logits
    from distill_core.inner import fine_tune

    run, cfg, prep, distilled = load_run_checkpoint(args.run, args.checkpoint, args.data_dir, args.threads)
    learner = prep.learner
    if not learner.supports_packing:
        raise SystemExit("step_probe reads the pooler's output, so it needs a BERT-style classifier")
    rng = np.random.default_rng(0)
    pick = rng.permutation(len(prep.train))[: args.train_rows]
    train = EncodedSplit([prep.train.input_ids[i] for i in pick], [prep.train.token_type_ids[i] for i in pick],
                         prep.train.labels[torch.as_tensor(pick)])
    splits = {"train": (train, eval_batches(learner, train)), "eval": (prep.eval, eval_batches(learner, prep.eval))}
    y_train, y_eval = train.labels.numpy(), prep.eval.labels.numpy()
    hidden = learner.hidden_size

    @torch.no_grad()
    def features(params: dict, split: str) -> np.ndarray:
        """What the head reads (the pooler's output at [CLS]): an identity head returns it as the logits."""
        probe_params = dict(params)
        probe_params["classifier.weight"] = torch.eye(hidden, dtype=learner.dtype, device=learner.device)
        probe_params["classifier.bias"] = torch.zeros(hidden, dtype=learner.dtype, device=learner.device)
        encoded, batches = splits[split]
        out = torch.empty((len(encoded), hidden))
        for idx, batch in batches:
            out[torch.as_tensor(idx)] = learner.real_logits(probe_params, batch.to(learner.device)).float().cpu()
        return out.numpy()

    def probe(params: dict) -> float:
        x, xe = features(params, "train"), features(params, "eval")
        mu, sd = x.mean(0), x.std(0) + 1e-6
        fit = LogisticRegression(C=0.1, max_iter=3000).fit((x - mu) / sd, y_train)
        return 100 * float(fit.score((xe - mu) / sd, y_eval))

    # The pooler's output does not depend on the head, so before the step every learner reads the same features.
    before = round(probe(learner.fresh_params()), 2)
    rows = []
    for seed in range(args.learners):
        theta0 = learner.fresh_params(torch.Generator().manual_seed(seed))
        theta1 = fine_tune(learner, theta0, distilled)
        logits = predict_logits(learner, theta1, prep.eval, batches=splits["eval"][1])
        own = compute_metrics(logits.argmax(-1).numpy(), y_eval, ("accuracy",))["accuracy"]
        rows.append({"learner": seed, "own_head": round(own, 2), "probe_after_step": round(probe(theta1), 2),
                     "probe_before_step": before})
        print(rows[-1], file=sys.stderr)

    def mean(key: str) -> float:
        return round(float(np.mean([r[key] for r in rows])), 2)

    emit({"bench": "step_probe", "run": str(run.path), "checkpoint": args.checkpoint, "task": cfg.data.task,
          "train_rows": len(pick), "eval_rows": len(y_eval), "rows": rows,
          "mean": {k: mean(k) for k in ("own_head", "probe_after_step", "probe_before_step")},
          "machine": machine()})


if __name__ == "__main__":
    main(sys.argv[1:])
