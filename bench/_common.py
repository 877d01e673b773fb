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
