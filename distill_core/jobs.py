"""Background jobs (distillation, evaluation): each runs in its own process, watched by a thread of the app.

Why a process: a job run as a thread of the Streamlit process shared the interpreter and the
cores with every page refresh, and watching a run made it 3-7x slower. Here the job process
(`distill_core.job_worker`) owns its math threads; the app's watcher thread only reads its JSON
event lines into a bounded `EventWindow`. A UI polls `Job.snapshot()` (a copy taken under the
lock) and redraws only when `snapshot.version` moved.

One process-wide `JobRegistry` runs one heavy job at a time and queues the others in order, so a
laptop is never asked to run two, and two people pressing Start in the same second both get
their run. A job can also run in-process (`Job(..., work=fn)`), which the engine's tests use.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .errors import UserError
from .event_window import EventWindow
from .runs import RunDir, default_runs_dir, new_run_name, write_json

__all__ = ["Job", "JobSnapshot", "JobBusy", "JobRegistry", "REGISTRY", "start_distill", "start_evaluate",
           "start_anatomy", "start_resume", "stage_uploads", "reserve_run_dir", "write_imported_run",
           "ACTIVE", "FINISHED", "job_threads"]

ACTIVE = ("starting", "running")                 # holds the heavy-work slot
WAITING = ("queued",)
FINISHED = ("done", "stopped", "error", "killed")
STOP_GRACE_S = 60.0       # cooperative stop, then SIGTERM; the worker treats SIGTERM as a stop too
TERM_GRACE_S = 15.0       # then SIGKILL


def job_threads() -> int:
    """Math threads for a job process: every core (the app's own process stays out of their way)."""
    env = os.environ.get("DISTILL_JOB_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise UserError(f"DISTILL_JOB_THREADS must be an integer, got {env!r}") from None
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


@dataclass
class JobSnapshot:
    """A consistent copy of a job's progress, safe to read from any thread."""

    id: str
    kind: str                        # distill | evaluate | anatomy
    status: str                      # queued | starting | running | done | stopped | error | killed
    run_dir: str
    message: str = ""                # what the job is doing, or why it ended
    events: list[dict] = field(default_factory=list)
    step: int = 0
    total: int = 0                   # outer steps (distill) or learners (evaluate)
    done_units: int = 0              # learners finished (evaluate)
    started: float = 0.0             # time.time() when the job was submitted
    ran_from: float | None = None    # time.time() when its process started (after any queue)
    elapsed: float = 0.0
    eta: float | None = None         # seconds left, from recent step (or learner) times
    result: dict | None = None
    first_eval_after: float | None = None   # seconds from Start to the first accuracy point
    owner: str | None = None         # the browser session (or other caller) that started it
    owner_label: str = ""
    pid: int | None = None
    version: int = 0                 # grows with every event: redraw only when it moved
    log_tail: list[str] = field(default_factory=list)   # the job process's last stderr lines
    queued_behind: str | None = None

    @property
    def active(self) -> bool:
        return self.status in ACTIVE or self.status in WAITING

    @property
    def running(self) -> bool:
        return self.status in ACTIVE

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def latest(self, kind: str) -> dict | None:
        return next((e for e in reversed(self.events) if e.get("type") == kind), None)

    def ends_at(self) -> float | None:
        return None if self.eta is None else time.time() + self.eta


class Job:
    """One unit of heavy work: a job process (`spec`) or an in-process function (`work`), watched by a thread."""

    def __init__(self, job_id: str, kind: str, run_dir: Path, work: Callable[["Job"], dict | None] | None = None,
                 total: int = 0, spec: dict | None = None, owner: str | None = None, owner_label: str = "",
                 cleanup: Callable[["Job"], None] | None = None):
        if (work is None) == (spec is None):
            raise ValueError("a Job needs exactly one of work= (in-process) or spec= (job process)")
        self.id, self.kind, self.run_dir = job_id, kind, Path(run_dir)
        self.spec = spec
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self._work = work
        self._window = EventWindow()
        self._step_seconds: deque[float] = deque(maxlen=30)
        self._eval_seconds: deque[float] = deque(maxlen=5)
        self._stderr: deque[str] = deque(maxlen=40)
        self._snap = JobSnapshot(job_id, kind, "queued", str(run_dir), message="waiting for its turn",
                                 total=total, started=time.time(), owner=owner, owner_label=owner_label)
        self._eval_every = int(((spec or {}).get("config") or {}).get("distill", {}).get("eval_every") or 0)
        self._on_stop: Callable[[], None] | None = None
        self._proc: subprocess.Popen | None = None
        self._cleanup = cleanup
        self._on_finish: Callable[["Job"], None] | None = None
        self._finished = threading.Event()
        self.thread = threading.Thread(target=self._main, name=f"job-{job_id}", daemon=True)

    # --- watcher side ----------------------------------------------------------------------
    def _main(self) -> None:
        try:
            if self.stop_event.is_set():          # stopped while queued: never started
                self._set(status="stopped", message="stopped before it started")
                return
            self._set(status="starting", message="loading model and data", ran_from=time.time())
            if self._work is not None:
                self._run_in_process()
            else:
                self._run_process()
        finally:
            with self._lock:
                s = self._snap
                if s.status not in FINISHED:      # a watcher bug must never leave a job "running"
                    s.status, s.message = "error", s.message or "the job ended without a status"
                s.elapsed = time.time() - s.started
                s.eta = None
            if self._cleanup is not None:
                try:
                    self._cleanup(self)
                except OSError:
                    pass
            self._finished.set()
            if self._on_finish is not None:
                self._on_finish(self)

    def _run_in_process(self) -> None:
        try:
            result = self._work(self)
            self._finish_with(result)
        except UserError as exc:
            self._set(status="error", message=str(exc))
        except Exception as exc:  # a crash must reach the page, not vanish with the thread
            import traceback

            self._set(status="error", message=f"{type(exc).__name__}: {exc}",
                      result={"traceback": traceback.format_exc()})

    def _run_process(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
        threads = int(self.spec.get("threads") or job_threads())
        env.setdefault("OMP_NUM_THREADS", str(threads))
        spec = {**self.spec, "threads": threads}
        try:
            proc = subprocess.Popen([sys.executable, "-m", "distill_core.job_worker"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
                                    errors="replace", bufsize=1, env=env, cwd=os.getcwd(),
                                    start_new_session=True)   # a Ctrl-C meant for the app is not a kill
        except OSError as exc:
            self._set(status="error", message=f"could not start the job process: {exc}")
            return
        with self._lock:
            self._proc = proc
            self._snap.pid = proc.pid
        threading.Thread(target=self._read_stderr, args=(proc,), name=f"job-{self.id}-stderr", daemon=True).start()
        try:
            proc.stdin.write(json.dumps(spec) + "\n")
            proc.stdin.flush()
        except OSError:
            pass
        if self.stop_event.is_set():
            self._send_stop()
        final: dict | None = None
        for line in proc.stdout:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                self._stderr.append(line.rstrip())
                continue
            kind = event.get("type")
            if kind in ("job-result", "job-failed"):
                final = event
            elif kind == "job":
                self._set(status=event.get("status", "running"), message=event.get("message", ""))
            else:
                self.emit(event)
        rc = proc.wait()
        if final is not None and final["type"] == "job-result":
            self._finish_with(final.get("result"))
        elif final is not None:
            self._set(status="error", message=final.get("message", "the job failed"),
                      result={"traceback": final["traceback"]} if final.get("traceback") else None)
        else:
            self._set(status="killed", message=self._death_message(rc))

    def _death_message(self, rc: int) -> str:
        how = f"killed by {signal.Signals(-rc).name}" if rc < 0 and -rc in signal.valid_signals() else f"exit code {rc}"
        last = next((line for line in reversed(self._stderr) if line.strip()), "")
        with self._lock:
            step, kind = self._snap.step, self.kind
        where = f" at step {step}" if kind == "distill" and step else ""
        msg = f"the job process ended without finishing ({how}){where}"
        if kind == "distill":
            resume_at = RunDir(self.run_dir).resume_step()
            msg += (f"; Resume continues from its last resume point (step {resume_at})" if resume_at else
                    "; it had saved no resume point yet, so Resume starts it again")
        return msg + (f". Its last message: {last}" if last else "")

    def _read_stderr(self, proc: subprocess.Popen) -> None:
        for line in proc.stderr:
            line = line.rstrip()
            if line and "\r" not in line:     # progress bars are noise
                self._stderr.append(line[-500:])

    def _finish_with(self, result: dict | None) -> None:
        result = result or {}
        status = result.get("status", "done")
        status = status if status in FINISHED else "done"
        self._set(status=status, result=result,
                  message=result.get("message", "") if status == "error" else self._snap.message)

    def _set(self, **values) -> None:
        with self._lock:
            for k, v in values.items():
                setattr(self._snap, k, v)
            self._snap.version += 1

    def set_running(self, message: str = "", on_stop: Callable[[], None] | None = None) -> None:
        """In-process work reports that it runs (and how to stop it)."""
        with self._lock:
            self._snap.status = "running"
            self._snap.message = message
            self._snap.version += 1
            self._on_stop = on_stop
        if on_stop is not None and self.stop_event.is_set():
            on_stop()

    def emit(self, event: dict) -> None:
        """Record an engine event and update the progress figures (called by the watcher or in-process work)."""
        now = time.time()
        with self._lock:
            s = self._snap
            self._window.add(event)
            s.version += 1
            kind = event.get("type")
            if kind == "start":
                s.total = int(event.get("outer_steps", s.total))
                s.step = int(event.get("step", 0))
            elif kind == "step":
                s.step = int(event["step"])
                if "seconds" in event:
                    self._step_seconds.append(float(event["seconds"]))
                s.eta = self._distill_eta()
            elif kind == "eval":
                if s.first_eval_after is None:
                    s.first_eval_after = now - s.started
                if "seconds" in event:
                    self._eval_seconds.append(float(event["seconds"]))
                s.eta = self._distill_eta() if self._step_seconds else s.eta
            elif kind == "progress":
                s.done_units, s.total = int(event["done"]), int(event["total"])
                began = s.ran_from or s.started
                s.eta = (now - began) / s.done_units * (s.total - s.done_units) if s.done_units else None
            s.elapsed = now - s.started

    def _distill_eta(self) -> float | None:
        """Remaining steps at the median of recent step times, plus the evaluations still to come."""
        if not self._step_seconds:
            return None
        s = self._snap
        left = max(0, s.total - s.step)
        eta = left * statistics.median(self._step_seconds)
        if self._eval_every and self._eval_seconds:
            evals_left = left // self._eval_every + 1     # the final evaluation too
            eta += evals_left * statistics.median(self._eval_seconds)
        return eta

    # --- UI side ------------------------------------------------------------------------------
    @property
    def status(self) -> str:
        with self._lock:
            return self._snap.status

    @property
    def version(self) -> int:
        with self._lock:
            return self._snap.version

    @property
    def pid(self) -> int | None:
        with self._lock:
            return self._snap.pid

    def snapshot(self, events: bool = True) -> JobSnapshot:
        """A copy of the progress; events=False skips assembling the event list (status checks need none)."""
        with self._lock:
            snap = copy.copy(self._snap)
            snap.events = self._window.events() if events else []   # event dicts are never mutated after emit
            snap.log_tail = list(self._stderr)[-5:]
            if snap.status in ACTIVE or snap.status in WAITING:
                snap.elapsed = time.time() - snap.started
        return snap

    def stop(self) -> None:
        """Ask the work to stop at its next safe point; a job process that does not comply is terminated."""
        first = not self.stop_event.is_set()
        self.stop_event.set()
        with self._lock:
            on_stop = self._on_stop
            if self._snap.status in ACTIVE:
                self._snap.message = "stopping after the current step"
                self._snap.version += 1
        if on_stop is not None:
            on_stop()
        if self._proc is not None and first:
            self._send_stop()

    def _send_stop(self) -> None:
        proc = self._proc
        try:
            proc.stdin.write("stop\n")
            proc.stdin.flush()
        except (OSError, ValueError):
            pass
        grace = max(STOP_GRACE_S, 3 * max(self._step_seconds, default=0.0))
        threading.Thread(target=self._enforce_stop, args=(proc, grace), name=f"job-{self.id}-stop",
                         daemon=True).start()

    def _enforce_stop(self, proc: subprocess.Popen, grace: float) -> None:
        try:
            proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            proc.terminate()
        try:
            proc.wait(TERM_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()

    def kill(self) -> None:
        """End the job process at once (the run keeps its last checkpoint); the page reports it as killed."""
        self.stop_event.set()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()

    def join(self, timeout: float | None = None) -> bool:
        if not self.thread.is_alive() and not self._finished.is_set():
            return self._finished.wait(timeout)   # still queued: wait for it to start and end
        self.thread.join(timeout)
        return not self.thread.is_alive()


class JobBusy(RuntimeError):
    """Raised by `JobRegistry.start(..., queue=False)` while another heavy job runs; `.job` is that job."""

    def __init__(self, job: Job):
        super().__init__(f"a {job.kind} job is active: {job.id}")
        self.job = job


class JobRegistry:
    """Jobs by id, process-wide; at most one heavy job at a time, the others queued first come, first served."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._queue: deque[Job] = deque()
        self._running: Job | None = None

    def start(self, job: Job, queue: bool = True) -> Job:
        with self._lock:
            if job.id in self._jobs:
                raise UserError(f"a job with id {job.id} exists already")
            if self._running is not None and not queue:
                raise JobBusy(self._running)
            self._jobs[job.id] = job
            job._on_finish = self._finished
            if self._running is None:
                self._launch_locked(job)
            else:
                job._snap.queued_behind = (self._queue[-1] if self._queue else self._running).id
                self._queue.append(job)
        return job

    def _launch_locked(self, job: Job) -> None:
        self._running = job
        job._snap.queued_behind = None
        job.thread.start()

    def _finished(self, job: Job) -> None:
        with self._lock:
            if self._running is job:
                self._running = None
            while self._queue and self._running is None:
                nxt = self._queue.popleft()
                if nxt.stop_event.is_set():       # stopped while waiting: ends without running
                    nxt._on_finish = None
                    nxt.thread.start()
                    continue
                self._launch_locked(nxt)

    def cancel(self, job: Job) -> bool:
        """Take a queued job out of the queue (it ends as stopped); False if it already runs."""
        with self._lock:
            if job not in self._queue:
                return False
            self._queue.remove(job)
        job.stop_event.set()
        job._on_finish = None
        job.thread.start()
        return True

    def stop(self, job: Job) -> None:
        if not self.cancel(job):
            job.stop()

    def active(self) -> Job | None:
        """The job holding the heavy-work slot, if any."""
        with self._lock:
            return self._running

    def queued(self) -> list[Job]:
        with self._lock:
            return list(self._queue)

    def get(self, job_id: str | None) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id) if job_id else None

    def for_run(self, run_dir: Path, kind: str | None = None) -> Job | None:
        """The latest job of a run directory (optionally of one kind)."""
        run_dir = Path(run_dir)
        with self._lock:
            jobs = list(self._jobs.values())
        return next((j for j in reversed(jobs) if j.run_dir == run_dir and (kind is None or j.kind == kind)), None)

    def jobs(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())


REGISTRY = JobRegistry()


# --- run directories -----------------------------------------------------------------------------
def reserve_run_dir(root: Path, stem: str) -> Path:
    """Create and return `root/stem` (or `stem-2`, ...) atomically: two callers in the same second get two."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        path = root / (stem if n == 1 else f"{stem}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")[:limit]


def stage_uploads(files: dict[str, tuple[str, bytes]], dest: Path) -> dict[str, str]:
    """Write uploaded files {role: (file name, bytes)} atomically under `dest`; returns {role: path}."""
    from .distilled import atomic_write_bytes

    out = {}
    for role, (name, data) in files.items():
        if not data:
            raise UserError(f"the uploaded {role} file {name!r} is empty")
        suffix = Path(name).suffix.lower()
        path = Path(dest) / f"{role}-{_slug(Path(name).stem, 60) or role}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
        out[role] = str(path)
    return out


def _remove_if_not_a_run(job: Job) -> None:
    """After a job that never wrote config.json: remove the directory it reserved (and only that)."""
    if job.run_dir.is_dir() and not RunDir(job.run_dir).exists():
        shutil.rmtree(job.run_dir, ignore_errors=True)


# --- job builders --------------------------------------------------------------------------------
def start_distill(config, registry: JobRegistry = REGISTRY, runs_root: Path | None = None,
                  uploads: dict[str, tuple[str, bytes]] | None = None, name: str = "", notes: str = "",
                  owner: str | None = None, owner_label: str = "", threads: int | None = None,
                  in_process: bool = False) -> Job:
    """Check a RunConfig completely, reserve a run directory, stage uploads into it and start (or queue) the job.

    Every mistake in settings, data or custom files raises UserError here, before any directory
    is made: nothing is left behind by a run that cannot start.
    """
    from .preflight import check_run_config, check_uploads

    if uploads:
        check_uploads(config, uploads)           # parse the uploads under their own names
    else:
        check_run_config(config)
    root = Path(runs_root) if runs_root is not None else default_runs_dir()
    stem = _slug(name) or (config.data.task if not uploads and config.data.task else "custom")
    run_dir = reserve_run_dir(root, new_run_name(stem))
    if uploads:
        try:
            staged = stage_uploads(uploads, run_dir / "data")
        except Exception:
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
        config.data.task = None
        config.data.train_file, config.data.eval_file = staged["train"], staged["eval"]
    run_info = {k: v for k, v in {"name": name.strip(), "notes": notes.strip(), "started_by": owner_label,
                                  "uploads": {r: n for r, (n, _) in uploads.items()} if uploads else None}.items() if v}
    spec = {"kind": "distill", "run_dir": str(run_dir), "config": config.to_dict(), "run_info": run_info,
            "threads": threads}
    return _submit(registry, run_dir.name, "distill", run_dir, spec, config.distill.outer_steps, owner, owner_label,
                   in_process, cleanup=_remove_if_not_a_run)


def start_resume(run: RunDir, registry: JobRegistry = REGISTRY, owner: str | None = None, owner_label: str = "",
                 threads: int | None = None, in_process: bool = False) -> Job:
    """Continue a stopped or interrupted run from its last checkpoint, in a job process."""
    from .distiller import RunConfig

    run.require()
    busy = registry.for_run(run.path, "distill")
    if busy is not None and not busy.snapshot(events=False).finished:
        raise UserError(f"{run.name} is already running or queued")
    cfg = RunConfig.from_dict(run.config())
    cfg.validate()
    spec = {"kind": "distill", "run_dir": str(run.path), "config": cfg.to_dict(), "resume": True, "threads": threads}
    return _submit(registry, f"{run.name}-resume-{time.strftime('%H%M%S')}-{os.getpid() % 1000}", "distill",
                   run.path, spec, cfg.distill.outer_steps, owner, owner_label, in_process)


def start_evaluate(run: RunDir, checkpoint: str, learners: int, registry: JobRegistry = REGISTRY,
                   seed: int = 1234, data_dir: str | None = None, eval_rows: int | None = None,
                   owner: str | None = None, owner_label: str = "", threads: int | None = None,
                   in_process: bool = False) -> Job:
    """Fine-tune `learners` fresh learners on a run's checkpoint; writes results.json like the CLI.

    The whole evaluation split is scored (eval_rows=None), whatever cap the run used for its
    periodic validation.
    """
    from .distiller import RunConfig
    from .evaluation import EvalConfig

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
    spec = {"kind": "evaluate", "run_dir": str(run.path), "config": cfg.to_dict(), "checkpoint": checkpoint,
            "learners": int(learners), "seed": int(seed), "threads": threads}
    job_id = f"eval-{run.name}-{time.strftime('%H%M%S')}-{int(time.time() * 1000) % 1000:03d}"
    return _submit(registry, job_id, "evaluate", run.path, spec, learners, owner, owner_label, in_process)


def start_anatomy(run: RunDir, checkpoint: str, learners: int, split: str = "dev",
                  registry: JobRegistry = REGISTRY, seed: int = 1234, owner: str | None = None,
                  owner_label: str = "", threads: int | None = None, in_process: bool = False) -> Job:
    """Score a checkpoint's learners with each part's inner-step move undone in turn (step_anatomy) on the
    dev split (or the evaluation split: any other `split`); recorded in the run's results.json."""
    from .distiller import RunConfig

    run.require()
    cfg = RunConfig.from_dict(run.config())
    cfg.model.device = "auto"
    cfg.data.eval_rows = None
    path = run.checkpoint(checkpoint)
    if not path.exists():
        raise UserError(f"{run.name} has no checkpoint {checkpoint!r}; available: "
                        f"{', '.join(run.list_checkpoints()) or 'none'}")
    if int(learners) < 1:
        raise UserError(f"learners must be >= 1, got {learners}")
    spec = {"kind": "anatomy", "run_dir": str(run.path), "config": cfg.to_dict(), "checkpoint": checkpoint,
            "learners": int(learners), "seed": int(seed), "split": split, "threads": threads}
    job_id = f"anatomy-{run.name}-{time.strftime('%H%M%S')}-{int(time.time() * 1000) % 1000:03d}"
    return _submit(registry, job_id, "anatomy", run.path, spec, learners, owner, owner_label, in_process)


def _submit(registry: JobRegistry, job_id: str, kind: str, run_dir: Path, spec: dict, total: int,
            owner: str | None, owner_label: str, in_process: bool,
            cleanup: Callable[[Job], None] | None = None) -> Job:
    if in_process:   # the same work on a thread of this process (tests, notebooks)
        from .job_worker import StopSignal, run_spec

        def work(job: Job) -> dict:
            stop = StopSignal()
            job.set_running("", on_stop=stop.set)

            def emit(event: dict) -> None:
                if event.get("type") == "job":
                    job.set_running(event.get("message", ""), on_stop=stop.set)
                else:
                    job.emit(event)
            return run_spec(spec, emit, stop)

        job = Job(job_id, kind, run_dir, work=work, total=total, owner=owner, owner_label=owner_label,
                  cleanup=cleanup)
    else:
        job = Job(job_id, kind, run_dir, spec=spec, total=total, owner=owner, owner_label=owner_label,
                  cleanup=cleanup)
    return registry.start(job)


def write_imported_run(base: RunDir, data: bytes, root: Path | None = None, name: str = "import") -> RunDir:
    """Make a new run holding an uploaded distilled-data file (already checked) with `base`'s settings.

    The directory is reserved atomically, the checkpoint written atomically, and config.json (what
    makes a directory a run) last: a crash in between never leaves a half-made run in the list.
    """
    from .distilled import atomic_write_bytes

    root = Path(root) if root is not None else base.path.parent
    run = RunDir(reserve_run_dir(root, f"{base.name}-{_slug(name) or 'import'}"))
    try:
        run.checkpoints.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(run.checkpoint("last"), data)
        write_json(run.config_path, {**base.config(), "imported_from": base.name})
    except Exception:
        shutil.rmtree(run.path, ignore_errors=True)
        raise
    return run
