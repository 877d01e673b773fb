"""Nearest-token views: per-position table, label-mass weighting and change across checkpoints."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import plotly.graph_objects as go

__all__ = ["nearest_frame", "mass_figure", "weighted_line_html", "sample_caption", "checkpoint_frame", "change_figure",
           "order_caption"]

Nearest = list[list[tuple[str, float]]]   # per position: top-k (token, cosine)


def nearest_frame(nearest: Nearest, mass: np.ndarray | None = None) -> pd.DataFrame:
    """One row per position: label mass (if any) and the top-k tokens with cosine similarity."""
    rows = []
    for i, pos in enumerate(nearest):
        row = {"position": i}
        if mass is not None:
            row["label mass"] = float(mass[i])
        for j, (tok, sim) in enumerate(pos):
            row[f"#{j + 1}"] = f"{tok}  ({sim:.2f})"
        rows.append(row)
    return pd.DataFrame(rows)


def mass_figure(tokens: list[str], mass: np.ndarray, title: str = "attention-label mass per position") -> go.Figure:
    """Bars of the [CLS] label mass (mean over layers and heads) per position, named by nearest token."""
    names = [f"{i} {t}" for i, t in enumerate(tokens)]
    fig = go.Figure(go.Bar(x=names, y=mass, marker_color="#1f77b4",
                           hovertemplate="%{x}<br>mass %{y:.4f}<extra></extra>"))
    fig.add_hline(y=1 / len(tokens), line_dash="dot", line_color="#888", annotation_text="uniform")
    fig.update_layout(title=title, yaxis_title="mass", height=300, margin={"l": 50, "r": 10, "t": 50, "b": 90})
    return fig


def sample_caption(row: int, label_names: list[str] | None = None) -> str:
    """'sample 0 · class positive': row r of the distilled data holds class r % C."""
    if not label_names:
        return f"sample {row}"
    return f"sample {row} · class {label_names[row % len(label_names)]}"


def weighted_line_html(tokens: list[str], mass: np.ndarray | None, dark: bool = False) -> str:
    """The decoded line with each token shaded by its attention-label mass (stronger = more, min to max)."""
    if mass is None:
        return "<p>" + " ".join(html.escape(t) for t in tokens) + "</p>"
    lo, hi = float(np.min(mass)), float(np.max(mass))
    faint = "#eee" if dark else "#111"   # text on a nearly transparent box sits on the page's own background
    spans = []
    for tok, m in zip(tokens, mass):
        alpha = 0.06 + 0.84 * ((float(m) - lo) / (hi - lo) if hi > lo else 0.5)
        spans.append(f'<span title="mass {float(m):.4f}" style="background: rgba(31,119,180,{alpha:.2f}); '
                     f'padding: 1px 3px; margin: 1px; border-radius: 3px; display: inline-block; '
                     f'color: {"#fff" if alpha > 0.55 else faint}">{html.escape(tok)}</span>')
    return '<div style="line-height: 1.9; font-family: monospace">' + "".join(spans) + "</div>"


def checkpoint_frame(lines: dict[str, list[str]]) -> pd.DataFrame:
    """Rows: checkpoints in order; columns: positions (nearest token); plus how many changed since the row above."""
    names = list(lines)
    frame = pd.DataFrame([lines[n] for n in names], index=names)
    frame.columns = [str(c) for c in frame.columns]
    changed = [0] + [int(sum(a != b for a, b in zip(lines[p], lines[n]))) for p, n in zip(names, names[1:])]
    frame.insert(0, "changed", changed)
    return frame


def change_figure(lines: dict[str, list[str]], steps: dict[str, int | None]) -> go.Figure:
    """Positions whose nearest token differs from the first checkpoint, per checkpoint step."""
    names = [n for n in lines if steps.get(n) is not None]
    names.sort(key=lambda n: steps[n])
    first = lines[names[0]] if names else []
    y = [sum(a != b for a, b in zip(first, lines[n])) for n in names]
    fig = go.Figure(go.Scatter(x=[steps[n] for n in names], y=y, mode="lines+markers"))
    fig.update_layout(title="positions whose nearest token moved since the first checkpoint", height=260,
                      xaxis_title="outer step", yaxis_title="positions", margin={"l": 50, "r": 10, "t": 50, "b": 40})
    return fig


def order_caption(token_norm: float, position_share: float, real_token_norm: float, real_share: float) -> str:
    """One sentence on how much word order the model can see in a sample (inspection.order_weight)."""
    text = (f"Word order: this sample's token vectors have length {token_norm:.2f} (a word embedding's: "
            f"{real_token_norm:.2f}), so the position embeddings are {100 * position_share:.1f} % of the "
            f"embedding sum the model normalises (in a real sentence: {100 * real_share:.1f} %).")
    if position_share < real_share / 4:
        text += (" The model reads it nearly as a bag of vectors: the order of the positions below hardly "
                 "matters (`--embed-max-norm` caps the length).")
    return text
