"""Training curves from engine events (metrics.jsonl records or a live job's events) as plotly figures."""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = ["eval_points", "baselines", "accuracy_figure", "training_figure", "compare_figure", "primary_metric",
           "live_numbers", "smooth", "downsample", "lr_lines", "format_inner_lrs", "MAX_POINTS"]

# Inner-lr lines: greys that stay visible on the theme's background (dark greys vanish on a dark page).
_GREYS = {False: ("#222222", "#666666", "#999999"), True: ("#eeeeee", "#bbbbbb", "#888888")}
_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
MAX_POINTS = 600   # per trace: a browser redraws a live chart every poll, 60,000 points per line is too slow


def lr_lines(inner_lrs: Sequence, groups: Sequence[str] | None = None) -> list[tuple[str, tuple[int, ...]]]:
    """(name, index) of every learned inner lr of a step event: 'lr step t' for one lr per step, or
    'lr step t, <group>' for one per step and parameter group (inner_lrs[t][g])."""
    out = []
    for t, value in enumerate(inner_lrs):
        if isinstance(value, (list, tuple)):
            names = groups or [f"group {g}" for g in range(len(value))]
            out += [(f"lr step {t + 1}, {names[g]}" if len(inner_lrs) > 1 else f"lr {names[g]}", (t, g))
                    for g in range(len(value))]
        else:
            out.append((f"lr step {t + 1}", (t,)))
    return out


def _lr_at(inner_lrs: Sequence, index: tuple[int, ...]) -> float:
    value = inner_lrs[index[0]]
    return float(value[index[1]] if len(index) > 1 else value)


def format_inner_lrs(inner_lrs: Sequence, groups: Sequence[str] | None = None, digits: int = 3) -> str:
    """'0.3, 0.12' (one lr per step) or 'encoder 0.1, head 2.4' / 'step 1: encoder 0.1, head 2.4; step 2: ...'."""
    if not inner_lrs or not isinstance(inner_lrs[0], (list, tuple)):
        return ", ".join(f"{float(x):.{digits}g}" for x in inner_lrs)
    names = groups or [f"group {g}" for g in range(len(inner_lrs[0]))]
    steps = [", ".join(f"{n} {float(v):.{digits}g}" for n, v in zip(names, row)) for row in inner_lrs]
    return steps[0] if len(steps) == 1 else "; ".join(f"step {t + 1}: {s}" for t, s in enumerate(steps))


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving mean over the last `window` values (the first ones average what exists); window <= 1: a copy."""
    if window < 0:
        raise ValueError(f"smoothing window must be >= 0, got {window}")
    vals = [float(v) for v in values]
    if window <= 1 or not vals:
        return vals
    sums = np.cumsum([0.0, *vals])
    # trailing, not centred: a live curve must not look ahead of the last step
    return [float(sums[i + 1] - sums[max(0, i + 1 - window)]) / min(i + 1, window) for i in range(len(vals))]


def _keep(n: int, max_points: int) -> list[int]:
    """Evenly spaced indices into n items: at most max_points of them, always the first and the last."""
    if max_points < 2:
        raise ValueError(f"max_points must be >= 2, got {max_points}")
    if n <= max_points:
        return list(range(n))
    return sorted({int(i) for i in np.linspace(0, n - 1, max_points).round()})


def downsample(steps: list[dict], max_points: int = MAX_POINTS) -> list[dict]:
    """At most max_points of `steps`, evenly spaced, keeping the first and the last."""
    return [steps[i] for i in _keep(len(steps), max_points)]


def primary_metric(events: Iterable[dict], default: str = "accuracy") -> str:
    for e in events:
        if e.get("type") in ("eval", "baseline") and e.get("metrics"):
            return default if default in e["metrics"] else next(iter(e["metrics"]))
    return default


def eval_points(events: Iterable[dict], metric: str = "accuracy") -> tuple[list[int], list[float], list[float]]:
    """(steps, means, stds) of the periodic evaluations; a resumed run's repeated step keeps the last value."""
    by_step: dict[int, tuple[float, float]] = {}
    for e in events:
        if e.get("type") == "eval" and metric in e.get("metrics", {}):
            m = e["metrics"][metric]
            by_step[int(e["step"])] = (float(m["mean"]), float(m.get("std", 0.0)))
    steps = sorted(by_step)
    return steps, [by_step[s][0] for s in steps], [by_step[s][1] for s in steps]


def baselines(events: Iterable[dict], metric: str = "accuracy") -> dict[str, tuple[float, float]]:
    return {e["name"]: (float(e["metrics"][metric]["mean"]), float(e["metrics"][metric].get("std", 0.0)))
            for e in events if e.get("type") == "baseline" and metric in e.get("metrics", {})}


def _band(fig: go.Figure, x, mean, std, color: str, name: str, row=None, col=None, legend=True) -> None:
    upper = [m + s for m, s in zip(mean, std)]
    lower = [m - s for m, s in zip(mean, std)]
    kw = {} if row is None else {"row": row, "col": col}
    # mode "lines": plotly's default draws markers on traces of <= 20 points, dotting the band's outline
    fig.add_trace(go.Scatter(x=list(x) + list(x)[::-1], y=upper + lower[::-1], mode="lines", fill="toself",
                             fillcolor=color, opacity=0.18, line={"width": 0}, hoverinfo="skip", name=f"{name} ± std",
                             showlegend=False, legendgroup=name), **kw)
    fig.add_trace(go.Scatter(x=list(x), y=list(mean), mode="lines+markers", line={"color": color, "width": 2},
                             name=name, legendgroup=name, showlegend=legend,
                             customdata=list(std), hovertemplate="step %{x}<br>%{y:.2f} ± %{customdata:.2f}"), **kw)


def _thin(steps: list[int], mean: list[float], std: list[float], max_points: int):
    keep = _keep(len(steps), max_points)
    return [steps[i] for i in keep], [mean[i] for i in keep], [std[i] for i in keep]


def accuracy_figure(events: list[dict], metric: str | None = None, total_steps: int | None = None,
                    title: str | None = None, demo: bool = False, max_points: int = MAX_POINTS) -> go.Figure:
    """Metric vs outer step: mean line with a ± std band; majority and random real k-shot as lines."""
    metric = metric or primary_metric(events)
    steps, mean, std = _thin(*eval_points(events, metric), max_points)
    fig = go.Figure()
    if steps:
        _band(fig, steps, mean, std, _COLORS[0], f"distilled ({metric})")
    right = max([total_steps or 0, *steps, 1])
    styles = {"majority": ("#7f7f7f", "dash"), "random": ("#ff7f0e", "dot")}
    for name, (m, s) in baselines(events, metric).items():
        color, dash = styles["majority" if name == "majority" else "random"]
        fig.add_trace(go.Scatter(x=[0, right], y=[m, m], mode="lines", line={"color": color, "dash": dash},
                                 name=f"{name} {m:.1f}" + (f" ± {s:.1f}" if s else ""),
                                 hovertemplate=f"{name}: {m:.2f} ± {s:.2f}<extra></extra>"))
    if not steps:
        fig.update_yaxes(range=[0, 100])
        fig.add_annotation(text="waiting for the first evaluation…", showarrow=False, x=0.5, y=0.5,
                           xref="paper", yref="paper", font={"size": 14, "color": "#888"})
    split = next((e.get("split") for e in events if e.get("type") == "eval" and e.get("split")), None)
    where = f"{split} " if split else ""     # older runs recorded no split (they validated on the reported one)
    fig.update_layout(title=title or f"{where}{metric} vs outer step" + (" (demo data)" if demo else ""),
                      xaxis_title="outer step", yaxis_title=f"{metric} (%)", height=360,
                      margin={"l": 50, "r": 10, "t": 50, "b": 40}, legend={"orientation": "h", "y": -0.2},
                      xaxis={"range": [-0.02 * right, right * 1.02]})
    return fig


_smooth = smooth   # training_figure's `smooth` argument shadows the function


def training_figure(events: list[dict], label_names: list[str] | None = None, max_label_lines: int = 12,
                    smooth: int = 0, max_points: int = MAX_POINTS, dark: bool = False) -> go.Figure:
    """Real-data loss (optionally smoothed over `smooth` steps), learned inner lr(s) and labels, per outer step."""
    if smooth < 0:
        raise ValueError(f"smooth (a window in outer steps) must be >= 0, got {smooth}")
    every = [e for e in events if e.get("type") == "step"]
    keep = _keep(len(every), max_points)
    steps = [every[i] for i in keep]
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.1,   # room for each subplot's y-axis title
                        subplot_titles=("real-data loss (outer)", "learned inner lr", "learned labels (targets)"))
    x = [e["step"] for e in steps]
    loss = [e["real_loss"] for e in steps]
    if smooth > 1:
        # smoothed over every step, then thinned, so the line does not depend on max_points
        smoothed = _smooth([e["real_loss"] for e in every], smooth)
        fig.add_trace(go.Scatter(x=x, y=loss, mode="lines", name="real loss", opacity=0.3,
                                 line={"color": _COLORS[0], "width": 1}), row=1, col=1)
        fig.add_trace(go.Scatter(x=x, y=[smoothed[i] for i in keep], mode="lines",
                                 name=f"real loss, mean of {smooth} steps", line={"color": _COLORS[0], "width": 2}),
                      row=1, col=1)
    else:
        fig.add_trace(go.Scatter(x=x, y=loss, mode="lines", name="real loss", line={"color": _COLORS[0]}),
                      row=1, col=1)
    lines = lr_lines(steps[-1]["inner_lrs"], steps[-1].get("inner_lr_groups")) if steps else []
    greys = _GREYS[dark]
    for i, (name, index) in enumerate(lines):
        fig.add_trace(go.Scatter(x=x, y=[_lr_at(e["inner_lrs"], index) for e in steps], mode="lines", name=name,
                                 line={"color": greys[i % len(greys)], "dash": ("solid", "dash", "dot")[i % 3]}),
                      row=1, col=2)
    if steps and steps[-1].get("labels"):
        N, C = len(steps[-1]["labels"]), len(steps[-1]["labels"][0])
        names = label_names or [str(c) for c in range(C)]
        own_only = N * C > max_label_lines   # many classes: each sample's own class only
        for r in range(N):
            for c in range(C):
                if own_only and c != r % C:
                    continue
                fig.add_trace(go.Scatter(
                    x=x, y=[e["labels"][r][c] for e in steps], mode="lines",
                    name=f"sample {r} ({names[r % C]}) → {names[c]}",
                    line={"color": _COLORS[r % len(_COLORS)], "dash": "solid" if c == r % C else "dot"}),
                    row=1, col=3)
    fig.update_xaxes(title_text="outer step")
    for col, title in ((1, "loss"), (2, "learning rate"), (3, "label value")):
        fig.update_yaxes(title_text=title, row=1, col=col)
    fig.update_layout(height=330, margin={"l": 55, "r": 10, "t": 40, "b": 40}, showlegend=True,
                      legend={"orientation": "h", "y": -0.3})
    return fig


def compare_figure(curves: dict[str, list[dict]], metric: str = "accuracy", max_points: int = MAX_POINTS) -> go.Figure:
    """Several runs' metric curves (mean ± std) on one chart."""
    fig = go.Figure()
    for i, (name, events) in enumerate(curves.items()):
        steps, mean, std = _thin(*eval_points(events, metric), max_points)
        if steps:
            _band(fig, steps, mean, std, _COLORS[i % len(_COLORS)], name)
    fig.update_layout(title=f"{metric} vs outer step", xaxis_title="outer step", yaxis_title=f"{metric} (%)",
                      height=380, margin={"l": 50, "r": 10, "t": 50, "b": 40}, legend={"orientation": "h", "y": -0.2})
    return fig


def live_numbers(events: list[dict], metric: str | None = None) -> dict:
    """The latest step, loss, inner lr(s) and metric, for the headline numbers of a running job."""
    metric = metric or primary_metric(events)
    step = next((e for e in reversed(events) if e.get("type") == "step"), None)
    ev = next((e for e in reversed(events) if e.get("type") == "eval"), None)
    return {"metric": metric,
            "real_loss": None if step is None else step["real_loss"],
            "inner_lrs": None if step is None else step["inner_lrs"],
            "inner_lr_groups": None if step is None else step.get("inner_lr_groups"),
            "score": None if ev is None else ev["metrics"][metric],
            "score_step": None if ev is None else ev["step"]}
