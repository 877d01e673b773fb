"""Seconds per outer step and peak memory, with the engine's flags; last line is one JSON object.

  python bench/outer_step.py --task sst2 --data-dir ../shared/data --seq-len 128 --inner-steps 1 \
      --samples-per-class 1 --real-batch 32 --outer-steps 15 --json [--impl engine|reference]

--impl reference times the plain unrolled implementation (bench/reference_step.py) on the
same data, batches and heads, so before/after numbers come from one machine and one run.
--autocast bfloat16 times the engine under bf16 autocast and reports the cosine of its
hypergradient to the float32 one (on one batch), which is why training stays float32;
--real-precision bfloat16 (the engine's flag: the real-batch pass alone under bf16) reports the same.

peak_rss_mb counts what glibc's allocator keeps besides live tensors. To measure the peak of live
memory instead (what torch.cuda.max_memory_allocated counts on a GPU), run with
MALLOC_MMAP_THRESHOLD_=65536: every buffer over 64 KiB then goes back to the OS when freed (slower,
same peak of live data); the record's malloc_env says which setting a run used.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time

from _common import emit, machine, parse_engine_flags, peak_rss_mb, quiet_distiller


def gradient_agreement(d, whole_step: bool) -> dict:
    """Cosine between a bf16 and the float32 hypergradient of each part, on one batch and head: bf16 autocast
    over the whole step (whole_step) or over its real-batch pass alone (--real-precision bfloat16)."""
    import torch

    from distill_core.inner import hypergradient

    learner = d.prep.learner
    real = [b.to(learner.device) for b in d.batcher.next()]
    runs = []
    for bf16 in (False, True):
        theta0 = learner.fresh_params(torch.Generator().manual_seed(0))
        with torch.autocast(learner.device.type, dtype=torch.bfloat16, enabled=bf16 and whole_step):
            runs.append(hypergradient(learner, theta0, d.distilled, real,
                                      real_precision="bfloat16" if bf16 and not whole_step else "float32").grads)
    out = {}
    for name, ref in runs[0].items():
        a, b = runs[1][name].float().flatten(), ref.float().flatten()
        out[name] = round(float(a @ b / (a.norm() * b.norm()).clamp_min(1e-30)), 4)
    return out


def main(argv: list[str]) -> None:
    def extra(p):
        p.add_argument("--impl", choices=["engine", "reference"], default="engine")
        p.add_argument("--warmup", type=int, default=2, help="untimed steps before the timed ones")
        p.add_argument("--autocast", choices=["none", "bfloat16"], default="none",
                       help="time the engine under bf16 autocast and report how far its hypergradient is from float32")

    mine, args, cfg = parse_engine_flags(argv, extra)
    import torch

    d = quiet_distiller(cfg, args.threads)
    rss_loaded = peak_rss_mb()
    learner = d.prep.learner
    autocast = (torch.autocast(learner.device.type, dtype=torch.bfloat16) if mine.autocast == "bfloat16"
                else contextlib.nullcontext())
    agreement = (gradient_agreement(d, whole_step=mine.autocast == "bfloat16")
                 if "bfloat16" in (mine.autocast, cfg.distill.real_precision) else None)
    times = []
    losses = []
    for i in range(mine.warmup + cfg.distill.outer_steps):
        t0 = time.perf_counter()
        if mine.impl == "engine":
            with autocast:
                rec = d.train_step()
            losses.append(rec["real_loss"])
        else:
            from reference_step import reference_hypergradient

            idx = d.batcher.next_indices()
            loss, grads = reference_hypergradient(d.prep.learner, d.distilled, d.prep.train, idx, d.head_generator)
            for name, t in d.distilled.learnable().items():
                t.grad = grads[name]
            torch.nn.utils.clip_grad_norm_(list(d.distilled.learnable().values()), cfg.distill.grad_clip)
            d.optimizer.step()
            d.optimizer.zero_grad(set_to_none=True)
            d.scheduler.step()
            losses.append(loss)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if i >= mine.warmup:
            times.append(time.perf_counter() - t0)
        if not mine.json:
            print(f"step {i + 1}: {time.perf_counter() - t0:.3f}s loss {losses[-1]:.4f}", file=sys.stderr)
    record = {"bench": "outer_step", "impl": mine.impl, "median_s": statistics.median(times),
              "mean_s": statistics.fmean(times), "min_s": min(times), "steps_timed": len(times),
              "peak_rss_mb": round(peak_rss_mb(), 1), "rss_after_load_mb": round(rss_loaded, 1),
              "final_real_loss": losses[-1], "autocast": mine.autocast, "machine": machine(), "config": cfg.to_dict(),
              "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}}
    if agreement is not None:
        record["bf16_gradient_cosine_to_float32"] = agreement
    if torch.cuda.is_available():
        record["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    emit(record)


if __name__ == "__main__":
    main(sys.argv[1:])
