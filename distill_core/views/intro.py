"""The Distill page's first screen: what one distilled sample holds, in words and as a schematic figure."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.colors import sample_colorscale

__all__ = ["INTRO_MARKDOWN", "intro_figure"]

INTRO_MARKDOWN = """\
**What is learned.** The distilled set holds a few synthetic samples per class (one by default).
Each sample is not text but:

- **L input embeddings**: an L × d matrix fed to the encoder in place of the word embeddings of L tokens.
  The vectors need not be close to any vocabulary token (the Tokens page shows the nearest ones only as a reading aid).
- **a label**: the one-hot label of its class (hard), or a learned distribution over the classes (soft).
- **attention labels**: for every layer and head, a target distribution of the [CLS] query over the L positions.
  During the inner step a KL(attention label ‖ model's [CLS] attention) term, weighted by λ, is added to the
  task loss, so the samples also teach the model where [CLS] should look.

Shared by all samples: a **learned inner learning rate** (one per inner step).

**How it is used and scored.** A fresh copy of the pre-trained BERT (with a new classification head) takes 1 to a
few SGD steps on these samples with the learned learning rate, and is then evaluated on the real task. The outer
loop backpropagates the loss on real training data through those steps into the embeddings, labels, attention
labels and learning rate.
"""

L, LAYERS = 8, 4   # the schematic's sequence length and layers (a real run has e.g. L = 64 and 12 layers)


def _attention_strip() -> np.ndarray:
    """(LAYERS, L) made-up [CLS] distributions: deeper layers focus on fewer positions."""
    pos = np.arange(L)
    logits = np.stack([-(1 + k) * 0.35 * (pos - 3.0) ** 2 / 4 + 0.8 * (pos == 0) for k in range(LAYERS)])
    e = np.exp(logits)
    return e / e.sum(-1, keepdims=True)


def intro_figure(dark: bool = False) -> go.Figure:
    """A schematic of one distilled sample: L embedding cells, a soft-label bar and a layers x positions [CLS] strip."""
    ink = "#fafafa" if dark else "#31333f"    # Streamlit's text colours; backgrounds are left to the theme
    fig = go.Figure()
    shapes, notes = [], []

    def note(x: float, y: float, text: str, **kw) -> None:
        notes.append(dict(x=x, y=y, text=text, showarrow=False, font={"color": ink, "size": kw.pop("size", 12)}, **kw))

    # L input embeddings: each cell a d-dimensional vector, drawn as a few stripes
    rng = np.random.default_rng(0)
    for i in range(L):
        for j, color in enumerate(sample_colorscale("Blues", list(rng.uniform(0.25, 0.95, 4)))):
            shapes.append(dict(type="rect", x0=i + 0.08, x1=i + 0.92, y0=7.0 + j * 0.35, y1=7.35 + j * 0.35,
                               fillcolor=color, line={"width": 0}))
        note(i + 0.5, 6.7, f"e<sub>{i + 1}</sub>", size=11)
    note(L / 2, 8.85, "<b>L input embeddings</b> (vectors, not tokens)")

    # the label: a soft label bar 0.9 / 0.1
    x0, width = L + 1.2, 4.0
    for start, end, color in ((0.0, 0.9, "#2ca02c"), (0.9, 1.0, "#d62728")):
        shapes.append(dict(type="rect", x0=x0 + start * width, x1=x0 + end * width, y0=7.2, y1=8.0,
                           fillcolor=color, line={"width": 0}))
    note(x0 + 0.45 * width, 6.75, "positive 0.9<br>negative 0.1", size=11)
    note(x0 + width / 2, 8.85, "<b>(soft) label</b>")

    # learned inner learning rate
    note(x0 + width / 2, 4.6, "<b>learned inner lr</b> η<br>(one per inner step,<br>shared by the samples)", size=12)

    # [CLS] attention labels: layers x positions, aligned under the embedding cells
    strip = _attention_strip()
    colors = sample_colorscale("Viridis", list(strip.ravel() / strip.max()))
    for k in range(LAYERS):
        for i in range(L):
            shapes.append(dict(type="rect", x0=i + 0.08, x1=i + 0.92, y0=5.6 - (k + 1) * 0.9, y1=5.6 - k * 0.9 - 0.08,
                               fillcolor=colors[k * L + i], line={"width": 0}))
        note(-0.15, 5.6 - (k + 0.5) * 0.9, f"layer {k + 1}", size=11, xanchor="right")
    note(L / 2, 6.15, "<b>[CLS] attention labels</b>: per layer and head, a distribution<br>"
                      "over the L positions (one head shown)", size=11)
    note(L / 2, 1.3, "trained with KL(label ‖ model's [CLS] attention)", size=11)
    shapes.append(dict(type="rect", x0=-2.0, x1=x0 + width + 0.4, y0=0.8, y1=9.4,
                       line={"color": "#888888", "dash": "dot"}))
    note(-1.9, 9.75, "one distilled sample of class <i>positive</i>", xanchor="left", size=13)

    fig.update_layout(shapes=shapes, annotations=notes, height=340, showlegend=False,
                      margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      xaxis={"visible": False, "range": [-2.2, x0 + width + 0.6]},
                      yaxis={"visible": False, "range": [0.6, 10.1]})
    return fig
