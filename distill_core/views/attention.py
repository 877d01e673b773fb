"""Attention-label figures: KL(label || model) per layer and head, and one head's distributions."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = ["kl_figure", "kl_colour_range", "head_rows_figure", "KL_EPS"]


KL_EPS = 1e-4   # nats; colour = log10(KL + KL_EPS), so a zero KL stays finite


def kl_colour_range(kl: np.ndarray) -> tuple[float, float]:
    """(zmin, zmax) in log10(KL + eps) at the box-plot whiskers: a few extreme cells cannot flatten the rest."""
    c = np.log10(np.maximum(np.asarray(kl, dtype=float).ravel(), 0) + KL_EPS)
    q1, q3 = np.percentile(c, [25, 75])
    fence = 1.5 * (q3 - q1)
    lo, hi = float(c[c >= q1 - fence].min()), float(c[c <= q3 + fence].max())
    if hi <= lo:                       # all cells inside the quartiles are equal: the data's own range
        lo, hi = float(c.min()), float(c.max())
    return (lo, hi) if hi > lo else (lo - 0.5, lo + 0.5)


def _kl_ticks(lo: float, hi: float, clipped_low: bool, clipped_high: bool) -> tuple[list[float], list[str]]:
    """Colour-bar ticks at round KL values (1, 2, 5 x 10^k) inside [lo, hi], labelled with the KL itself."""
    vals = [lo, hi]
    for k in range(int(np.floor(lo)) - 1, int(np.ceil(hi)) + 1):
        for m in (1, 2, 5) if hi - lo <= 2 else (1,):   # many decades: powers of ten only
            t = np.log10(m * 10.0 ** k + KL_EPS)
            if lo + 0.06 * (hi - lo) < t < hi - 0.06 * (hi - lo):
                vals.append(float(t))
    vals.sort()
    text = [f"{max(10 ** v - KL_EPS, 0):.2g}" for v in vals]
    if clipped_low:
        text[0] = "≤ " + text[0]
    if clipped_high:
        text[-1] = "≥ " + text[-1]
    return vals, text


def kl_figure(kl_before: np.ndarray, kl_after: np.ndarray, title: str | None = None) -> go.Figure:
    """Two layers x heads heatmaps on one log colour scale: before and after the inner-loop step; hover: true KL."""
    K, H = kl_before.shape
    both = np.concatenate([np.ravel(kl_before), np.ravel(kl_after)])
    zmin, zmax = kl_colour_range(both)
    logs = np.log10(np.maximum(both, 0) + KL_EPS)
    tickvals, ticktext = _kl_ticks(zmin, zmax, bool((logs < zmin).any()), bool((logs > zmax).any()))
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.08, subplot_titles=(
        f"before the inner step (mean {kl_before.mean():.3f})", f"after the inner step (mean {kl_after.mean():.3f})"))
    for col, kl in ((1, kl_before), (2, kl_after)):
        kl = np.asarray(kl, dtype=float)
        fig.add_trace(go.Heatmap(z=np.log10(np.maximum(kl, 0) + KL_EPS), x=list(range(H)), y=list(range(K)),
                                 zmin=zmin, zmax=zmax, colorscale="Viridis", showscale=col == 2,
                                 colorbar={"title": "KL (log scale)", "tickvals": tickvals, "ticktext": ticktext},
                                 customdata=kl, text=[[f"{v:.2g}" for v in row] for row in kl],
                                 texttemplate="%{text}" if K * H <= 160 else None,
                                 hovertemplate="layer %{y}, head %{x}<br>KL %{customdata:.4g}<extra></extra>"),
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
