"""The ablation rows in docs/ablation/ as one Markdown table (docs/ablation/README.md's table).

  python bench/ablation_table.py [docs/ablation]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from distill_core.views.curves import format_inner_lrs

GROUPS = {"1x1": "one step, 1,200 hypergradients",
          "mid": "one step, 1,500 hypergradients at the '-long' rows' outer lr (0.03)",
          "long": "one step, the study's '-long' budget (4,500 hypergradients)",
          "longest": ("one step, the issue's 60 CPU minutes a one-thread run (6,000 hypergradients at L = 64, 7,000 at "
                      "L = 32; a dearer step, fewer: 4,200 with sentences, 4,000 with a real batch of 64; a cheaper one, "
                      "more: 8,400 with a real batch of 16, 7,000 with the real-batch pass in bf16; meta-batch 2: 3,000 steps; "
                      "8,000 on a faster CPU)"),
          "long-ms": "3x3 different data at about the '-long' budget's CPU (a T = 3 step costs about 2.4 of T = 1)",
          "hour-ms": ("3x3 different data over the issue's 60 CPU minutes a one-thread run, on the hour recipe's lr and "
                      "schedule (3,300 steps at about 1 s each on an Intel Xeon)"),
          "ms": "multi-step, 600 outer steps (T=10: 300)",
          "mrpc": "MRPC SL+AL, the GLUE score (mean of accuracy and F1; majority class 74.8)"}


def _group(name: str, draws: int) -> str:
    if name.startswith("mrpc-"):
        return "mrpc"
    if name.startswith("long-ms-"):
        return "long-ms"
    if name.startswith("hour-ms-"):
        return "hour-ms"
    if name.startswith("ms-"):
        return "ms"
    if draws > 4500 or name.startswith("hour-"):
        return "longest"
    if draws >= 4500:
        return "long"
    return "mid" if draws > 1200 else "1x1"


def _lrs(lrs: list, groups: list[str] | None) -> str:
    """The first three learned lrs (one per step), or the last step's per group ('encoder 0.1, head 2.4')."""
    if lrs and isinstance(lrs[0], list):
        return format_inner_lrs(lrs[-1:], groups)
    return ", ".join(f"{x:.3g}" for x in lrs[:3]) + (" …" if len(lrs) > 3 else "")


def _own_dev(r: dict) -> str:
    if r["config"]["data"].get("dev_disjoint"):
        return f" (disjoint dev, {r['dev_rows']:,} sentences)"
    if r["config"]["data"]["task"] != "sst2":
        return ""   # the group's header names its dev split
    return f" (own dev, {r['dev_rows']:,} rows)" if r.get("dev_rows", 2000) != 2000 else ""


def rows(folder: Path) -> list[dict]:
    out = []
    for path in sorted(folder.glob("*.json")):
        r = json.loads(path.read_text())
        if r.get("bench") != "time_to_accuracy":
            continue
        c = r["config"]
        # MRPC is read on its GLUE score (the paper's column), the other tasks on accuracy
        metric = "glue" if "glue" in r["metrics"] else "accuracy"
        dev, val = r["dev_metrics"][metric], r["metrics"][metric]
        out.append({"name": path.stem, "group": _group(path.stem, r["draws"]),
                    "shape": f"{c['distilled']['samples_per_class']}x{c['distilled']['inner_steps']}",
                    "draws": r["draws"],
                    # a row that filters train rows (--train-min-words) or carves dev apart from training
                    # (--dev-disjoint) selects on a dev split of its own
                    "dev": f"{dev['mean']:.1f} ± {dev['std']:.1f}" + _own_dev(r), "own_dev": bool(_own_dev(r)),
                    "val": f"{val['mean']:.1f} ± {val['std']:.1f}", "dev_mean": dev["mean"],
                    "average": c["distill"].get("average", 0.0), "eval_rows": r["eval_rows"],
                    "dev_rows": r.get("dev_rows") or 2000,
                    # wall-clock; rows since 2026-12-06 also record the CPU time (lanes sharing cores differ)
                    "train_s": f"{r['train_seconds']:.0f}" + (f" ({r['train_cpu_seconds']:.0f} CPU)"
                                                            if "train_cpu_seconds" in r else ""),
                    "threads": r["config"].get("threads") or "",
                    "lrs": _lrs(r["inner_lrs"], r.get("inner_lr_groups"))})
    return out


def table(found: list[dict]) -> str:
    lines = []
    for group, title in GROUPS.items():
        part = sorted((r for r in found if r["group"] == group), key=lambda r: -r["dev_mean"])
        if not part:
            continue
        lines += [f"**{title}** (sorted by dev)", "",
                  "| row | T | hypergradients | average | "
                  f"dev (10 learners, {max((r['dev_rows'] for r in part if not r['own_dev']), default=2000):,} rows) | "
                  f"validation (20 learners, {part[0]['eval_rows']:,}) | "
                  "training s | learned inner lr |", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['name']} | {r['shape']} | {r['draws']} | {r['average']:g} | {r['dev']} | {r['val']} | "
                  f"{r['train_s']} | {r['lrs']} |" for r in part]
        lines.append("")
    return "\n".join(lines)


def _preset_then(r: dict) -> str:
    """A run without overrides ran the preset as it was then: say so with the values that have changed since."""
    average = r.get("config", {}).get("distill", {}).get("average", 0.0)
    return f"the {r.get('preset', 'cpu')} preset as it was (average {average:g})"


def stability_table(folder: Path) -> str:
    """The stability runs (bench/stability.py): each seed's gap between its best and its last validation."""
    lines = ["| run | seeds | gap best - final per seed (points) | all within 2 | overrides |", "|---|---|---|---|---|"]
    for path in sorted(folder.glob("stability-*.json")):
        r = json.loads(path.read_text())
        gaps = ", ".join(f"{s['gap']:.1f}" for s in sorted(r["seeds"], key=lambda s: s["seed"]))
        changed = {k: v for sec, kv in r.get("overrides", {}).items() for k, v in kv.items()
                   if k not in ("task", "data_dir", "eval_rows", "allow_hub", "eval_learners", "baselines")}
        lines.append(f"| {path.stem} | {len(r['seeds'])} | {gaps} | {'yes' if r.get('all_within') else 'no'} | "
                     f"{json.dumps(changed) if changed else _preset_then(r)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/ablation")
    print(table(rows(folder)))
    print(stability_table(folder))
