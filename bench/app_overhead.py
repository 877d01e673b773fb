"""What watching a run in the app costs the run: the real app in headless Chromium, one JSON line.

    python bench/app_overhead.py --data-dir ../shared/data [--app-dir DIR] [--phase-steps 40] [--json]

Starts `streamlit run app.py` (from --app-dir, so an older checkout can be measured the same
way), opens the Distill page in Debian's Chromium, starts a run with the form's default settings
(only the number of outer steps is set, so the run ends after the phases), then measures the
run's seconds per outer step while no page, one tab and two tabs show it. Then Runs › Evaluate
with N learners, its page open, against `python -m distill_core evaluate` on the same checkpoint.

Seconds per step are the wall-clock gaps between consecutive step records in the run's
metrics.jsonl (gaps that hold an evaluation are left out), so anything that delays the loop,
not just its arithmetic, counts.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from distill_core.app_server import running_app  # noqa: E402
CHROMIUM = "/usr/bin/chromium"


def _records(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


def _step_gaps(records: list[dict], t0: float, t1: float) -> list[float]:
    """Gaps between consecutive step records emitted in [t0, t1] with nothing else between them."""
    gaps, prev = [], None
    for r in records:
        if r.get("type") != "step":
            prev = None
            continue
        if prev is not None and t0 <= prev["time"] and r["time"] <= t1:
            gaps.append(r["time"] - prev["time"])
        prev = r
    return gaps


def _steps(run_dir: Path) -> int:
    return sum(1 for r in _records(run_dir) if r.get("type") == "step")


def _wait_steps(run_dir: Path, n: int, timeout: float) -> tuple[float, float]:
    start, deadline = _steps(run_dir), time.time() + timeout
    t0 = time.time()
    while _steps(run_dir) < start + n and time.time() < deadline:
        time.sleep(0.5)
    return t0, time.time()


def _phase(records: list[dict], window: tuple[float, float]) -> dict:
    gaps = _step_gaps(records, *window)
    return {"median_s": round(statistics.median(gaps), 4) if gaps else None, "steps": len(gaps)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True, help="data directory holding sst2/ (DISTILL_DATA_DIR)")
    ap.add_argument("--app-dir", default=str(REPO), help="checkout whose app.py and distill_core are measured")
    ap.add_argument("--phase-steps", type=int, default=40, help="outer steps measured per page state")
    ap.add_argument("--eval-learners", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    a = ap.parse_args()
    from playwright.sync_api import sync_playwright

    app_dir = Path(a.app_dir).resolve()
    runs = Path(tempfile.mkdtemp(prefix="app-overhead-runs-"))
    env = {**os.environ, "DISTILL_RUNS_DIR": str(runs), "DISTILL_DATA_DIR": str(Path(a.data_dir).resolve()),
           "PYTHONPATH": str(app_dir)}
    log = open(runs.parent / f"{runs.name}.streamlit.log", "w+")
    out: dict = {"app_dir": str(app_dir), "phase_steps": a.phase_steps}
    with running_app(app_dir, env, log) as url:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--headless", "--disable-gpu"])
            ctx = browser.new_context(viewport={"width": 1400, "height": 1600})
            page = ctx.new_page()
            page.goto(url)
            page.locator(".st-key-start button").wait_for(timeout=90_000)
            total = 4 * a.phase_steps + 10
            box = page.locator(".st-key-outer_steps input")
            box.fill(str(total))
            box.press("Enter")
            page.wait_for_timeout(1000)
            page.locator(".st-key-start button").click()
            page.wait_for_url(re.compile(r".*run=.+"), timeout=60_000)
            run_id = page.url.split("run=")[-1].split("&")[0]
            run_dir = runs / run_id
            started = time.time()
            while _steps(run_dir) < 3 and time.time() - started < 600:
                time.sleep(0.5)
            out["task"] = (json.loads((run_dir / "config.json").read_text())["data"]).get("task")
            windows = {}
            page.close()                                   # phase 1: nobody watches
            windows["no_page"] = _wait_steps(run_dir, a.phase_steps, 900)
            tabs = [ctx.new_page()]                        # phase 2: one tab on the run
            tabs[0].goto(f"{url}/?run={run_id}")
            windows["one_tab"] = _wait_steps(run_dir, a.phase_steps, 900)
            tabs.append(ctx.new_page())                    # phase 3: two tabs
            tabs[1].goto(f"{url}/?run={run_id}")
            windows["two_tabs"] = _wait_steps(run_dir, a.phase_steps, 900)
            for t in tabs:
                t.close()
            windows["no_page_again"] = _wait_steps(run_dir, a.phase_steps, 900)
            records = _records(run_dir)
            phases = {k: _phase(records, w) for k, w in windows.items()}
            base = [g for k in ("no_page", "no_page_again") for g in _step_gaps(records, *windows[k])]
            base_median = statistics.median(base) if base else None
            out["phases"] = phases
            out["no_page_median_s"] = round(base_median, 4) if base_median else None
            for k in ("one_tab", "two_tabs"):
                m = phases[k]["median_s"]
                out[f"{k}_ratio"] = round(m / base_median, 3) if m and base_median else None
            # let the run finish (nobody watching), then evaluate from the Runs page
            deadline = time.time() + 900
            while time.time() < deadline and not any(r.get("type") in ("done", "stopped", "error")
                                                     for r in _records(run_dir)):
                time.sleep(1.0)
            page = ctx.new_page()
            page.goto(f"{url}/runs?run={run_id}")
            page.get_by_role("tab", name="Evaluate").click()
            box = page.locator(".st-key-eval_n input")
            box.fill(str(a.eval_learners))
            box.press("Enter")
            page.wait_for_timeout(1000)
            results = run_dir / "results.json"
            t0 = time.time()
            page.locator(".st-key-evaluate button").click()
            seen: list[str] = []
            while time.time() - t0 < 900:
                ev = json.loads(results.read_text()).get("evaluation") if results.exists() else None
                if ev and ev.get("learners") == a.eval_learners:
                    break
                try:
                    text = page.locator("[data-testid='stProgress']").first.inner_text(timeout=200)
                    found = re.search(r"(\d+)\s*/\s*(\d+)", text)
                    if found and found.group(0) not in seen:
                        seen.append(found.group(0))
                except Exception:
                    pass
                time.sleep(0.3)
            ui_s = time.time() - t0
            ckpt = ev["checkpoint"] if ev else "last"
            browser.close()
        t0 = time.time()
        subprocess.run([sys.executable, "-m", "distill_core", "evaluate", str(run_dir), "--learners",
                        str(a.eval_learners), "--checkpoint", ckpt], cwd=app_dir, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cli_s = time.time() - t0
        out["evaluate"] = {"learners": a.eval_learners, "checkpoint": ckpt, "page_open_s": round(ui_s, 2),
                           "cli_s": round(cli_s, 2), "ratio": round(ui_s / cli_s, 3), "progress_seen": seen}
    log.close()
    from distill_core.machine import machine_info

    out["machine"] = machine_info()
    print(json.dumps(out) if a.json else json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
