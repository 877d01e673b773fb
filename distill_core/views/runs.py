"""Saved runs as tables: one summary row per run, settings side by side, distilled data as JSON."""

from __future__ import annotations

import json
import time
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from ..distilled import DistilledData
from ..runs import RunDir
from ..tasks import TASKS
from .curves import eval_points, primary_metric

__all__ = ["run_summary", "runs_table", "flat_config", "settings_frame", "distilled_json", "final_score",
           "measured_on", "MISSING", "fill_missing", "sweep_of", "sweeps", "sweep_frame", "sweep_figure"]

_TERMINAL = ("done", "stopped", "error")
MISSING = "–"   # what a table cell shows for a value that is not there (never "None" or "nan")


def _split_name(cfg: dict) -> str | None:
    """The evaluation split a run scores on: the task's (e.g. 'validation') or the custom eval file's name."""
    data = cfg.get("data") or {}
    if data.get("eval_file"):
        return str(data["eval_file"]).replace("\\", "/").rsplit("/", 1)[-1]
    task = TASKS.get(data.get("task") or "")
    return task.eval_split if task else None


def measured_on(learners: Any = None, rows: Any = None, split: str | None = None, extra: str | None = None) -> str:
    """'10 learners · 300 rows · validation', leaving out what is unknown; '–' if nothing is."""
    parts = []
    if learners is not None:
        parts.append(f"{learners} learner{'' if learners == 1 else 's'}")
    if rows is not None:
        parts.append(f"{rows} rows")
    parts += [p for p in (split, extra) if p]
    return " · ".join(parts) or MISSING


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v)


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
    start = next((e for e in reversed(events) if e.get("type") == "start"), {})   # a resumed run: its last start
    ev = results.get("evaluation") or {}
    ev_m = (ev.get("metrics") or {}).get(metric)
    split = _split_name(cfg)
    ev_from = None if not ev else str(ev.get("checkpoint") or "checkpoint") + (
        f" (step {ev['step']})" if ev.get("step") is not None else "")
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
        "final measured on": None if final is None else measured_on(
            start.get("eval_learners", (cfg.get("distill") or {}).get("eval_learners")), start.get("eval_rows"), split),
        f"evaluated {metric}": None if ev_m is None else f"{ev_m['mean']:.1f} ± {ev_m['std']:.1f}",
        "evaluated measured on": None if ev_m is None else measured_on(
            ev.get("learners", ev_m.get("n")), ev.get("eval_rows"), split, ev_from),
        "L": d.get("seq_len"), "spc": d.get("samples_per_class"), "T": d.get("inner_steps"),
        "labels": d.get("label_type"), "attention": d.get("attention_labels"),
        "sweep": sweep_of(run),
        "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(run.config_path.stat().st_mtime)),
    }


def fill_missing(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns with a gap become text with MISSING in it; full columns keep their type (and sort as numbers)."""
    for col in frame.columns:
        if frame[col].map(_missing).any():
            frame[col] = frame[col].map(lambda v: MISSING if _missing(v) else str(v))
    return frame


def runs_table(runs: list[RunDir]) -> pd.DataFrame:
    """One row per run (see run_summary); a missing value shows as '–'."""
    return fill_missing(pd.DataFrame([run_summary(r) for r in runs]))


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
    frame = pd.DataFrame({name: [MISSING if _missing(f.get(k)) else str(f.get(k)) for k in keys]
                          for name, f in flat.items()}, index=keys)
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


def sweep_of(run: RunDir) -> str | None:
    """The sweep a run is a trial of (config.json run.sweep.name), or None."""
    try:
        sweep = (run.config().get("run") or {}).get("sweep") or {}
    except Exception:
        return None
    return sweep.get("name") if isinstance(sweep, dict) else None


def sweeps(runs: list[RunDir]) -> dict[str, list[RunDir]]:
    """Trials grouped by sweep, in trial-name order."""
    out: dict[str, list[RunDir]] = {}
    for r in runs:
        name = sweep_of(r)
        if name:
            out.setdefault(name, []).append(r)
    return {k: sorted(v, key=lambda r: r.name) for k, v in sorted(out.items())}


def sweep_frame(trials: list[RunDir]) -> pd.DataFrame:
    """One row per trial: its grid point, status, steps, and its best and last dev validation."""
    rows = []
    for r in trials:
        cfg, events = r.config(), r.metrics()
        point = ((cfg.get("run") or {}).get("sweep") or {}).get("point") or {}
        metric = primary_metric(events)
        evals = [e for e in events if e.get("type") == "eval"]
        best = max(evals, key=lambda e: e["metrics"][metric]["mean"]) if evals else None
        last = next((e["type"] for e in reversed(events) if e.get("type") in _TERMINAL), None)
        rows.append({"trial": r.name, **{k: _number(v) for k, v in point.items()},
                     "status": last or "incomplete",
                     "step": max((e["step"] for e in events if e.get("type") == "step"), default=0),
                     f"best dev {metric}": None if best is None else round(best["metrics"][metric]["mean"], 2),
                     "best at step": None if best is None else best["step"],
                     f"last dev {metric}": None if not evals else round(evals[-1]["metrics"][metric]["mean"], 2),
                     "last dev loss": None if not evals or not evals[-1].get("loss") else
                     round(evals[-1]["loss"]["mean"], 4)})
    return pd.DataFrame(rows)


def _number(v: Any) -> Any:
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def sweep_figure(frame: pd.DataFrame, title: str) -> go.Figure:
    """Each trial's best dev score against the sweep's first setting, one colour per other setting."""
    score = next(c for c in frame.columns if c.startswith("best dev "))
    settings = [c for c in frame.columns if c not in ("trial", "status", "step", "best at step")
                and not c.startswith(("best dev ", "last dev "))]
    x = settings[0] if settings else "trial"
    groups = frame.groupby([c for c in settings[1:]], dropna=False) if settings[1:] else [((), frame)]
    fig = go.Figure()
    for key, part in groups:
        key = key if isinstance(key, tuple) else (key,)
        label = ", ".join(f"{c}={v}" for c, v in zip(settings[1:], key)) or "trials"
        part = part.sort_values(x)
        fig.add_trace(go.Scatter(x=part[x], y=part[score], mode="lines+markers", name=label,
                                 text=part["trial"], hovertemplate="%{text}: %{y:.1f}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=score + " %", height=360,
                      margin={"t": 50, "b": 40}, legend={"orientation": "h", "y": -0.25})
    if settings and all(isinstance(v, float) and v > 0 for v in frame[x]):
        fig.update_xaxes(type="log")
    return fig
