"""Scale-out costs on this machine: 1 process x meta-batch 2 against 2 gloo ranks x meta-batch 1 (the same
draws), and a Ray Tune sweep against running its trials one after another.

  python bench/scale_out.py --data-dir ../shared/data --minutes 3 --json

Part 1 runs both layouts for the same wall-clock budget (--max-minutes) on SST-2 from the cpu preset,
reports the median seconds per outer step, the steps done, whether the common steps produced the same
distilled data, and the dev accuracy of each (10 learners, the whole dev split). Part 2 times a
two-trial sweep on the demo data with --executor ray and --executor local. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{done.stderr[-2000:]}")
    return time.perf_counter() - t0


def _steps(run: Path) -> list[dict]:
    return [e for e in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if e["type"] == "step"]


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("DISTILL_DATA_DIR", None)
    tmp = Path(tempfile.mkdtemp(prefix="scale-out-"))
    common = ["--task", "sst2", "--data-dir", a.data_dir, "--outer-steps", "100000", "--eval-every", "0",
              "--no-baselines", "--no-eval-at-start", "--max-minutes", str(a.minutes), "--save-every-minutes", "0"]
    one, two = tmp / "one", tmp / "two"
    py = sys.executable
    _run([py, "-m", "distill_core", "distill", *common, "--meta-batch", "2", "--threads", "2", "--out", str(one)], env)
    _run([py, "-m", "torch.distributed.run", "--nproc-per-node=2", "--master-addr=127.0.0.1",
          f"--master-port={_port()}", "-m", "distill_core", "distill", *common, "--threads", "1", "--out", str(two)],
         env)
    out: dict = {"bench": "scale_out", "budget_minutes": a.minutes}
    for name, run in (("1 process x meta-batch 2", one), ("2 gloo ranks x meta-batch 1", two)):
        steps = _steps(run)
        res = json.loads(subprocess.run([py, "-m", "distill_core", "evaluate", str(run), "--split", "dev",
                                         "--learners", "10", "--threads", "2"], cwd=REPO, env=env,
                                        capture_output=True, text=True).stdout.splitlines()[-1])
        out[name] = {"steps": len(steps), "median_s_per_step": round(statistics.median(e["seconds"] for e in steps), 3),
                     "real_loss_last": steps[-1]["real_loss"], "dev_accuracy": res["accuracy"]}
    a1, a2 = _steps(one), _steps(two)
    common_steps = min(len(a1), len(a2))
    out["same_losses_on_common_steps"] = all(abs(x["real_loss"] - y["real_loss"]) < 1e-4
                                             for x, y in zip(a1[:common_steps], a2[:common_steps]))
    # part 2: a sweep of two tiny trials, on Ray and one by one
    base = ["--task", "demo", "--seq-len", "8", "--real-batch", "8", "--train-rows", "120", "--outer-steps", "20",
            "--eval-every", "10", "--eval-learners", "2", "--no-baselines"]
    for executor in ("ray", "local"):
        runs = tmp / f"sweep-{executor}"
        out[f"sweep_{executor}_seconds"] = round(_run(
            [py, "-m", "distill_core", "sweep", "--name", "s", "--grid", "lr=0.01,0.05", "--runs-dir", str(runs),
             "--executor", executor, "--cpus-per-trial", "1", "--", *base], {**env, "OMP_NUM_THREADS": "1"}), 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
