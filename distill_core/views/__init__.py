"""What the pages render: plotly figures, offline bertviz HTML, tables and form specs (no Streamlit here)."""

from . import attention, bertviz_html, curves, export, form, intro, runs, tokens

__all__ = ["attention", "bertviz_html", "curves", "export", "form", "intro", "runs", "tokens"]
