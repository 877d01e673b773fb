"""The step-anatomy figure for the docs: each move variant's score, a bar per run, from the records that
`bench/step_anatomy_table.py --json` collects (matplotlib, no browser needed).

  python bench/plot_step_anatomy.py [docs/ablation/step-anatomy-sst2.json] [--out docs/figures/step-anatomy-sst2.png]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import save_figure  # noqa: E402
from distill_core.step_anatomy import StepAnatomy  # noqa: E402


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("records", nargs="?", default="docs/ablation/step-anatomy-sst2.json")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    runs = {name: StepAnatomy.from_dict(d) for name, d in json.loads(Path(a.records).read_text()).items()}
    metric = next(iter(runs.values())).metric
    variants = list(dict.fromkeys(v for r in runs.values() for v in r.variants))
    y = np.arange(len(variants))
    height = 0.8 / len(runs)
    fig, ax = plt.subplots(figsize=(7.5, 0.42 * len(variants) + 2.2), dpi=150)
    for i, (name, r) in enumerate(runs.items()):
        mean = [r.variants[v][metric]["mean"] if v in r.variants else np.nan for v in variants]
        std = [r.variants[v][metric]["std"] if v in r.variants else 0.0 for v in variants]
        ax.barh(y + (i - (len(runs) - 1) / 2) * height, mean, height, xerr=std, label=f"{name} ({r.learners} learners)",
                error_kw={"elinewidth": 0.6, "capsize": 1.5})
    ax.set_yticks(y, variants)
    ax.invert_yaxis()
    ax.set_xlim(40, 90)
    ax.axvline(50, color="grey", lw=0.6, ls=":")
    first = next(iter(runs.values()))
    ax.set_xlabel(f"{metric} % on {first.eval_rows} {first.split} rows (mean ± std over learners)")
    ax.set_title("What one step on distilled data owes to each move and each loss")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=2, frameon=False)
    save_figure(fig, Path(a.out or f"docs/figures/{Path(a.records).stem}.png"))


if __name__ == "__main__":
    main(sys.argv[1:])
