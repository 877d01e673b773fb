"""Background jobs: job processes, the queue, cooperative and firm stops, kills, checks before a run exists."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from distill_core import jobs
from distill_core.errors import UserError
from distill_core.event_window import EventWindow
from distill_core.runs import RunDir, list_runs, move_to_trash
from distill_core.views import form

TINY = dict(task="demo", seq_len=8, real_batch_size=4, max_length=16, eval_learners=1, eval_rows=20)


def waiting_work(release: threading.Event):
    def work(job: jobs.Job) -> dict:
        job.set_running("waiting")
        while not (release.is_set() or job.stop_event.is_set()):
            time.sleep(0.01)
        return {"status": "stopped" if job.stop_event.is_set() else "done"}
    return work


def wait_for(predicate, timeout: float = 120.0) -> bool:
    deadline = time.time() + timeout
    while not predicate() and time.time() < deadline:
        time.sleep(0.1)
    return predicate()


def test_registry_runs_one_job_and_queues_the_rest_in_order(tmp_path):
    reg, release = jobs.JobRegistry(), threading.Event()
    first = reg.start(jobs.Job("a", "distill", tmp_path / "a", waiting_work(release)))
    second = reg.start(jobs.Job("b", "distill", tmp_path / "b", waiting_work(release)))
    third = reg.start(jobs.Job("c", "distill", tmp_path / "c", waiting_work(release)))
    with pytest.raises(jobs.JobBusy) as busy:
        reg.start(jobs.Job("d", "distill", tmp_path / "d", waiting_work(release)), queue=False)
    assert busy.value.job is first and reg.get("d") is None
    assert reg.active() is first and second.status == "queued" and second.snapshot().queued_behind == "a"
    assert third.snapshot().queued_behind == "b"
    assert reg.cancel(third) and third.join(5) and third.status == "stopped"
    first.stop()                                   # cooperative: the work sees the stop event
    assert first.join(5) and first.status == "stopped"
    assert wait_for(lambda: reg.active() is second, 5)
    release.set()
    assert second.join(5) and second.status == "done" and reg.active() is None
    assert [j.id for j in reg.jobs()] == ["a", "b", "c"]


@pytest.mark.parametrize("exc, text", [(UserError("seq_len must be >= 2"), "seq_len must be >= 2"),
                                       (ZeroDivisionError("boom"), "ZeroDivisionError: boom")])
def test_errors_in_in_process_work_reach_the_snapshot(tmp_path, exc, text):
    def work(job):
        raise exc

    job = jobs.JobRegistry().start(jobs.Job("x", "distill", tmp_path, work))
    assert job.join(5)
    snap = job.snapshot()
    assert snap.status == "error" and snap.message == text and not snap.active


def test_progress_snapshot_counts_steps_eta_and_versions(tmp_path):
    job = jobs.Job("p", "distill", tmp_path, lambda j: None, total=10)
    job.emit({"type": "start", "step": 0, "outer_steps": 10})
    job.emit({"type": "eval", "step": 0, "metrics": {"accuracy": {"mean": 50.0, "std": 1.0, "n": 2}}})
    v = job.version
    for s, sec in ((1, 0.5), (2, 1.5), (3, 0.5)):
        job.emit({"type": "step", "step": s, "seconds": sec, "real_loss": 0.7, "inner_lrs": [0.1], "labels": []})
    snap = job.snapshot()
    assert (snap.step, snap.total) == (3, 10) and snap.version == v + 3
    assert snap.eta == pytest.approx(7 * 0.5)       # median of recent step times, times the steps left
    assert snap.first_eval_after is not None and snap.latest("eval")["step"] == 0
    light = job.snapshot(events=False)                # a status check needs no event list
    assert light.events == [] and (light.step, light.version, light.eta) == (snap.step, snap.version, snap.eta)
    snap.events.append({"type": "junk"})
    assert len(job.snapshot().events) == 5            # a snapshot is a copy


def test_event_window_stays_bounded_and_keeps_evaluations_and_the_latest_steps():
    w = EventWindow(history=500, recent=100)
    w.add({"type": "start", "step": 0, "outer_steps": 60_000})
    for s in range(1, 60_001):
        w.add({"type": "step", "step": s, "real_loss": 1.0 / s})
        if s % 1000 == 0:
            w.add({"type": "eval", "step": s, "metrics": {"accuracy": {"mean": 50.0 + s / 2000, "std": 0.0}}})
    events = w.events()
    steps = [e["step"] for e in events if e["type"] == "step"]
    assert len(steps) <= 500 + 100 and len(events) <= 500 + 100 + 61     # bounded, whatever the run's length
    assert steps == sorted(set(steps)) and steps[-1] == 60_000 and steps[0] <= 128
    assert list(range(59_901, 60_001)) == steps[-100:]          # the recent window at full resolution
    assert [e["step"] for e in events if e["type"] == "eval"] == list(range(1000, 60_001, 1000))
    assert events[0]["type"] == "start" and w.count == 60_001 + 60


def test_reserving_run_directories_from_many_threads_never_collides(tmp_path):
    got, barrier = [], threading.Barrier(16)

    def reserve():
        barrier.wait()
        got.append(jobs.reserve_run_dir(tmp_path, "demo-20260101-120000"))

    threads = [threading.Thread(target=reserve) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 16 and all(p.is_dir() for p in got)


@pytest.mark.parametrize("settings, message", [
    ({"seq_len": 1}, "seq_len must be >= 2"),
    ({"outer_steps": 0}, "outer_steps must be >= 1"),
    ({"seq_len": 4096}, "seq_len 4096 is above the model's 512 max positions"),
    ({"task": "mrpc", "data_dir": "/nonexistent/data"}, "data directory not found: /nonexistent/data"),
    ({"samples_per_class": 1, "inner_steps": 2, "different_data_per_step": True}, "multiple of inner_steps"),
])
def test_start_distill_rejects_bad_settings_before_any_directory_or_job(tmp_path, settings, message):
    reg = jobs.JobRegistry()
    cfg = form.config_from_values({**TINY, **settings})
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        jobs.start_distill(cfg, reg, runs_root=tmp_path / "runs")
    assert reg.jobs() == [] and not (tmp_path / "runs").exists()


def test_a_task_without_its_files_is_refused_before_the_run(tmp_path, monkeypatch):
    monkeypatch.delenv("DISTILL_DATA_DIR", raising=False)
    cfg = form.config_from_values({**TINY, "task": "mrpc", "data_dir": str(tmp_path)})
    cfg.data.allow_hub = False
    with pytest.raises(UserError, match="task 'mrpc' has no train split"):
        jobs.start_distill(cfg, jobs.JobRegistry(), runs_root=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("train, message", [
    (b"text,label\na,pos\nb,neg\n", r"'my train.csv': missing column\(s\) 'sentence'"),
    (b'sentence,label\n"never closed,positive\nbad,negative\n', r"could not parse 'my train.csv' near line \d"),
    (b"sentence,label\ngood,positive\nbad,negative,extra\n", "'my train.csv': line 3 has 3 field"),
    (b"sentence,label\ngood\nbad,negative\n", "'my train.csv': line 2 has 1 field"),
    (b"sentence,label\ngood,\nbad,negative\n", "empty label in column 'label'"),
])
def test_uploads_are_checked_under_their_own_names_and_leave_nothing(tmp_path, train, message):
    reg = jobs.JobRegistry()
    cfg = form.config_from_values({"text_columns": "sentence", "label_column": "label"}, "upload")
    uploads = {"train": ("my train.csv", train), "eval": ("e.csv", b"sentence,label\na,positive\nb,negative\n")}
    with pytest.raises(UserError, match=message) as err:
        jobs.start_distill(cfg, reg, runs_root=tmp_path, uploads=uploads)
    assert "distill-upload-" not in str(err.value)         # never the staged copy's path
    assert reg.jobs() == [] and list(tmp_path.iterdir()) == []


def test_a_distill_job_runs_in_its_own_process_stops_is_killed_and_resumes(tmp_path):
    """Start in a job process, watch it, stop it cooperatively; resume; kill the resumed process."""
    reg = jobs.JobRegistry()
    cfg = form.config_from_values({**TINY, "outer_steps": 400, "eval_every": 5, "eval_at_start": False,
                                   "baselines": False})
    job = jobs.start_distill(cfg, reg, runs_root=tmp_path, name="watch me", notes="a note", owner="s1",
                             owner_label="browser session s1")
    assert wait_for(lambda: job.snapshot().step >= 6 or job.snapshot().finished)
    snap = job.snapshot()
    assert snap.pid is not None and snap.pid != os.getpid() and snap.status == "running", snap.message
    assert snap.eta is not None and snap.owner == "s1"
    job.stop()
    assert job.join(120) and job.status == "stopped", job.snapshot().message
    run = RunDir(job.run_dir)
    assert run.name.startswith("watch-me-") and run.config()["run"] == {
        "name": "watch me", "notes": "a note", "started_by": "browser session s1"}
    stopped_at = run.state()["step"]
    assert 6 <= stopped_at < 400 and run.metrics()[-1]["type"] == "stopped"

    again = jobs.start_resume(run, reg, owner="s2")
    assert wait_for(lambda: again.snapshot().step >= stopped_at + 6 or again.snapshot().finished)
    assert again.snapshot().status == "running" and again.snapshot().step > stopped_at
    os.kill(again.pid, signal.SIGKILL)                # a crash, an OOM kill, a power cut of the job
    assert again.join(60)
    dead = again.snapshot()
    assert dead.status == "killed" and "SIGKILL" in dead.message and "Resume" in dead.message, dead.message
    assert reg.active() is None
    assert run.state()["step"] > stopped_at           # the resumed part kept its checkpoints


def test_an_evaluation_job_reports_each_learner_and_writes_results(tmp_path):
    reg = jobs.JobRegistry()
    cfg = form.config_from_values({**TINY, "outer_steps": 2, "eval_every": 0, "eval_at_start": False,
                                   "baselines": False})
    job = jobs.start_distill(cfg, reg, runs_root=tmp_path)
    assert job.join(180) and job.status == "done", job.snapshot().message
    run = RunDir(job.run_dir)
    seen = []
    ev = jobs.start_evaluate(run, "last", 3, reg)
    while not ev.snapshot().finished:
        seen.append(ev.snapshot().done_units)
        time.sleep(0.05)
    assert ev.status == "done", ev.snapshot().message
    assert sorted(set(seen)) == [0, 1, 2, 3][:len(set(seen))] and max(seen) >= 2   # advanced one learner at a time
    record = run.results()["evaluation"]
    assert record["learners"] == 3 and record["split"] == "validation" and record["checkpoint"] == "last"


def test_runs_go_to_the_trash_not_to_oblivion(tmp_path):
    run = RunDir(tmp_path / "r1")
    run.path.mkdir()
    (run.path / "config.json").write_text("{}")
    where = move_to_trash(run, tmp_path)
    assert where.parent == tmp_path / ".trash" and (where / "config.json").exists()
    assert list_runs(tmp_path) == []
    outside = RunDir(tmp_path.parent / "elsewhere")
    with pytest.raises(UserError, match="only your own runs"):
        move_to_trash(outside, tmp_path)
