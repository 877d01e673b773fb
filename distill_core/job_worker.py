"""The job process: `python -m distill_core.job_worker` runs one distillation, evaluation or step anatomy
away from the UI.

Protocol (JSON lines, so any front end can drive it):
- stdin, first line: the job spec, e.g. {"kind": "distill", "run_dir": ..., "config": {...}, "threads": 2};
  later lines: "stop" asks for a cooperative stop; end of input (the app went away) does too.
- stdout: one engine event per line (start, step, eval, baseline, checkpoint, done, stopped, error),
  plus {"type": "job", "status": "running", "message": ...}, {"type": "progress", "done", "total"}
  and, last, {"type": "job-result", "result": {...}} or {"type": "job-failed", "message", "traceback"}.
Anything a library prints goes to stderr, never into the event stream.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Callable

from .errors import UserError

__all__ = ["main", "run_spec"]

Emit = Callable[[dict], None]


class StopSignal:
    """A stop request with hooks: the engine's own stop methods are called when it is set."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._hooks: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def on_stop(self, fn: Callable[[], None]) -> None:
        with self._lock:
            self._hooks.append(fn)
            already = self.event.is_set()
        if already:
            fn()

    def set(self) -> None:
        with self._lock:
            self.event.set()
            hooks = list(self._hooks)
        for fn in hooks:
            fn()

    def is_set(self) -> bool:
        return self.event.is_set()


def _distill(spec: dict, emit: Emit, stop: StopSignal) -> dict:
    from .distiller import Distiller, RunConfig

    cfg = RunConfig.from_dict(spec["config"])
    distiller = Distiller(cfg, run_dir=spec["run_dir"], callbacks=[emit], resume=bool(spec.get("resume")),
                          run_info=spec.get("run_info"))
    emit({"type": "job", "status": "running", "message": "distilling"})
    stop.on_stop(distiller.stop)
    return distiller.run_loop()


def _evaluate(spec: dict, emit: Emit, stop: StopSignal) -> dict:
    from .data import encode_split, load_task_data
    from .distilled import DistilledData
    from .distiller import RunConfig
    from .evaluation import EvalConfig, EvaluationStopped, evaluate_distilled
    from .learner import learner_from_config
    from .runs import RunDir

    run = RunDir(Path(spec["run_dir"])).require()
    cfg = RunConfig.from_dict(spec["config"])
    checkpoint, learners, seed = spec["checkpoint"], int(spec["learners"]), int(spec.get("seed", 1234))
    task = load_task_data(cfg.data)
    learner = learner_from_config(cfg.model, task.spec.num_labels, list(task.spec.label_names))
    distilled = DistilledData.load(run.checkpoint(checkpoint), device=learner.device, dtype=learner.dtype,
                                   expect=learner.fingerprint())
    encoded = encode_split(task.eval, learner.tokenizer, cfg.data.max_length)
    emit({"type": "job", "status": "running", "message": f"evaluating {checkpoint} with {learners} learners"})
    emit({"type": "progress", "done": 0, "total": learners})
    try:
        result = evaluate_distilled(learner, distilled, encoded, task.spec.metrics,
                                    EvalConfig(learners=learners, seed=seed),
                                    progress=lambda d, t: emit({"type": "progress", "done": d, "total": t}),
                                    should_stop=stop.is_set)
    except EvaluationStopped as exc:  # a partial mean would mislead: nothing is written
        return {"status": "stopped", "message": str(exc)}
    record = {"checkpoint": checkpoint, "learners": len(result["per_learner"]), "seed": seed,
              "eval_rows": len(encoded), "split": task.spec.eval_split, "metrics": result["metrics"],
              "per_learner": result["per_learner"], "seconds": result["seconds"],
              "step": distilled.meta.get("step"), "demo": task.is_demo}
    run.add_evaluation(record)
    return {"status": "done", **record}


def _anatomy(spec: dict, emit: Emit, stop: StopSignal) -> dict:
    from .distiller import RunConfig, prepare
    from .distilled import DistilledData
    from .runs import RunDir
    from .step_anatomy import record_anatomy, step_anatomy

    run = RunDir(Path(spec["run_dir"])).require()
    cfg = RunConfig.from_dict(spec["config"])
    checkpoint, learners, seed = spec["checkpoint"], int(spec["learners"]), int(spec.get("seed", 1234))
    prep = prepare(cfg)
    distilled = DistilledData.load(run.checkpoint(checkpoint), device=prep.learner.device, dtype=prep.learner.dtype,
                                   expect=prep.learner.fingerprint())
    split, encoded = prep.split("dev" if spec.get("split") == "dev" else None, cfg.data.is_custom)
    emit({"type": "job", "status": "running", "message": f"anatomy of {checkpoint}'s inner step on {split}"})
    emit({"type": "progress", "done": 0, "total": learners})
    try:
        result = step_anatomy(prep.learner, distilled, encoded, prep.task.spec.metrics, learners=learners, seed=seed,
                              split=split, metric=prep.task.spec.paper_metric, checkpoint=checkpoint,
                              should_stop=stop.is_set,
                              progress=lambda d, t: emit({"type": "progress", "done": d, "total": t}))
    except UserError as exc:
        if stop.is_set():   # a partial measurement would mislead: nothing is written
            return {"status": "stopped", "message": str(exc)}
        raise
    record_anatomy(run, result)
    return {"status": "done", **result.to_dict()}


WORK: dict[str, Callable[[dict, Emit, StopSignal], dict]] = {"distill": _distill, "evaluate": _evaluate,
                                                             "anatomy": _anatomy}


def run_spec(spec: dict, emit: Emit, stop: StopSignal | None = None) -> dict:
    """Run one job spec in this process (the worker's body; also callable in-process, e.g. by tests)."""
    kind = spec.get("kind")
    if kind not in WORK:
        raise UserError(f"unknown job kind {kind!r}; expected one of {', '.join(WORK)}")
    threads = spec.get("threads")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    return WORK[kind](spec, emit, stop or StopSignal())


def main() -> int:
    events = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)                    # a library's print() must not corrupt the event stream
    sys.stdout = sys.stderr
    lock = threading.Lock()

    def emit(event: dict) -> None:
        line = json.dumps(event, default=float) + "\n"
        with lock:
            try:
                events.write(line)
            except (BrokenPipeError, ValueError):   # the app is gone: keep working, the run store has it all
                pass

    stop = StopSignal()
    # Ctrl-C in the terminal that runs `streamlit run` reaches this process group too: stop cleanly.
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    first = sys.stdin.readline()
    try:
        spec = json.loads(first)
    except json.JSONDecodeError:
        emit({"type": "job-failed", "message": "the job process got no valid job spec on stdin"})
        return 2

    def watch_stdin() -> None:
        for line in sys.stdin:
            if line.strip() == "stop":
                break
        stop.set()                   # "stop", or end of input: the app that started us went away

    threading.Thread(target=watch_stdin, name="stdin", daemon=True).start()
    try:
        result = run_spec(spec, emit, stop)
    except UserError as exc:
        emit({"type": "job-failed", "message": str(exc)})
        return 2
    except Exception as exc:  # the UI shows the message; the traceback goes with it
        emit({"type": "job-failed", "message": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})
        return 1
    emit({"type": "job-result", "result": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
