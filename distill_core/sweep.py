"""Sweeps: a grid of settings, each point an ordinary run in the run store, executed on Ray Tune.

    python -m distill_core sweep --name lr-grid --grid lr=0.01,0.03 inner-lr-init=0.1,0.3 \\
        --cpus-per-trial 2 -- --task sst2 --data-dir ../shared/data --outer-steps 300

- A trial is `distill` with the base flags plus its grid point; its run directory is
  `<runs>/<name>-tNNN` and its config.json names the sweep and the point, so the app and the CLI
  read it like any other run and the Runs page groups the sweep.
- The sweep's manifest, `<runs>/<name>.sweep.json`, lists the points, their runs and their status.
- Re-running the same command skips finished trials (and those the scheduler stopped) and resumes
  unfinished ones from their last resume point: a sweep survives any interruption.
- `--executor ray` (the default) starts a local Ray cluster, or joins one with `--address`; each
  trial gets `--cpus-per-trial` CPUs and `--gpus-per-trial` GPUs (fractions share a GPU).
  `--executor local` runs the trials one after another in this process, without Ray.
- `--asha` lets Ray's ASHA scheduler stop trials whose dev loss lags at each validation.
"""

from __future__ import annotations

import itertools
import json
import os
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError
from .runs import RunDir, default_runs_dir, read_json, write_json

__all__ = ["SweepConfig", "parse_grid", "plan_trials", "run_sweep", "add_parser", "cmd_sweep"]


@dataclass
class SweepConfig:
    name: str
    grid: dict[str, list[str]]              # distill flag (no dashes) -> values, e.g. {"lr": ["0.01", "0.03"]}
    base: list[str] = field(default_factory=list)   # distill flags every trial shares
    runs_root: str | None = None
    executor: str = "ray"                   # ray | local
    address: str | None = None              # join this Ray cluster (default: start a local one)
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    asha: bool = False
    asha_grace: int = 1                      # validations a trial gets before ASHA may stop it

    def validate(self) -> None:
        from .paths import run_name_in

        run_name_in([Path(self.root)], self.name)          # a plain name: no way out of the runs root
        if not self.grid:
            raise UserError("a sweep needs --grid with at least one flag=value[,value...]")
        if self.executor not in ("ray", "local"):
            raise UserError(f"--executor must be ray or local, got {self.executor!r}")
        if self.cpus_per_trial <= 0 or self.gpus_per_trial < 0:
            raise UserError("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0")
        for flag in ("--out", "--resume", "--seeds"):
            if flag in self.base or any(b.startswith(flag + "=") for b in self.base):
                raise UserError(f"{flag} is the sweep's to set; leave it out of the trial flags")

    @property
    def root(self) -> Path:
        return Path(self.runs_root) if self.runs_root else default_runs_dir()

    @property
    def manifest_path(self) -> Path:
        return self.root / f"{self.name}.sweep.json"


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """['lr=0.01,0.03', 'label-type=hard,soft'] -> {'lr': ['0.01', '0.03'], 'label-type': ['hard', 'soft']}."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key or not values.strip():
            raise UserError(f"--grid item {item!r} is not flag=value[,value...]")
        grid[key] = [v.strip() for v in values.split(",") if v.strip()]
    return grid


def plan_trials(config: SweepConfig) -> list[dict]:
    """Every grid point, in a fixed order, with its run name and full distill argv (checked by the parser)."""
    from .cli import build_parser, run_config_from_args

    keys = sorted(config.grid)
    trials = []
    for i, values in enumerate(itertools.product(*(config.grid[k] for k in keys))):
        point = dict(zip(keys, values))
        argv = [*config.base, *[a for k, v in point.items() for a in (f"--{k}", v)]]
        try:
            args = build_parser().parse_args(["distill", *argv])
        except SystemExit:
            raise UserError(f"trial flags are not valid distill flags: {shlex.join(argv)}") from None
        run_config_from_args(args).validate()
        trials.append({"trial": i, "point": point, "argv": argv, "run": f"{config.name}-t{i:03d}"})
    return trials


def _trial_status(run: RunDir) -> str:
    if not run.exists():
        return "pending"
    status = (run.results().get("distillation") or {}).get("status")
    return "done" if status == "done" else "unfinished"


def run_trial(argv: list[str], run_dir: str, sweep: dict, report=None, threads: int | None = None) -> dict:
    """One trial: an ordinary distill run (resumed when its directory holds one); `report(metrics)` is
    called after each dev validation (Ray Tune's report, so a scheduler can stop the trial)."""
    import torch

    from .cli import build_parser, run_config_from_args
    from .distiller import Distiller

    if threads:
        torch.set_num_threads(max(1, int(threads)))
    cfg = run_config_from_args(build_parser().parse_args(["distill", *argv]))
    run = RunDir(Path(run_dir))
    d = Distiller(cfg, run_dir=run.path, resume=run.exists(),
                  run_info=None if run.exists() else {"name": run.path.name, "sweep": sweep})
    metric = d.prep.task.spec.primary_metric
    if report is not None:
        def on_eval(e: dict) -> None:
            if e["type"] == "eval":
                report({"step": e["step"], "dev_loss": (e.get("loss") or {}).get("mean", float("nan")),
                        f"dev_{metric}": e["metrics"][metric]["mean"]})
        d.add_callback(on_eval)
    summary = d.run_loop()
    return {"status": summary["status"], "step": summary["step"], "best": summary.get("best")}


def _ray_trainable(trial_config: dict) -> None:
    """Ray Tune's function trainable: every trial runs `run_trial` in its own worker process."""
    from ray import tune

    t = trial_config["trial"]
    run_trial(t["argv"], t["run_dir"], t["sweep"], report=tune.report, threads=t["threads"])


def run_sweep(config: SweepConfig, log=print) -> dict:
    """Run the trials that are not finished; returns (and writes) the manifest."""
    config.validate()
    trials = plan_trials(config)
    root = config.root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    previous = read_json(config.manifest_path) if config.manifest_path.exists() else {}
    if previous and (previous.get("grid") != config.grid or previous.get("base") != config.base):
        raise UserError(f"sweep {config.name!r} exists with another grid or other flags "
                        f"({config.manifest_path}); choose another --name")
    stopped = {t["run"] for t in previous.get("trials", []) if t.get("status") == "stopped early"}
    for t in trials:
        t["status"] = "stopped early" if t["run"] in stopped else _trial_status(RunDir(root / t["run"]))
    todo = [t for t in trials if t["status"] in ("pending", "unfinished")]
    manifest = {"sweep": config.name, "grid": config.grid, "base": config.base, "executor": config.executor,
                "trials": trials, "started": previous.get("started") or time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_json(config.manifest_path, manifest)
    log(f"sweep {config.name}: {len(trials)} trials, {len(trials) - len(todo)} finished earlier, {len(todo)} to run")
    t0 = time.perf_counter()
    sweep_info = {"name": config.name}
    if todo and config.executor == "local":
        for t in todo:
            run_trial(t["argv"], str(root / t["run"]), {**sweep_info, "point": t["point"]},
                      threads=int(config.cpus_per_trial))
            t["status"] = _trial_status(RunDir(root / t["run"]))
            write_json(config.manifest_path, manifest)
    elif todo:
        _run_on_ray(config, todo, root, sweep_info, log)    # sets "error" and "stopped early"
    for t in trials:
        if t["status"] not in ("stopped early", "error"):
            t["status"] = _trial_status(RunDir(root / t["run"]))
    manifest["wall_seconds"] = round(time.perf_counter() - t0, 1)
    manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_json(config.manifest_path, manifest)
    return manifest


def _trial_name(trial) -> str:
    """Ray's name for a trial: its run's name (not the whole argv Ray would put in it)."""
    return trial.config["trial"]["run"]


def _run_on_ray(config: SweepConfig, todo: list[dict], root: Path, sweep_info: dict, log) -> None:
    try:
        import ray
        from ray import tune
    except ImportError:
        raise UserError("the ray executor needs Ray Tune: pip install -e \".[scale]\" (or use --executor local)") \
            from None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=config.address, include_dashboard=False, log_to_driver=False,
                 **({} if config.address else {"num_cpus": max(1, os.cpu_count() or 1)}))
    try:
        by_run = {t["run"]: t for t in todo}
        scheduler = None
        if config.asha:
            from ray.tune.schedulers import ASHAScheduler

            scheduler = ASHAScheduler(time_attr="training_iteration", metric="dev_loss", mode="min",
                                      grace_period=config.asha_grace, reduction_factor=2)
        trainable = tune.with_resources(_ray_trainable, {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial})
        threads = int(max(1, config.cpus_per_trial))
        points = [{"run": t["run"], "argv": t["argv"], "run_dir": str(root / t["run"]), "threads": threads,
                   "sweep": {**sweep_info, "point": t["point"]}} for t in todo]
        tuner = tune.Tuner(
            trainable, param_space={"trial": tune.grid_search(points)},
            tune_config=tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=config.max_concurrent,
                                        trial_name_creator=_trial_name, trial_dirname_creator=_trial_name),
            run_config=tune.RunConfig(name=config.name, storage_path=str(root / ".ray"), verbose=0))
        grid = tuner.fit()
        for result in grid:
            name = ((result.config or {}).get("trial") or {}).get("run")
            if name not in by_run:
                continue
            if result.error is not None:
                by_run[name]["status"] = "error"
                log(f"  {name}: {type(result.error).__name__}: {result.error}")
            elif _trial_status(RunDir(root / name)) != "done":
                by_run[name]["status"] = "stopped early"     # the scheduler ended it before its last step
    finally:
        if started_here:
            ray.shutdown()


def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help="a grid of distill settings, each an ordinary run, on Ray Tune (resumable)",
                       description=__doc__, formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="the sweep's name: its trials are <runs>/<name>-tNNN")
    p.add_argument("--grid", nargs="+", required=True, metavar="FLAG=V1,V2",
                   help="distill flags (without --) and their values; every combination is a trial")
    p.add_argument("--runs-dir", help="the run store (default: $DISTILL_RUNS_DIR or runs/)")
    p.add_argument("--executor", choices=["ray", "local"], default="ray")
    p.add_argument("--address", help="join this Ray cluster (e.g. auto, or ray://host:10001); default: a local one")
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--gpus-per-trial", type=float, default=0.0, help="fractions share a GPU, e.g. 0.5")
    p.add_argument("--max-concurrent", type=int)
    p.add_argument("--asha", action="store_true", help="stop trials whose dev loss lags (Ray's ASHA scheduler)")
    p.add_argument("--asha-grace", type=int, default=1, help="validations before ASHA may stop a trial")
    p.add_argument("trial_flags", nargs="*", help="after --: distill flags every trial shares")


def cmd_sweep(a) -> int:
    config = SweepConfig(name=a.name, grid=parse_grid(a.grid), base=list(a.trial_flags), runs_root=a.runs_dir,
                         executor=a.executor, address=a.address, cpus_per_trial=a.cpus_per_trial,
                         gpus_per_trial=a.gpus_per_trial, max_concurrent=a.max_concurrent, asha=a.asha,
                         asha_grace=a.asha_grace)
    manifest = run_sweep(config, log=lambda s: print(s, flush=True))
    counts: dict[str, int] = {}
    for t in manifest["trials"]:
        counts[t["status"]] = counts.get(t["status"], 0) + 1
    print(json.dumps({"sweep": config.name, "manifest": str(config.manifest_path), "trials": counts,
                      "wall_seconds": manifest.get("wall_seconds")}))
    return 0 if "error" not in counts else 1
