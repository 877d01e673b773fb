"""The time-to-accuracy figure for the docs: dev score against CPU minutes, a band over seeds per curve row,
the full-data fine-tuning beside it (the same data as the Results page; matplotlib, no browser needed).

  python bench/plot_time_to_accuracy.py [--study docs/reproduction] [--task sst2] [--out docs/figures/time-to-accuracy-sst2.png]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import save_figure  # noqa: E402
from distill_core.study import time_to_accuracy  # noqa: E402
from distill_core.views.results import series_label  # noqa: E402


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--study", default="docs/reproduction")
    p.add_argument("--task", default="sst2")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [s for s in time_to_accuracy(a.study)["series"] if s["task"] == a.task]
    if not series:
        raise SystemExit(f"{a.study} has no dev curves for {a.task} yet (curve rows: StudyConfig.curve_rows)")
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=150)
    for s in series:
        full = s["kind"] == "full data"
        lo = [m - d for m, d in zip(s["mean"], s["std"])]
        hi = [m + d for m, d in zip(s["mean"], s["std"])]
        line, = ax.plot(s["cpu_minutes"], s["mean"], "--" if full else "-", color="grey" if full else None,
                        marker="o", ms=3, label=series_label(s))
        ax.fill_between(s["cpu_minutes"], lo, hi, color=line.get_color(), alpha=0.18, linewidth=0)
    ax.set_xlabel("CPU minutes (process time, all threads)")
    ax.set_ylabel(f"dev score % ({a.task})")
    ax.set_title(f"{a.task}: time to accuracy on the dev split (mean ± std)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    save_figure(fig, Path(a.out or f"docs/figures/time-to-accuracy-{a.task}.png"))


if __name__ == "__main__":
    main(sys.argv[1:])
