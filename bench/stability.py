"""Does the app's default run stay up? N seeds of the default preset, validated on the WHOLE dev split.

  python bench/stability.py --task sst2 --data-dir ../shared/data --seeds 5 --out docs/ablation/stability-sst2.json
  python bench/stability.py --task demo --seeds 5 --out docs/ablation/stability-demo.json

Each seed is the run the app starts with its defaults (presets.DEFAULT_PRESET), except that every
periodic validation scores --learners heads on all dev rows (the app scores a sample of them). The bar
(issue #17): every seed ends within --tolerance points of its own best validation. Seeds already in
--out are kept, so an interrupted bench continues; the file is rewritten atomically after each seed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from distill_core.machine import machine_info  # noqa: E402


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="sst2")
    p.add_argument("--data-dir")
    p.add_argument("--preset", default=None, help="default: the app's (presets.DEFAULT_PRESET)")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--learners", type=int, default=10)
    p.add_argument("--tolerance", type=float, default=2.0)
    p.add_argument("--threads", type=int)
    p.add_argument("--out", required=True)
    p.add_argument("--set", nargs="*", default=[], metavar="SECTION.KEY=JSON",
                   help="override a preset setting, e.g. distill.outer_steps=600 distilled.inner_lr_max=1.0")
    a = p.parse_args(argv)
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    from distill_core.distiller import Distiller, RunConfig, prepare
    from distill_core.presets import DEFAULT_PRESET
    from distill_core.runs import read_json, write_json

    preset = a.preset or DEFAULT_PRESET
    overrides: dict = {"data": {"task": a.task, "data_dir": a.data_dir, "eval_rows": None, "allow_hub": False},
                       "distill": {"eval_learners": a.learners, "baselines": False}}
    for item in a.set:
        key, _, raw = item.partition("=")
        section, _, name = key.partition(".")
        overrides.setdefault(section, {})[name] = json.loads(raw)
    out = Path(a.out)
    record = read_json(out) if out.exists() else {"bench": "stability", "task": a.task, "preset": preset,
                                                  "overrides": overrides, "seeds": []}
    if record.get("overrides") != overrides or record.get("preset") != preset:
        raise SystemExit(f"{out} holds another configuration; choose another --out")
    prep = None
    for seed in range(a.seeds):
        if any(s["seed"] == seed for s in record["seeds"]):
            continue
        cfg = RunConfig.from_preset(preset, {**overrides, "distill": {**overrides["distill"], "seed": seed}})
        prep = prep or prepare(cfg)
        d = Distiller(cfg, prepared=prep)
        metric = prep.task.spec.primary_metric
        curve = []
        d.add_callback(lambda e: curve.append({"step": e["step"], "mean": e["metrics"][metric]["mean"],
                                               "std": e["metrics"][metric]["std"]}) if e["type"] == "eval" else None)
        t0 = time.perf_counter()
        d.run_loop()
        best = max(curve, key=lambda c: c["mean"])
        final = curve[-1]
        gap = best["mean"] - final["mean"]
        record["seeds"].append({"seed": seed, "best": best, "final": final, "gap": round(gap, 2),
                                "within": gap <= a.tolerance, "curve": curve,
                                "inner_lrs": d.distilled.inner_lrs().detach().tolist(),
                                "seconds": round(time.perf_counter() - t0, 1)})
        record.update({"split": prep.selection_name, "rows": len(prep.selection), "learners": a.learners,
                       "tolerance": a.tolerance, "config": cfg.to_dict(), "machine": machine_info()})
        record["all_within"] = all(s["within"] for s in record["seeds"])
        write_json(out, record)
        print(f"seed {seed}: best {best['mean']:.1f} at step {best['step']}, final {final['mean']:.1f} "
              f"(gap {gap:.1f})", flush=True)
    print(json.dumps({k: record.get(k) for k in ("task", "preset", "all_within")}))


if __name__ == "__main__":
    main(sys.argv[1:])
