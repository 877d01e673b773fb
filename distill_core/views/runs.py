"""Saved runs as tables: one summary row per run, settings side by side, distilled data as JSON."""

from __future__ import annotations

import json
import time
from typing import Any

import pandas as pd

from ..distilled import DistilledData
from ..runs import RunDir
from .curves import eval_points, primary_metric

__all__ = ["run_summary", "runs_table", "flat_config", "settings_frame", "distilled_json", "final_score"]

_TERMINAL = ("done", "stopped", "error")


def final_score(events: list[dict], metric: str) -> tuple[float, float, int] | None:
    steps, mean, std = eval_points(events, metric)
    return (mean[-1], std[-1], steps[-1]) if steps else None


def run_summary(run: RunDir, events: list[dict] | None = None) -> dict[str, Any]:
    """What a runs table shows about one run (reads config.json, metrics.jsonl, results.json)."""
    try:
        cfg = run.config()
    except Exception as exc:  # a broken run must not hide the others
        return {"run": run.name, "status": f"unreadable ({exc})"}
    events = run.metrics() if events is None else events
    results = run.results()
    metric = primary_metric(events)
    last = next((e["type"] for e in reversed(events) if e.get("type") in _TERMINAL), None)
    steps = [e["step"] for e in events if e.get("type") == "step"]
    final = final_score(events, metric)
    ev = results.get("evaluation") or {}
    ev_m = (ev.get("metrics") or {}).get(metric)
    d, o = cfg.get("distilled", {}), cfg.get("distill", {})
    data = cfg.get("data", {})
    return {
        "run": run.name,
        "task": data.get("task") or "custom",
        "demo": bool(cfg.get("demo")),
        "status": last or ("imported" if cfg.get("imported_from") else "incomplete"),
        "step": max(steps) if steps else 0,
        "of": o.get("outer_steps"),
        f"final {metric}": None if final is None else f"{final[0]:.1f} ± {final[1]:.1f}",
        f"evaluated {metric}": None if ev_m is None else f"{ev_m['mean']:.1f} ± {ev_m['std']:.1f} (n={ev_m['n']})",
        "L": d.get("seq_len"), "spc": d.get("samples_per_class"), "T": d.get("inner_steps"),
        "labels": d.get("label_type"), "attention": d.get("attention_labels"),
        "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(run.config_path.stat().st_mtime)),
    }


def runs_table(runs: list[RunDir]) -> pd.DataFrame:
    return pd.DataFrame([run_summary(r) for r in runs])


def flat_config(cfg: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_config(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, (list, tuple)) else v
    return out


def settings_frame(runs: list[RunDir], only_different: bool = True) -> pd.DataFrame:
    """Settings as rows, runs as columns; by default only the settings that differ."""
    flat = {r.name: flat_config(r.config()) for r in runs}
    keys = sorted({k for f in flat.values() for k in f})
    frame = pd.DataFrame({name: [f.get(k) for k in keys] for name, f in flat.items()}, index=keys).astype(str)
    if only_different and len(runs) > 1:
        frame = frame[frame.nunique(axis=1) > 1]
    return frame


def distilled_json(distilled: DistilledData) -> str:
    """The whole distilled set as JSON: header, readable labels and inner lrs, and every tensor as lists."""
    header = json.loads(distilled.metadata()["distilled"])
    return json.dumps({
        **header,
        "label_targets": distilled.label_targets().detach().cpu().tolist(),
        "inner_lrs": distilled.inner_lrs().detach().cpu().tolist(),
        "tensors": {k: v.tolist() for k, v in distilled.tensors().items()},
    })
