"""Step-anatomy views: each move variant's score against every move, and how far each part moved."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..step_anatomy import (ALL_BUT, ATTENTION_LOSS_ONLY, ENCODER_ONLY, EVERY_MOVE, HEAD_ONLY, LABEL_LOSS_ONLY,
                            StepAnatomy)

__all__ = ["anatomy_lines", "anatomy_figure", "anatomy_caption"]


def anatomy_caption(a: StepAnatomy) -> str:
    """One sentence on what was measured, and the finding a reader looks for first."""
    m = a.metric
    every = a.variants[EVERY_MOVE][m]["mean"]
    undone = [(name[len(ALL_BUT):], a.drop(name)) for name in a.variants if name.startswith(ALL_BUT)]
    part, worst = max(undone, key=lambda x: x[1]) if undone else ("", 0.0)
    seeds = f"head seed {a.seed}" if a.learners == 1 else f"head seeds {a.seed}-{a.seed + a.learners - 1}"
    lines = [f"{a.learners} learner{'s' if a.learners != 1 else ''} ({seeds}) "
             f"on {a.eval_rows} {a.split} rows: {m} {every:.1f} with every move, "
             f"{a.variants[HEAD_ONLY][m]['mean']:.1f} with the head's move alone, "
             f"{a.variants[ENCODER_ONLY][m]['mean']:.1f} with the encoder's alone (the head kept at its random draw)."]
    if LABEL_LOSS_ONLY in a.variants and ATTENTION_LOSS_ONLY in a.variants:
        lines.append(f"Stepped on the label loss alone: {a.variants[LABEL_LOSS_ONLY][m]['mean']:.1f}; "
                     f"on the attention-label loss alone: {a.variants[ATTENTION_LOSS_ONLY][m]['mean']:.1f}.")
    if undone and worst > 0:
        lines.append(f"Undoing {part}'s move costs the most: {worst:.1f} points.")
    elif undone:
        lines.append("Undoing any one part's move costs nothing.")
    return " ".join(lines)


def anatomy_lines(a: StepAnatomy) -> list[str]:
    """The command line's table: variants with their score and change, then the moves per part."""
    m = a.metric
    out = [anatomy_caption(a), "", f"{'variant':24s} {m:>16s}  vs every move"]
    for name, stats in a.variants.items():
        change = "" if name == EVERY_MOVE else f"{-a.drop(name):+7.2f}"
        out.append(f"{name:24s} {stats[m]['mean']:8.2f} ± {stats[m]['std']:5.2f}  {change}")
    out += ["", "relative move ||theta_T - theta_0|| / ||theta_0|| (the head's against its random draw):"]
    out += [f"  {g:12s} {v['mean']:.4f}" for g, v in a.relative_move.items()]
    return out


def anatomy_figure(a: StepAnatomy, title: str = "") -> go.Figure:
    """Left: each variant's score (error bar: std over learners), the every-move score dotted.
    Right: the relative move of each part, on a log axis (the pooler and head move far more)."""
    m = a.metric
    names = list(a.variants)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4], horizontal_spacing=0.12,
                        subplot_titles=(f"{m} with some moves undone, or one loss", "how far each part moved"))
    colours = ["#2ca02c" if n == EVERY_MOVE else "#7f7f7f" if n in (HEAD_ONLY, ENCODER_ONLY)
               else "#9467bd" if n in (LABEL_LOSS_ONLY, ATTENTION_LOSS_ONLY) else "#1f77b4" for n in names]
    fig.add_trace(go.Bar(x=names, y=[a.variants[n][m]["mean"] for n in names], marker_color=colours,
                         error_y={"type": "data", "array": [a.variants[n][m]["std"] for n in names]},
                         hovertemplate="%{x}<br>" + m + " %{y:.2f}<extra></extra>", showlegend=False), 1, 1)
    fig.add_hline(y=a.variants[EVERY_MOVE][m]["mean"], line_dash="dot", line_color="#2ca02c", row=1, col=1)
    groups = list(a.relative_move)
    fig.add_trace(go.Bar(x=groups, y=[a.relative_move[g]["mean"] for g in groups], marker_color="#ff7f0e",
                         hovertemplate="%{x}<br>moved %{y:.4f} of its norm<extra></extra>", showlegend=False), 1, 2)
    low = min(a.variants[n][m]["mean"] - a.variants[n][m]["std"] for n in names)
    fig.update_yaxes(title_text=m, range=[max(0.0, low - 5), 100], row=1, col=1)
    fig.update_yaxes(title_text="||Δθ|| / ||θ₀||", type="log", row=1, col=2)
    fig.update_layout(title=title or None, height=380, margin={"l": 50, "r": 10, "t": 60, "b": 110})
    return fig
