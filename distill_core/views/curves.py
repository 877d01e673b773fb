"""Training curves from engine events (metrics.jsonl records or a live job's events) as plotly figures."""

from __future__ import annotations

from typing import Iterable

import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = ["eval_points", "baselines", "accuracy_figure", "training_figure", "compare_figure", "primary_metric",
           "live_numbers"]

_GREYS = ("#222222", "#666666", "#999999")
_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


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
    fig.add_trace(go.Scatter(x=list(x) + list(x)[::-1], y=upper + lower[::-1], fill="toself", fillcolor=color,
                             opacity=0.18, line={"width": 0}, hoverinfo="skip", name=f"{name} ± std",
                             showlegend=False, legendgroup=name), **kw)
    fig.add_trace(go.Scatter(x=list(x), y=list(mean), mode="lines+markers", line={"color": color, "width": 2},
                             name=name, legendgroup=name, showlegend=legend,
                             customdata=list(std), hovertemplate="step %{x}<br>%{y:.2f} ± %{customdata:.2f}"), **kw)


def accuracy_figure(events: list[dict], metric: str | None = None, total_steps: int | None = None,
                    title: str | None = None, demo: bool = False) -> go.Figure:
    """Metric vs outer step: mean line with a ± std band; majority and random real k-shot as lines."""
    metric = metric or primary_metric(events)
    steps, mean, std = eval_points(events, metric)
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
    fig.update_layout(title=title or f"{metric} vs outer step" + (" (demo data)" if demo else ""),
                      xaxis_title="outer step", yaxis_title=f"{metric} (%)", height=360,
                      margin={"l": 50, "r": 10, "t": 50, "b": 40}, legend={"orientation": "h", "y": -0.2},
                      xaxis={"range": [-0.02 * right, right * 1.02]})
    return fig


def training_figure(events: list[dict], label_names: list[str] | None = None, max_label_lines: int = 12) -> go.Figure:
    """Real-data loss, learned inner lr(s) and the learned labels, per outer step."""
    steps = [e for e in events if e.get("type") == "step"]
    fig = make_subplots(rows=1, cols=3, subplot_titles=("real-data loss (outer)", "learned inner lr",
                                                        "learned labels (target of each sample)"))
    x = [e["step"] for e in steps]
    fig.add_trace(go.Scatter(x=x, y=[e["real_loss"] for e in steps], mode="lines", name="real loss",
                             line={"color": _COLORS[0]}), row=1, col=1)
    T = len(steps[-1]["inner_lrs"]) if steps else 0
    for t in range(T):
        fig.add_trace(go.Scatter(x=x, y=[e["inner_lrs"][t] for e in steps], mode="lines", name=f"lr step {t + 1}",
                                 line={"color": _GREYS[t % len(_GREYS)], "dash": ("solid", "dash", "dot")[t % 3]}),
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
    fig.update_layout(height=330, margin={"l": 40, "r": 10, "t": 40, "b": 40}, showlegend=True,
                      legend={"orientation": "h", "y": -0.3})
    return fig


def compare_figure(curves: dict[str, list[dict]], metric: str = "accuracy") -> go.Figure:
    """Several runs' metric curves (mean ± std) on one chart."""
    fig = go.Figure()
    for i, (name, events) in enumerate(curves.items()):
        steps, mean, std = eval_points(events, metric)
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
            "score": None if ev is None else ev["metrics"][metric],
            "score_step": None if ev is None else ev["step"]}
