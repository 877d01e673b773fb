"""Background jobs (distillation, evaluation): a thread, a stop event and a thread-safe progress snapshot.

The worker thread only talks to the engine and to its `Job`; it never touches a UI. A UI polls
`Job.snapshot()` (a copy taken under the job's lock). One process-wide `JobRegistry` keeps
the jobs by id and allows one heavy job at a time, so a laptop is never asked to run two.
"""

from __future__ import annotations

import copy
import hashlib
import re
import shutil
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .errors import UserError
from .runs import RunDir, default_runs_dir, new_run_name, write_json

__all__ = ["Job", "JobSnapshot", "JobBusy", "JobRegistry", "REGISTRY", "start_distill", "start_evaluate",
           "stage_uploads", "unique_run_dir", "write_imported_run", "ACTIVE"]

ACTIVE = ("starting", "running")   # statuses of a job that still holds the heavy-work slot


@dataclass
class JobSnapshot:
    """A consistent copy of a job's progress, safe to read from any thread."""

    id: str
    kind: str                        # distill | evaluate
    status: str                      # starting | running | done | stopped | error
    run_dir: str
    message: str = ""                # error text, or what the job is doing now
    events: list[dict] = field(default_factory=list)
    step: int = 0
    total: int = 0                   # outer steps (distill) or learners (evaluate)
    done_units: int = 0              # learners finished (evaluate)
    started: float = 0.0             # time.time() at start
    elapsed: float = 0.0
    eta: float | None = None         # seconds left, once it can be estimated
    result: dict | None = None
    first_eval_after: float | None = None   # seconds from Start to the first accuracy point

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def latest(self, kind: str) -> dict | None:
        return next((e for e in reversed(self.events) if e.get("type") == kind), None)


class Job:
    """One unit of heavy work on its own daemon thread; `work(job)` does it and reports via `emit`."""

    def __init__(self, job_id: str, kind: str, run_dir: Path, work: Callable[["Job"], dict | None], total: int = 0):
        self.id, self.kind, self.run_dir = job_id, kind, Path(run_dir)
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self._work = work
        self._snap = JobSnapshot(job_id, kind, "starting", str(run_dir), message="loading model and data",
                                 total=total, started=time.time())
        self._first_step_began: float | None = None   # wall time when the first step of this session began
        self._first_step = 0
        self._on_stop: Callable[[], None] | None = None
        self.thread = threading.Thread(target=self._main, name=f"job-{job_id}", daemon=True)

    # --- worker side -------------------------------------------------------------------------
    def _main(self) -> None:
        try:
            result = self._work(self)
            with self._lock:
                self._snap.result = result
                if self._snap.status in ACTIVE:
                    self._snap.status = (result or {}).get("status", "done")
                    if self._snap.status == "error":
                        self._snap.message = (result or {}).get("message", "the job failed")
        except UserError as exc:
            self._fail(str(exc))
        except Exception as exc:  # a crash must reach the page, not vanish with the thread
            self._fail(f"{type(exc).__name__}: {exc}", traceback.format_exc())
        finally:
            with self._lock:
                self._snap.elapsed = time.time() - self._snap.started
                self._snap.eta = None if self._snap.status != "running" else self._snap.eta

    def _fail(self, message: str, trace: str = "") -> None:
        with self._lock:
            self._snap.status = "error"
            self._snap.message = message
            if trace:
                self._snap.result = {"traceback": trace}

    def set_running(self, message: str = "", on_stop: Callable[[], None] | None = None) -> None:
        with self._lock:
            self._snap.status = "running"
            self._snap.message = message
            self._on_stop = on_stop
        if on_stop is not None and self.stop_event.is_set():
            on_stop()

    def emit(self, event: dict) -> None:
        """Record an engine event (the distiller's callback) and update the progress figures."""
        now = time.time()
        with self._lock:
            s = self._snap
            s.events.append(event)
            kind = event.get("type")
            if kind == "start":
                s.total = int(event.get("outer_steps", s.total))
                s.step = int(event.get("step", 0))
            elif kind == "step":
                s.step = int(event["step"])
                if self._first_step_began is None:
                    self._first_step_began = now - float(event.get("seconds", 0.0))
                    self._first_step = s.step
                done = s.step - self._first_step + 1
                rate = (now - self._first_step_began) / max(1, done)
                s.eta = max(0.0, rate * (s.total - s.step))
            elif kind == "eval" and s.first_eval_after is None:
                s.first_eval_after = now - s.started
            elif kind == "progress":
                s.done_units, s.total = int(event["done"]), int(event["total"])
                rate = (now - s.started) / max(1, s.done_units)
                s.eta = rate * (s.total - s.done_units)
            s.elapsed = now - s.started

    # --- UI side -------------------------------------------------------------------------
    @property
    def status(self) -> str:
        with self._lock:
            return self._snap.status

    def snapshot(self) -> JobSnapshot:
        with self._lock:
            snap = copy.copy(self._snap)
            snap.events = list(self._snap.events)   # event dicts are never mutated after emit
            if snap.status in ACTIVE:
                snap.elapsed = time.time() - snap.started
        return snap

    def stop(self) -> None:
        """Ask the work to stop at its next safe point (cooperative; the run keeps its checkpoints)."""
        self.stop_event.set()
        with self._lock:
            on_stop = self._on_stop
            if self._snap.status in ACTIVE:
                self._snap.message = "stopping after the current step"
        if on_stop is not None:
            on_stop()

    def join(self, timeout: float | None = None) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive()


class JobBusy(RuntimeError):
    """Raised by `JobRegistry.start` while another heavy job runs; `.job` is that job."""

    def __init__(self, job: Job):
        super().__init__(f"a {job.kind} job is active: {job.id}")
        self.job = job


class JobRegistry:
    """Jobs by id, process-wide; at most one active (heavy) job at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}

    def start(self, job: Job) -> Job:
        with self._lock:
            busy = self._active_locked()
            if busy is not None:
                raise JobBusy(busy)
            self._jobs[job.id] = job
            job.thread.start()
        return job

    def _active_locked(self) -> Job | None:
        return next((j for j in self._jobs.values() if j.status in ACTIVE), None)

    def active(self) -> Job | None:
        with self._lock:
            return self._active_locked()

    def get(self, job_id: str | None) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id) if job_id else None

    def jobs(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())


REGISTRY = JobRegistry()


# --- job builders --------------------------------------------------------------------------------
def unique_run_dir(root: Path, stem: str) -> Path:
    """`root/stem`, or `root/stem-2`, ... : never an existing run directory."""
    path, n = root / stem, 1
    while path.exists():
        n += 1
        path = root / f"{stem}-{n}"
    return path


def stage_uploads(files: dict[str, tuple[str, bytes]], dest: Path) -> dict[str, str]:
    """Write uploaded files {role: (file name, bytes)} under `dest`; returns {role: path}."""
    out = {}
    for role, (name, data) in files.items():
        if not data:
            raise UserError(f"the uploaded {role} file {name!r} is empty")
        suffix = Path(name).suffix.lower()
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(name).stem)[:60] or role
        digest = hashlib.sha1(data).hexdigest()[:8]
        path = dest / f"{role}-{safe}-{digest}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        out[role] = str(path)
    return out


def start_distill(config, registry: JobRegistry = REGISTRY, runs_root: Path | None = None,
                  uploads: dict[str, tuple[str, bytes]] | None = None) -> Job:
    """Validate a RunConfig, stage uploaded files inside the new run directory and start the outer loop.

    Mistakes in settings or custom files raise UserError here, before any thread starts;
    a busy registry raises JobBusy. Nothing is written unless the run can start.
    """
    from .data import load_task_data
    from .distiller import Distiller

    root = Path(runs_root) if runs_root is not None else default_runs_dir()
    busy = registry.active()
    if busy is not None:
        raise JobBusy(busy)
    run_dir = unique_run_dir(root, new_run_name(config.data.task or "custom") if not uploads
                             else new_run_name("custom"))
    if uploads:
        staged = stage_uploads(uploads, run_dir / "data")
        config.data.task = None
        config.data.train_file, config.data.eval_file = staged["train"], staged["eval"]
    try:
        config.validate()
        if config.data.is_custom:
            load_task_data(config.data)          # columns, labels, emptiness: cheap for custom files
    except Exception:
        if uploads and run_dir.exists():
            shutil.rmtree(run_dir)               # only what this call just wrote
        raise

    def work(job: Job) -> dict:
        distiller = Distiller(config, run_dir=run_dir, callbacks=[job.emit])
        job.set_running("distilling", on_stop=distiller.stop)
        if job.stop_event.is_set():
            return {"status": "stopped", "step": 0}
        return distiller.run_loop()

    job = Job(run_dir.name, "distill", run_dir, work, total=config.distill.outer_steps)
    try:
        return registry.start(job)
    except JobBusy:
        if uploads and run_dir.exists() and not RunDir(run_dir).exists():
            shutil.rmtree(run_dir)
        raise


def start_evaluate(run: RunDir, checkpoint: str, learners: int, registry: JobRegistry = REGISTRY,
                   seed: int = 1234, data_dir: str | None = None, eval_rows: int | None = None) -> Job:
    """Fine-tune `learners` fresh learners on a run's checkpoint; writes results.json like the CLI.

    The whole evaluation split is scored (eval_rows=None), whatever cap the run used for its
    periodic validation.
    """
    from .data import encode_split, load_task_data
    from .distilled import DistilledData
    from .distiller import RunConfig
    from .evaluation import EvalConfig, EvaluationStopped, evaluate_distilled
    from .learner import learner_from_config

    run.require()
    cfg = RunConfig.from_dict(run.config())
    cfg.model.device = "auto"          # a run made on a GPU server can be evaluated on a laptop, and back
    cfg.data.eval_rows = eval_rows
    if data_dir:
        cfg.data.data_dir = data_dir
    path = run.checkpoint(checkpoint)
    if not path.exists():
        raise UserError(f"{run.name} has no checkpoint {checkpoint!r}; available: "
                        f"{', '.join(run.list_checkpoints()) or 'none'}")
    EvalConfig(learners=learners, seed=seed).validate()

    def work(job: Job) -> dict:
        task = load_task_data(cfg.data)
        learner = learner_from_config(cfg.model, task.spec.num_labels, list(task.spec.label_names))
        distilled = DistilledData.load(path, device=learner.device, dtype=learner.dtype,
                                       expect=learner.fingerprint())
        encoded = encode_split(task.eval, learner.tokenizer, cfg.data.max_length)
        job.set_running(f"evaluating {checkpoint} with {learners} learners")
        try:
            result = evaluate_distilled(learner, distilled, encoded, task.spec.metrics,
                                        EvalConfig(learners=learners, seed=seed),
                                        progress=lambda d, t: job.emit({"type": "progress", "done": d, "total": t}),
                                        should_stop=job.stop_event.is_set)
        except EvaluationStopped as exc:  # a partial mean would mislead: nothing is written
            return {"status": "stopped", "message": str(exc)}
        n = len(result["per_learner"])
        record = {"checkpoint": checkpoint, "learners": n, "seed": seed, "eval_rows": len(encoded),
                  "metrics": result["metrics"], "per_learner": result["per_learner"],
                  "seconds": result["seconds"], "step": distilled.meta.get("step"), "demo": task.is_demo}
        run.update_results(evaluation=record)
        return {"status": "done", **record}

    job = Job(f"eval-{run.name}-{time.strftime('%H%M%S')}", "evaluate", run.path, work, total=learners)
    return registry.start(job)


def write_imported_run(base: RunDir, data: bytes, root: Path | None = None, name: str = "import") -> RunDir:
    """Make a new run holding an uploaded distilled-data file (already checked) with `base`'s settings."""
    root = Path(root) if root is not None else base.path.parent
    run = RunDir(unique_run_dir(root, f"{base.name}-{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)[:40]}"))
    run.checkpoints.mkdir(parents=True, exist_ok=True)
    (run.checkpoints / "last.safetensors").write_bytes(data)
    write_json(run.config_path, {**base.config(), "imported_from": base.name})
    return run
