"""The run store: one directory per run with config, metrics, checkpoints and results; atomic writes."""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .distilled import atomic_write_bytes
from .errors import UserError

__all__ = ["default_runs_dir", "RunDir", "list_runs", "write_json", "read_json", "new_run_name", "move_to_trash",
           "TRASH"]

TRASH = ".trash"   # deleted runs go here (inside their runs root), never straight to oblivion


def default_runs_dir() -> Path:
    """`DISTILL_RUNS_DIR`, else `runs/` in the working directory."""
    return Path(os.environ.get("DISTILL_RUNS_DIR") or "runs")


def write_json(path: Path, obj: Any) -> Path:
    return atomic_write_bytes(Path(path), (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"file not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None


def new_run_name(task: str) -> str:
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', task)}-{time.strftime('%Y%m%d-%H%M%S')}"


@dataclass
class RunDir:
    """Layout: config.json, metrics.jsonl, state.json, results.json, checkpoints/*.safetensors."""

    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def results_path(self) -> Path:
        return self.path / "results.json"

    @property
    def state_path(self) -> Path:
        return self.path / "state.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def resume_path(self) -> Path:
        """The one-file resume point (distilled data + optimizer + loop state), committed by one rename."""
        return self.checkpoints / "resume.safetensors"

    def resume_step(self) -> int | None:
        """The step a resume would continue from, or None if the run has no resume point."""
        if self.resume_path.exists():
            from safetensors import safe_open

            try:
                with safe_open(str(self.resume_path), framework="pt", device="cpu") as f:
                    return int(json.loads((f.metadata() or {})["resume_state"])["step"])
            except Exception:
                return None
        state = self.state()
        return int(state["step"]) if state and self.checkpoint("last").exists() else None

    def checkpoint(self, which: str) -> Path:
        """`best`, `last` or `step-000050`."""
        return self.checkpoints / f"{which}.safetensors"

    def exists(self) -> bool:
        return self.config_path.exists()

    def require(self) -> "RunDir":
        if not self.path.is_dir():
            raise UserError(f"run directory not found: {self.path}")
        if not self.exists():
            raise UserError(f"{self.path} is not a run directory (no config.json)")
        return self

    def config(self) -> dict:
        return read_json(self.config_path)

    def results(self) -> dict:
        return read_json(self.results_path) if self.results_path.exists() else {}

    def state(self) -> dict:
        return read_json(self.state_path) if self.state_path.exists() else {}

    def append_metrics(self, record: dict) -> None:
        """One JSON object per line; a line is written whole with one write call."""
        self.path.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, default=float) + "\n"
        with open(self.metrics_path, "a", encoding="utf-8") as fh:
            fh.write(line)

    def rewrite_metrics(self, records: list[dict]) -> None:
        """Replace metrics.jsonl atomically (used when a resume cuts what came after its resume point)."""
        data = "".join(json.dumps(r, default=float) + "\n" for r in records).encode()
        atomic_write_bytes(self.metrics_path, data)

    def metrics(self) -> list[dict]:
        """All complete metric records (a torn last line from a crash is skipped)."""
        if not self.metrics_path.exists():
            return []
        out = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def list_checkpoints(self) -> list[str]:
        """Step checkpoints in order, then best and last where present."""
        if not self.checkpoints.is_dir():
            return []
        steps = sorted(p.stem for p in self.checkpoints.glob("step-*.safetensors"))
        named = [n for n in ("best", "last") if self.checkpoint(n).exists()]
        return steps + named

    def add_evaluation(self, record: dict) -> dict:
        """Keep an evaluation under its own key (checkpoint, split, learners, seed): none overwrites another.

        `evaluation` stays the latest one, which the pages show.
        """
        def key(r: dict) -> str:
            return f"{r.get('checkpoint')}|{r.get('split')}|{r.get('learners')}|seed {r.get('seed')}"

        results = self.results()
        evaluations = dict(results.get("evaluations") or {})
        if "evaluation" in results and not evaluations:     # from before keyed results: keep it too
            evaluations[key(results["evaluation"])] = results["evaluation"]
        evaluations[key(record)] = record
        return self.update_results(evaluation=record, evaluations=evaluations)

    def update_results(self, **entries: Any) -> dict:
        results = self.results()
        results.update(entries)
        write_json(self.results_path, results)
        return results


def list_runs(root: Path | str | None = None) -> list[RunDir]:
    """Runs under `root`, newest first (by config.json mtime)."""
    base = Path(root) if root is not None else default_runs_dir()
    if not base.is_dir():
        return []
    runs = [RunDir(p) for p in base.iterdir() if p.is_dir() and (p / "config.json").exists()]
    return sorted(runs, key=lambda r: r.config_path.stat().st_mtime, reverse=True)


def move_to_trash(run: RunDir, root: Path | str | None = None) -> Path:
    """Move a run into `root/.trash/` (one rename, so it is either listed or in the trash); returns its new path."""
    base = Path(root) if root is not None else default_runs_dir()
    src = run.path.resolve()
    if src.parent != base.resolve():
        raise UserError(f"{run.name} is not a run of {base}; only your own runs can be deleted")
    if not run.exists():
        raise UserError(f"{run.path} is not a run directory (no config.json)")
    trash = base / TRASH
    trash.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target, n = trash / f"{run.name}-{stamp}", 1
    while target.exists():
        n += 1
        target = trash / f"{run.name}-{stamp}-{n}"
    os.rename(src, target)
    return target


def iter_events(run: RunDir, kind: str) -> Iterator[dict]:
    return (r for r in run.metrics() if r.get("type") == kind)
