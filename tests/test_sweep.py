"""Sweeps on Ray Tune: two tiny trials on the demo data land in the run store as one sweep, and a
re-run skips them; `study --executor ray` runs rows as Ray tasks."""

from __future__ import annotations

import json

import pytest

from distill_core.errors import UserError
from distill_core.runs import list_runs
from distill_core.sweep import SweepConfig, parse_grid, plan_trials, run_sweep
from distill_core.views import runs as views

pytestmark = pytest.mark.slow

BASE = ["--task", "demo", "--seq-len", "8", "--real-batch", "8", "--train-rows", "120", "--outer-steps", "3",
        "--eval-every", "2", "--eval-learners", "1", "--no-baselines", "--no-eval-at-start"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.delenv("DISTILL_DATA_DIR", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def test_a_ray_sweep_lands_in_the_run_store_as_one_sweep_and_resumes(tmp_path):
    config = SweepConfig(name="lrs", grid=parse_grid(["lr=0.01,0.05"]), base=BASE, runs_root=str(tmp_path),
                         executor="ray", cpus_per_trial=1)
    manifest = run_sweep(config, log=lambda s: None)
    assert [t["status"] for t in manifest["trials"]] == ["done", "done"]
    runs = {r.name: r for r in list_runs(tmp_path)}
    assert set(runs) == {"lrs-t000", "lrs-t001"}
    for t in manifest["trials"]:
        cfg = runs[t["run"]].config()
        assert cfg["run"]["sweep"] == {"name": "lrs", "point": t["point"]}
        assert cfg["distill"]["lr_embeds"] == float(t["point"]["lr"])           # the point reached the run
        evals = [e for e in runs[t["run"]].metrics() if e["type"] == "eval"]
        assert [e["step"] for e in evals] == [2, 3] and all(e["loss"]["mean"] > 0 for e in evals)
    grouped = views.sweeps(list(runs.values()))                                 # the Runs page's grouping
    assert list(grouped) == ["lrs"] and [r.name for r in grouped["lrs"]] == ["lrs-t000", "lrs-t001"]
    frame = views.sweep_frame(grouped["lrs"])
    assert list(frame["lr"]) == [0.01, 0.05] and list(frame["status"]) == ["done", "done"]
    assert len(views.sweep_figure(frame, "lrs").data) == 1
    before = {n: (r.path / "metrics.jsonl").stat().st_mtime_ns for n, r in runs.items()}
    log: list[str] = []
    again = run_sweep(config, log=log.append)
    assert "2 finished earlier, 0 to run" in log[0]
    assert [t["status"] for t in again["trials"]] == ["done", "done"]
    assert {n: (r.path / "metrics.jsonl").stat().st_mtime_ns for n, r in runs.items()} == before


def test_sweep_settings_are_checked_before_anything_runs(tmp_path):
    for grid, message in [(["lr"], "is not flag=value"), (["no-such-flag=1"], "not valid distill flags"),
                          (["lr=x"], "not valid distill flags")]:
        with pytest.raises(UserError, match=message):
            plan_trials(SweepConfig(name="s", grid=parse_grid(grid), base=BASE, runs_root=str(tmp_path)))
    for change, message in [({"name": "../up"}, "is not a run name"), ({"base": [*BASE, "--out", "x"]}, "--out"),
                            ({"executor": "slurm"}, "--executor")]:
        with pytest.raises(UserError, match=message):
            SweepConfig(**{"name": "s", "grid": {"lr": ["0.1"]}, "base": BASE, "runs_root": str(tmp_path),
                           **change}).validate()
    assert list(tmp_path.iterdir()) == []


def test_study_rows_run_as_ray_tasks(tmp_path):
    from distill_core.study import Study, StudyConfig

    tiny = dict(preset="smoke", learners=2, outer_steps=2, grid_steps=1, grid_learners=1, grid_outer_lr=(0.01,),
                grid_inner_lr_init=(0.1,), full_steps=2, seq_len=8, max_length=32, device="cpu", seeds=1,
                only=("majority", "demo-sl"), executor="ray", cpus_per_row=1)
    log: list[str] = []
    rows = Study(StudyConfig(out=str(tmp_path), **tiny), log=log.append).run()
    assert [r["key"] for r in rows] == ["demo-majority", "demo-sl-1x1"]
    assert json.loads((tmp_path / "grid" / "demo.json").read_text())["chosen"]["inner_lr_init"] == 0.1
    assert (tmp_path / "runs" / "demo-sl-1x1" / "checkpoints" / "last.safetensors").exists()
    again = Study(StudyConfig(out=str(tmp_path), **tiny), log=log.append).run()
    assert again == rows


def test_the_runs_page_shows_a_sweep_as_one_group(tmp_path, monkeypatch):
    from test_app_pages import app, ok

    config = SweepConfig(name="grid", grid=parse_grid(["lr=0.01,0.05"]), base=BASE, runs_root=str(tmp_path),
                         executor="local", cpus_per_trial=1)
    assert [t["status"] for t in run_sweep(config, log=lambda s: None)["trials"]] == ["done", "done"]
    monkeypatch.setenv("DISTILL_RUNS_DIR", str(tmp_path))
    at = ok(app("app_pages/runs.py").run())
    assert [e.label for e in at.expander if e.label.startswith("Sweep")] == ["Sweep grid: 2 trials"]
    table = next(d.value for d in at.dataframe if "trial" in d.value.columns)
    assert list(table["trial"]) == ["grid-t000", "grid-t001"] and list(table["lr"]) == [0.01, 0.05]
    runs = at.dataframe[0].value                                           # the runs table names the sweep
    assert sorted(runs[runs["run"].str.startswith("grid-")]["sweep"]) == ["grid", "grid"]
