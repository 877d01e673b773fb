"""Shared helpers of the benchmark scripts: engine flags, peak memory, one JSON line."""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from distill_core.cli import build_parser, run_config_from_args  # noqa: E402
from distill_core.machine import machine_info as machine  # noqa: E402,F401  (the benches import it from here)


def parse_engine_flags(argv: list[str], extra) -> tuple:
    """Parse `distill`'s flags plus the bench's own (added by `extra(parser)`)."""
    import argparse

    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--json", action="store_true", help="print only the JSON line")
    extra(own)
    mine, rest = own.parse_known_args(argv)
    engine = build_parser().parse_args(["distill", *rest])
    return mine, engine, run_config_from_args(engine)


def quiet_distiller(cfg, threads: int | None):
    """A Distiller for timing: no start-of-run evaluation, no baselines, no run directory."""
    import torch

    from distill_core.distiller import Distiller

    if threads:
        torch.set_num_threads(threads)
    cfg.distill.eval_at_start = False
    cfg.distill.baselines = False
    return Distiller(cfg)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def emit(record: dict) -> None:
    print(json.dumps(record, default=str), flush=True)


def checkpoint_parser(doc: str, learners: int):
    """The flags of a bench that reads one checkpoint of a run directory."""
    import argparse

    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("run", help="a run directory")
    p.add_argument("--checkpoint", default="best")
    p.add_argument("--learners", type=int, default=learners)
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--threads", type=int)
    return p


def load_run_checkpoint(run_path: str, checkpoint: str, data_dir: str, threads: int | None = None):
    """A run's config, its data and learner (on CPU, the whole evaluation split) and one checkpoint's data."""
    import torch

    from distill_core.distilled import DistilledData
    from distill_core.distiller import RunConfig, prepare
    from distill_core.runs import RunDir

    if threads:
        torch.set_num_threads(threads)
    run = RunDir(run_path).require()
    cfg = RunConfig.from_dict(run.config())
    cfg.data.data_dir, cfg.data.eval_rows, cfg.model.device = data_dir, None, "cpu"
    prep = prepare(cfg)
    distilled = DistilledData.load(run.checkpoint(checkpoint), device=prep.learner.device,
                                   dtype=prep.learner.dtype, expect=prep.learner.fingerprint())
    return run, cfg, prep, distilled


def save_figure(fig, out) -> None:
    """Write a matplotlib figure for the docs (its folder made as needed) and print where it went."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out)
    print(out)
