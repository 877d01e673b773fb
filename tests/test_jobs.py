"""Background jobs: one heavy job at a time, cooperative stop, errors reach the UI, real distill runs."""

from __future__ import annotations

import threading
import time

import pytest

from distill_core import jobs
from distill_core.errors import UserError
from distill_core.runs import RunDir
from distill_core.views import form


def waiting_work(release: threading.Event):
    def work(job: jobs.Job) -> dict:
        job.set_running("waiting")
        while not (release.is_set() or job.stop_event.is_set()):
            time.sleep(0.01)
        return {"status": "stopped" if job.stop_event.is_set() else "done"}
    return work


def test_registry_holds_one_active_job_and_stop_is_cooperative(tmp_path):
    reg, release = jobs.JobRegistry(), threading.Event()
    first = reg.start(jobs.Job("a", "distill", tmp_path / "a", waiting_work(release)))
    with pytest.raises(jobs.JobBusy) as busy:
        reg.start(jobs.Job("b", "distill", tmp_path / "b", waiting_work(release)))
    assert busy.value.job is first and reg.get("b") is None
    assert reg.active() is first and reg.get("a") is first
    first.stop()
    assert first.join(5)
    assert first.snapshot().status == "stopped" and reg.active() is None
    second = reg.start(jobs.Job("b", "distill", tmp_path / "b", waiting_work(release)))
    release.set()
    assert second.join(5) and second.snapshot().status == "done"
    assert [j.id for j in reg.jobs()] == ["a", "b"]


@pytest.mark.parametrize("exc, text", [(UserError("seq_len must be >= 2"), "seq_len must be >= 2"),
                                       (ZeroDivisionError("boom"), "ZeroDivisionError: boom")])
def test_errors_in_the_worker_reach_the_snapshot(tmp_path, exc, text):
    def work(job):
        raise exc

    job = jobs.JobRegistry().start(jobs.Job("x", "distill", tmp_path, work))
    assert job.join(5)
    snap = job.snapshot()
    assert snap.status == "error" and snap.message == text and not snap.active


def test_progress_snapshot_counts_steps_eta_and_first_eval(tmp_path):
    job = jobs.Job("p", "distill", tmp_path, lambda j: None, total=10)
    job.emit({"type": "start", "step": 0, "outer_steps": 10})
    job.emit({"type": "eval", "step": 0, "metrics": {"accuracy": {"mean": 50.0, "std": 1.0, "n": 2}}})
    for s in (1, 2):
        job.emit({"type": "step", "step": s, "seconds": 0.5, "real_loss": 0.7, "inner_lrs": [0.1], "labels": []})
    snap = job.snapshot()
    assert (snap.step, snap.total) == (2, 10) and snap.eta is not None and snap.eta >= 0
    assert snap.first_eval_after is not None and snap.latest("eval")["step"] == 0
    snap.events.append({"type": "junk"})
    assert len(job.snapshot().events) == 4            # a snapshot is a copy


def test_unique_run_dir_never_reuses_a_directory(tmp_path):
    (tmp_path / "demo-1").mkdir()
    (tmp_path / "demo-1-2").mkdir()
    assert jobs.unique_run_dir(tmp_path, "demo-1").name == "demo-1-3"
    assert jobs.unique_run_dir(tmp_path, "fresh").name == "fresh"


def test_start_distill_rejects_bad_settings_before_any_thread_or_file(tmp_path):
    reg = jobs.JobRegistry()
    cfg = form.config_from_values({"task": "demo", "seq_len": 1})
    with pytest.raises(UserError, match="seq_len must be >= 2"):
        jobs.start_distill(cfg, reg, runs_root=tmp_path)
    assert reg.jobs() == [] and list(tmp_path.iterdir()) == []


def test_start_distill_checks_uploaded_columns_and_removes_what_it_staged(tmp_path):
    reg = jobs.JobRegistry()
    cfg = form.config_from_values({"text_columns": "sentence", "label_column": "label"}, "upload")
    uploads = {"train": ("t.csv", b"text,label\na,pos\nb,neg\n"), "eval": ("e.csv", b"text,label\na,pos\n")}
    with pytest.raises(UserError, match=r"missing column\(s\) 'sentence'"):
        jobs.start_distill(cfg, reg, runs_root=tmp_path, uploads=uploads)
    assert reg.jobs() == [] and list(tmp_path.iterdir()) == []


def test_a_real_distill_job_writes_the_engine_run_format_and_stops_cleanly(tmp_path):
    reg = jobs.JobRegistry()
    cfg = form.config_from_values(dict(task="demo", seq_len=8, outer_steps=200, eval_at_start=False,
                                       baselines=False, eval_every=0, real_batch_size=4, max_length=16))
    train = b"sentence,label\nlovely,positive\nawful,negative\ngreat,positive\nbad,negative\n"
    uploads = {"train": ("train.csv", train),
               "eval": ("eval.csv", b"sentence,label\nnice,positive\npoor,negative\n")}
    cfg.data.text_columns, cfg.data.label_column = ["sentence"], "label"
    job = jobs.start_distill(cfg, reg, runs_root=tmp_path, uploads=uploads)
    deadline = time.time() + 120
    while job.snapshot().step < 1 and job.snapshot().active and time.time() < deadline:
        time.sleep(0.2)
    job.stop()
    assert job.join(120)
    snap = job.snapshot()
    assert snap.status == "stopped", snap.message
    run = RunDir(job.run_dir)
    assert run.config()["data"]["train_file"].startswith(str(job.run_dir / "data"))   # uploads live in the run
    assert run.metrics()[-1]["type"] == "stopped" and "last" in run.list_checkpoints()
    assert 1 <= snap.step < 200
