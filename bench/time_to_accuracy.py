"""Time to accuracy: distil under a budget, then score on the whole dev split and the whole eval split.

  python bench/time_to_accuracy.py --task sst2 --data-dir ../shared/data --seq-len 64 \
      --budget-minutes 10 --final-learners 20 --json [any distill flag]

The budget is wall-clock training minutes, or --budget-draws N: stop once outer steps x meta-batch
reaches N (one draw is one exact hypergradient, the unit of CPU cost), which compares levers on the
same work whatever else the machine is doing. Choices are made on the final dev score
(--dev-learners heads on the whole dev split); the eval split's score is only reported.

Periodic evaluations (--eval-every/--eval-learners/--eval-rows) are monitoring: their time is
reported separately and not counted in the training budget; each is printed to stderr as it lands. The
last line of stdout is one JSON object.
"""

from __future__ import annotations

import sys
import time

from _common import emit, machine, parse_engine_flags, peak_rss_mb


def main(argv: list[str]) -> None:
    def extra(p):
        p.add_argument("--budget-minutes", type=float, default=10.0, help="training wall-clock budget")
        p.add_argument("--final-learners", type=int, default=20)
        p.add_argument("--budget-draws", type=int, default=None, help="stop at outer steps x meta-batch >= N")
        p.add_argument("--dev-learners", type=int, default=10)
        p.add_argument("--out", default=None, help="also write the JSON record to this file (atomically)")
        p.add_argument("--run-dir", default=None,
                       help="also keep the run (config, checkpoints at each periodic evaluation) in this directory, "
                            "so `distill_core evaluate` can score it again with more learners")

    mine, args, cfg = parse_engine_flags(argv, extra)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from distill_core.data import encode_split, load_task_data
    from distill_core.distiller import Distiller
    from distill_core.evaluation import EvalConfig, evaluate_distilled

    from pathlib import Path

    from distill_core.runs import RunDir, read_json, write_json

    cfg.distill.baselines = False
    # a --run-dir that already holds this row's run resumes it from its last evaluation (a session's end or a
    # kill mid-row), with this script's own accounting, kept beside each resume point, carried over
    resume = mine.run_dir is not None and RunDir(Path(mine.run_dir)).exists()
    d = Distiller(cfg, run_dir=mine.run_dir, resume=resume)
    curve, step_seconds = [], []
    eval_seconds = 0.0
    train_seconds = 0.0
    train_cpu_seconds = 0.0     # the budget is CPU time; wall-clock inflates when lanes share cores
    ledger = Path(mine.run_dir) / "bench_ledger.json" if mine.run_dir else None
    if resume:
        kept = read_json(ledger) if ledger.exists() else None
        if kept is None or kept["step"] != d.step:
            raise SystemExit(f"{mine.run_dir} resumes at step {d.step}, but {ledger} holds no accounting for that "
                             "step; score the run with `python -m distill_core evaluate` instead")
        curve, step_seconds = kept["curve"], kept["step_seconds"]
        eval_seconds, train_seconds, train_cpu_seconds = (kept["eval_seconds"], kept["train_seconds"],
                                                          kept["train_cpu_seconds"])
        print(f"resumed at step {d.step} ({train_cpu_seconds:.0f} CPU s of training so far)", file=sys.stderr,
              flush=True)

    def keep_ledger() -> None:
        """What this script has counted up to the resume point just written (its step and curve)."""
        if ledger is not None:
            write_json(ledger, {"step": d.step, "curve": curve, "step_seconds": step_seconds,
                                "eval_seconds": eval_seconds, "train_seconds": train_seconds,
                                "train_cpu_seconds": train_cpu_seconds})

    def on_event(e: dict) -> None:
        nonlocal eval_seconds
        if e["type"] == "eval":
            eval_seconds += e["seconds"]
            m = e["metrics"][d.prep.task.spec.primary_metric]
            curve.append({"step": e["step"], "train_seconds": round(train_seconds, 1), "mean": m["mean"], "std": m["std"],
                          "n": m["n"]})
            # stderr even under --json (whose one object goes to stdout): a long row's log shows where it is
            print(f"step {e['step']} at {train_seconds:.0f}s of training: {m['mean']:.1f} ± {m['std']:.1f}",
                  file=sys.stderr, flush=True)
        elif e["type"] == "step":
            step_seconds.append(e["seconds"])

    d.add_callback(on_event)
    budget = mine.budget_minutes * 60
    if cfg.distill.eval_at_start and not resume:
        d._eval_and_checkpoint()
        keep_ledger()

    def spent() -> bool:
        if mine.budget_draws is not None:
            return d.step * cfg.distill.meta_batch >= mine.budget_draws
        return train_seconds >= budget

    while d.step < cfg.distill.outer_steps and not spent():
        t0, c0 = time.perf_counter(), time.process_time()
        rec = d.train_step()
        train_seconds += time.perf_counter() - t0
        train_cpu_seconds += time.process_time() - c0
        d.emit(rec)
        if cfg.distill.eval_every and d.step % cfg.distill.eval_every == 0:
            d._eval_and_checkpoint()
            keep_ledger()
    # the final score: all evaluation rows, more learners, fresh heads
    full_cfg = type(cfg.data)(**{**cfg.data.__dict__, "eval_rows": None})
    full = load_task_data(full_cfg)
    full_eval = encode_split(full.eval, d.prep.learner.tokenizer, cfg.data.max_length)
    t0 = time.perf_counter()
    served = d.served()     # the moving average when --average is on; the raw iterate otherwise
    final = evaluate_distilled(d.prep.learner, served, full_eval, d.prep.task.spec.metrics,
                               EvalConfig(learners=mine.final_learners, seed=10_000))
    dev_metrics = None
    if full.dev is not None:
        full_dev = encode_split(full.dev, d.prep.learner.tokenizer, cfg.data.max_length)
        dev_metrics = evaluate_distilled(d.prep.learner, served, full_dev, d.prep.task.spec.metrics,
                                         EvalConfig(learners=mine.dev_learners, seed=900_000))["metrics"]
    import statistics

    record = {"bench": "time_to_accuracy", "accuracy": final["metrics"].get("accuracy"), "metrics": final["metrics"],
              "eval_split": d.prep.task.spec.eval_split, "dev_metrics": dev_metrics,
              "dev_rows": None if full.dev is None else len(full.dev), "draws": d.step * cfg.distill.meta_batch,
              "eval_rows": len(full_eval), "outer_steps_done": d.step, "train_seconds": round(train_seconds, 1),
              "train_cpu_seconds": round(train_cpu_seconds, 1), "monitor_eval_seconds": round(eval_seconds, 1),
              "final_eval_seconds": round(time.perf_counter() - t0, 1),
              "median_s": statistics.median(step_seconds) if step_seconds else None,
              "inner_lrs": served.inner_lrs().tolist(), "inner_lr_groups": served.lr_groups, "curve": curve, "peak_rss_mb": round(peak_rss_mb(), 1),
              "machine": machine(), "config": cfg.to_dict(),
              **({"teacher": d.teacher} if d.teacher else {})}   # --teacher-weight: its recipe and CPU cost
    emit(record)
    if mine.out:
        import json

        Path(mine.out).parent.mkdir(parents=True, exist_ok=True)
        write_json(Path(mine.out), json.loads(json.dumps(record, default=str)))


if __name__ == "__main__":
    main(sys.argv[1:])
