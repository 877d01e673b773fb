"""Exports for slides: any plotly figure as a self-contained HTML file, and as PNG where kaleido is installed."""

from __future__ import annotations

import plotly.graph_objects as go

__all__ = ["figure_html", "figure_png", "png_available"]


def figure_html(fig: go.Figure) -> str:
    """A standalone HTML page with plotly.js inlined (works offline; its toolbar also saves a PNG)."""
    return fig.to_html(full_html=True, include_plotlyjs=True, include_mathjax=False,
                       config={"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}})


def png_available() -> bool:
    """Server-side PNG needs the optional `kaleido` package (and a Chrome/Chromium it can drive)."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return False
    return True


def figure_png(fig: go.Figure, scale: float = 2.0) -> bytes | None:
    """PNG bytes via kaleido, or None where it is not installed or cannot start a browser."""
    if not png_available():
        return None
    try:
        return fig.to_image(format="png", scale=scale)
    except Exception:
        return None
