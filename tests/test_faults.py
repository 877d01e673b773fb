"""Faults: a real distillation killed with SIGKILL at random moments resumes to the same distilled data;
a kill inside the checkpoint commit loses at most the step being committed."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from distill_core.distilled import DistilledData
from distill_core.distiller import Distiller
from distill_core.runs import RunDir
from test_distiller import demo_config

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
FLAGS = ["--task", "demo", "--no-hub", "--seq-len", "8", "--real-batch", "4", "--max-length", "16",
         "--outer-steps", "40", "--eval-every", "10", "--eval-learners", "1", "--eval-rows", "20",
         "--no-baselines", "--inner-lr-init", "0.1", "--lr", "0.05", "--threads", "1",
         "--save-every-minutes", "0.0001"]          # a resume point after about every step


def _cli(args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "distill_core", "distill", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _final(run: Path) -> dict[str, torch.Tensor]:
    return DistilledData.load(run / "checkpoints" / "last.safetensors").learnable()


def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_result(tmp_path):
    straight = _cli([*FLAGS, "--out", str(tmp_path / "straight")])
    out, err = straight.communicate(timeout=600)
    assert straight.returncode == 0, err[-2000:]

    run = tmp_path / "killed"
    rng = random.Random(16)
    # one kill while the model loads, then kills after randomly chosen steps, each a random instant later
    # (inside the next step, an evaluation or a commit: a resume point follows about every step)
    plan = [("loading", 1.0)] + [(n, rng.uniform(0.0, 0.3)) for n in sorted(rng.sample(range(3, 38), 3))]
    kills = 0
    for target, delay in plan + [(None, 0.0)]:
        if run.exists() and not (run / "config.json").exists():
            shutil.rmtree(run)                 # killed before config.json: nothing to resume, start anew
        proc = _cli([*FLAGS, "--out", str(run)] + (["--resume"] if (run / "config.json").exists() else []))
        if target is None:                     # the last one runs to the end
            _, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err[-2000:]
            break
        if target == "loading":
            time.sleep(delay)
        else:
            deadline = time.time() + 300
            while proc.poll() is None and time.time() < deadline and \
                    sum(1 for r in RunDir(run).metrics() if r["type"] == "step") < target:
                time.sleep(0.02)
            time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate()
    assert kills >= 3, kills
    print(f"\nsurvived {kills} SIGKILLs")
    want, got = _final(tmp_path / "straight"), _final(run)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6, msg=f"{name} after {kills} kills")
    steps = [r["step"] for r in RunDir(run).metrics() if r["type"] == "step"]
    assert steps == list(range(1, 41))            # every step once: resumes cut what came after their point
    evals = [r["step"] for r in RunDir(run).metrics() if r["type"] == "eval"]
    assert evals == sorted(set(evals))


@pytest.mark.parametrize("moment", ["tmp-written", "renamed-before-mirrors", "mirrors-stale"])
def test_a_kill_inside_the_commit_resumes_from_a_whole_resume_point(tmp_path, demo_prepared, moment):
    straight = Distiller(demo_config(outer_steps=6), run_dir=tmp_path / "a", prepared=demo_prepared)
    straight.run_loop()
    run = RunDir(tmp_path / "b")
    part = Distiller(demo_config(outer_steps=6), run_dir=run.path, prepared=demo_prepared)
    part.add_callback(lambda e: part.stop() if e["type"] == "step" and e["step"] == 3 else None)
    part.run_loop()                                  # a whole commit at step 3
    committed = run.resume_path.read_bytes()
    if moment == "tmp-written":                      # killed while writing the next commit's temporary file
        (run.checkpoints / ".resume.safetensors.tmp-999-1").write_bytes(committed[: len(committed) // 2])
        run.checkpoint("last").write_bytes(b"torn")
    elif moment == "renamed-before-mirrors":         # the rename landed; last/state.json are from before
        (run.path / "state.json").write_text('{"step": 1}')
    else:                                            # mirrors describe a step the commit never reached
        (run.path / "state.json").write_text('{"step": 5}')
        run.checkpoint("last").unlink()
    resumed = Distiller(demo_config(outer_steps=6), run_dir=run.path, prepared=demo_prepared, resume=True)
    assert resumed.step == 3
    assert resumed.run_loop()["status"] == "done"
    for name, t in straight.distilled.learnable().items():
        torch.testing.assert_close(resumed.distilled.learnable()[name], t, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def demo_prepared(bundled):
    from distill_core.distiller import prepare

    return prepare(demo_config(), learner=bundled)


def test_sigterm_stops_the_cli_cleanly_with_a_resume_point(tmp_path):
    run = tmp_path / "t"
    proc = _cli([*FLAGS, "--outer-steps", "5000", "--eval-every", "0", "--out", str(run)])
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "checkpoints" / "resume.safetensors").exists():
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert RunDir(run).metrics()[-1]["type"] == "stopped" and RunDir(run).resume_step() >= 1
