"""CPU seconds one live-page refresh costs the app process, against the run's length; one JSON line.

    python bench/ui_poll_cost.py [--steps 300 3000 30000] [--old-dir CHECKOUT] [--json]

A refresh takes the job's events and builds the two live figures as JSON (what Streamlit sends
to the browser). This checkout keeps a bounded EventWindow and thins curves to 600 points;
`--old-dir` times an older checkout's `views/curves.py` on the whole event list the way its page
did (copy every event, build both figures from all of them), for a side-by-side in one run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from distill_core.event_window import EventWindow  # noqa: E402
from distill_core.views import curves  # noqa: E402


def synthetic_events(steps: int, eval_every: int = 25) -> list[dict]:
    """A run's events as the distiller emits them (2 classes, 1 sample each, soft labels)."""
    out = [{"type": "start", "step": 0, "outer_steps": steps, "eval_rows": 300}]
    out.append({"type": "baseline", "name": "majority", "metrics": {"accuracy": {"mean": 50.9, "std": 0.0}}})
    for s in range(1, steps + 1):
        out.append({"type": "step", "step": s, "real_loss": 0.7 - 0.3 * s / steps, "inner_lrs": [0.3 + s * 1e-5],
                    "labels": [[0.9, 0.1], [0.1, 0.9]], "seconds": 0.4})
        if s % eval_every == 0:
            out.append({"type": "eval", "step": s, "metrics": {"accuracy": {"mean": 60 + 20 * s / steps, "std": 1.0}}})
    return out


def _load_curves(checkout: Path):
    spec = importlib.util.spec_from_file_location("old_curves", checkout / "distill_core" / "views" / "curves.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _median_time(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, nargs="+", default=[300, 3000, 30000])
    ap.add_argument("--old-dir", help="an older checkout whose curves.py is timed the old way")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    old = _load_curves(Path(a.old_dir)) if a.old_dir else None
    rows = []
    for n in a.steps:
        events = synthetic_events(n)
        window = EventWindow().extend(events)

        def new_refresh() -> int:
            ev = window.events()
            return len(curves.accuracy_figure(ev, total_steps=n).to_json()) + \
                len(curves.training_figure(ev, ["negative", "positive"]).to_json())

        row = {"steps": n, "events": len(events), "held_in_memory": len(window.events()),
               "new_s": round(_median_time(new_refresh, a.reps), 4), "new_kb": round(new_refresh() / 1024, 1)}
        if old is not None:
            def old_refresh() -> int:
                ev = list(events)
                return len(old.accuracy_figure(ev, total_steps=n).to_json()) + \
                    len(old.training_figure(ev, ["negative", "positive"]).to_json())

            row["old_s"] = round(_median_time(old_refresh, a.reps), 4)
            row["old_kb"] = round(old_refresh() / 1024, 1)
        rows.append(row)
    out = {"refresh_cpu_s": rows, "note": "CPU seconds of the app process per refresh (process_time); kb: figure JSON sent to the browser"}
    print(json.dumps(out) if a.json else json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
