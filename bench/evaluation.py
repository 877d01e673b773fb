"""Evaluation speed: N fresh learners fine-tuned on distilled data and scored on the eval split.

  python bench/evaluation.py --task sst2 --data-dir ../shared/data --seq-len 64 --learners 100 --json \
      [--distilled docs/reproduction/runs/sst2-hl-al-1x1/checkpoints/last.safetensors]

Compares, in one run on one machine: the engine's evaluator in float32 and with bf16 scoring
(packed real batches in 256-token rows, fused attention) against a plain one-by-one loop (padded
batches of 32 in dataset order, eager attention, as a Trainer-style evaluation would do), and
how far the bf16 scores move from float32 ones (same learners). Without --distilled the distilled
data is freshly initialised, which does not change the cost. Last line: one JSON object.
"""

from __future__ import annotations

import sys
import time

from _common import emit, machine, parse_engine_flags, peak_rss_mb, quiet_distiller


def main(argv: list[str]) -> None:
    def extra(p):
        p.add_argument("--learners", type=int, default=100)
        p.add_argument("--plain-learners", type=int, default=5, help="learners timed with the plain loop")
        p.add_argument("--distilled", help="a trained distilled-data file to score (default: a fresh init)")

    mine, args, cfg = parse_engine_flags(argv, extra)
    import numpy as np
    import torch

    from distill_core.data import collate
    from distill_core.evaluation import EvalConfig, compute_metrics, evaluate_distilled
    from distill_core.inner import fine_tune

    from distill_core.distilled import DistilledData

    d = quiet_distiller(cfg, args.threads)
    learner, enc, metrics = d.prep.learner, d.prep.eval, d.prep.task.spec.metrics
    distilled = d.distilled if not mine.distilled else DistilledData.load(
        mine.distilled, device=learner.device, dtype=learner.dtype, expect=learner.fingerprint())

    timed = {}
    for precision in ("float32", "bfloat16"):
        t0 = time.perf_counter()
        timed[precision] = evaluate_distilled(learner, distilled, enc, metrics,
                                              EvalConfig(learners=mine.learners, precision=precision))
        timed[precision]["wall"] = time.perf_counter() - t0
    engine, engine_s = timed["float32"], timed["float32"]["wall"]
    bf16, bf16_s = timed["bfloat16"], timed["bfloat16"]["wall"]
    moved = [abs(a["accuracy"] - b["accuracy"]) for a, b in zip(engine["per_learner"], bf16["per_learner"])]

    labels = enc.labels.numpy()
    plain_rows = []
    t0 = time.perf_counter()
    for i in range(mine.plain_learners):
        theta = fine_tune(learner, learner.fresh_params(torch.Generator().manual_seed(1234 + i)), distilled)
        preds = np.empty(len(enc), dtype=np.int64)
        with torch.no_grad():
            for s in range(0, len(enc), 32):
                idx = list(range(s, min(s + 32, len(enc))))
                b = collate(enc, idx).to(learner.device)
                out = learner.forward(theta, input_ids=b.input_ids, attention_mask=b.attention_mask,
                                      token_type_ids=b.token_type_ids, eager=True)
                preds[idx] = out.logits.argmax(-1).cpu().numpy()
        plain_rows.append(compute_metrics(preds, labels, metrics))
    plain_per_learner = (time.perf_counter() - t0) / mine.plain_learners
    same = all(abs(plain_rows[i]["accuracy"] - engine["per_learner"][i]["accuracy"]) < 1e-9
               for i in range(min(mine.plain_learners, mine.learners)))
    emit({"bench": "evaluation", "learners": mine.learners, "eval_rows": len(enc),
          "engine_seconds": round(engine_s, 2), "engine_per_learner_s": round(engine_s / mine.learners, 3),
          "plain_per_learner_s": round(plain_per_learner, 3),
          "plain_projected_seconds": round(plain_per_learner * mine.learners, 1),
          "speedup": round(plain_per_learner * mine.learners / engine_s, 2),
          "bf16_seconds": round(bf16_s, 2), "bf16_per_learner_s": round(bf16_s / mine.learners, 3),
          "bf16_speedup": round(plain_per_learner * mine.learners / bf16_s, 2),
          "bf16_accuracy_change_per_learner": {"mean": round(float(np.mean(moved)), 3), "max": round(max(moved), 3)},
          "same_predictions_as_plain": same, "median_s": round(engine_s / mine.learners, 3),
          "metrics": engine["metrics"], "bf16_metrics": bf16["metrics"], "distilled": mine.distilled or "fresh init",
          "peak_rss_mb": round(peak_rss_mb(), 1), "machine": machine(),
          "config": cfg.to_dict()})


if __name__ == "__main__":
    main(sys.argv[1:])
