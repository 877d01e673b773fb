"""Data parallelism on gloo, launched the way users launch it (torchrun): two ranks give one process's
result, resume with another number of ranks, split an evaluation, and a rank that diverges is caught."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO

pytestmark = pytest.mark.slow

RUN = ("--task", "demo", "--seq-len", "8", "--real-batch", "8", "--train-rows", "120", "--eval-every", "0",
       "--no-baselines", "--no-eval-at-start", "--eval-learners", "1", "--threads", "1", "--lr", "0.05")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("DISTILL_DATA_DIR", None)
    return env


def _torchrun(n: int, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={n}", "--master-addr=127.0.0.1",
           f"--master-port={_port()}", "-m", "distill_core", *args]
    done = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _single(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "distill_core", *args], cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _learned(run) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / "last.safetensors"))


def _assert_same(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-6, atol=1e-6, msg=lambda m: f"{name}: {m}")


def test_two_gloo_ranks_equal_one_process_averaging_the_same_draws_and_resume_on_one(tmp_path):
    one = tmp_path / "one"
    _single("distill", *RUN, "--outer-steps", "5", "--meta-batch", "2", "--out", str(one))
    two = tmp_path / "two"
    _torchrun(2, "distill", *RUN, "--outer-steps", "3", "--out", str(two))
    config = json.loads((two / "config.json").read_text())
    assert config["world_size"] == 2 and config["draws_per_step"] == 2 and config["distill"]["meta_batch"] == 1
    steps = [json.loads(x) for x in (two / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in steps if e["type"] == "step"] == [1, 2, 3]      # rank 0 alone logs
    # the run keeps its two draws per step on one process (meta-batch 2), and ends where the 5-step run did
    _single("distill", "--resume", "--out", str(two), "--outer-steps", "5", "--threads", "1")
    _assert_same(_learned(one), _learned(two))
    # not a vacuous equality: other draws (meta-batch 1, stream 0 only) end elsewhere
    other = tmp_path / "other"
    _single("distill", *RUN, "--outer-steps", "5", "--out", str(other))
    assert not torch.allclose(_learned(other)["embeds"], _learned(one)["embeds"], rtol=1e-4, atol=1e-5)


def test_a_two_rank_evaluation_equals_the_single_process_one(tmp_path):
    run = tmp_path / "run"
    _single("distill", *RUN, "--outer-steps", "2", "--out", str(run))
    alone = json.loads(_single("evaluate", str(run), "--learners", "5", "--threads", "1").stdout.splitlines()[-1])
    lines = _torchrun(2, "evaluate", str(run), "--learners", "5", "--threads", "1").stdout.splitlines()
    assert len(lines) == 1                                                     # rank 0 alone prints
    split = json.loads(lines[-1])
    assert split == alone and split["accuracy"]["n"] == 5
    (stored,) = json.loads((run / "results.json").read_text())["evaluations"].values()   # same key: one entry
    assert stored["metrics"] == alone and len(stored["per_learner"]) == 5


def _diverge(rank: int, size: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from distill_core.parallel import RanksDiverged, check_in_sync, gather_json, sum_across

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=size)
    same = {"embeds": torch.arange(6.0).reshape(2, 3), "lr": torch.tensor([0.3])}
    check_in_sync(same, step=10)                                                # equal: silent
    total = sum_across(torch.full((3,), float(rank + 1)))
    gathered = gather_json({"rank": rank, "rows": [rank] * (rank + 1)})
    apart = {"embeds": same["embeds"] + (1e-3 if rank == 1 else 0.0), "lr": same["lr"]}
    try:
        check_in_sync(apart, step=20)
        caught = None
    except RanksDiverged as exc:
        caught = str(exc)
    with open(f"{out}/{rank}.json", "w") as f:
        json.dump({"caught": caught, "sum": total.tolist(), "gathered": gathered}, f)
    dist.destroy_process_group()


def test_a_rank_that_diverges_is_caught_on_every_rank(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_diverge, args=(2, _port(), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        seen = json.loads((tmp_path / f"{rank}.json").read_text())
        assert seen["caught"] and "rank 1 no longer holds rank 0's distilled data at outer step 20" in seen["caught"]
        assert "embeds" in seen["caught"]
        assert seen["sum"] == [3.0, 3.0, 3.0]
        assert seen["gathered"] == [{"rank": 0, "rows": [0]}, {"rank": 1, "rows": [1, 1]}]
