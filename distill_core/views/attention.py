"""Attention-label figures: KL(label || model) per layer and head, and one head's distributions."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = ["kl_figure", "head_rows_figure"]


def kl_figure(kl_before: np.ndarray, kl_after: np.ndarray, title: str | None = None) -> go.Figure:
    """Two layers x heads heatmaps on one colour scale: before and after the inner-loop step."""
    K, H = kl_before.shape
    zmax = float(max(kl_before.max(), kl_after.max()))
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.08, subplot_titles=(
        f"before the inner step (mean {kl_before.mean():.3f})", f"after the inner step (mean {kl_after.mean():.3f})"))
    for col, z in ((1, kl_before), (2, kl_after)):
        fig.add_trace(go.Heatmap(z=z, x=list(range(H)), y=list(range(K)), zmin=0, zmax=zmax, colorscale="Viridis",
                                 showscale=col == 2, colorbar={"title": "KL"},
                                 text=np.round(z, 2), texttemplate="%{text}" if K * H <= 160 else None,
                                 hovertemplate="layer %{y}, head %{x}<br>KL %{z:.4f}<extra></extra>"),
                      row=1, col=col)
    fig.update_xaxes(title_text="head", dtick=1)
    fig.update_yaxes(title_text="layer", dtick=1, autorange="reversed")
    fig.update_layout(title=title or "KL(attention label ‖ model [CLS] attention) per layer and head",
                      height=120 + 38 * K, margin={"l": 50, "r": 10, "t": 80, "b": 40})
    return fig


def head_rows_figure(label: np.ndarray | None, before: np.ndarray, after: np.ndarray, tokens: list[str],
                     layer: int, head: int, positions: np.ndarray | None = None) -> go.Figure:
    """Label vs model [CLS] attention over positions for one layer and head (bars)."""
    L = before.shape[-1]
    pos = np.arange(L) if positions is None else np.asarray(positions)
    names = [f"{i} {tokens[i]}" for i in pos]
    fig = go.Figure()
    if label is not None:
        fig.add_trace(go.Bar(x=names, y=label[layer, head, pos], name="label", marker_color="#1f77b4"))
    fig.add_trace(go.Bar(x=names, y=before[layer, head, pos], name="model before", marker_color="#bbbbbb"))
    fig.add_trace(go.Bar(x=names, y=after[layer, head, pos], name="model after", marker_color="#d62728"))
    fig.update_layout(barmode="group", height=320, title=f"[CLS] attention, layer {layer} head {head}",
                      yaxis_title="attention", margin={"l": 50, "r": 10, "t": 50, "b": 80},
                      legend={"orientation": "h", "y": 1.1})
    return fig
