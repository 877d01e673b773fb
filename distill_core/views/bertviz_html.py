"""bertviz head/model views of learned [CLS] attention labels vs the model's [CLS] attention, with no network.

bertviz's HTML loads require.js, d3 5.7.0 and jquery from a CDN. Here d3 v5.7.0 comes from the
`mpld3` package (mpld3/js/d3.v5.min.js), jquery from `xstatic-jquery`, both inlined, and a
ten-line `require`/`requirejs` shim hands them to bertviz's script: the page works offline.

bertviz's head view needs as many attention rows as tokens; a [CLS]-only label (1 x L) is
drawn as cross-attention from two query rows, "[CLS] label" and "[CLS] model", to the L
positions (each named by its nearest vocabulary token).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = ["ClsComparison", "cls_comparison", "head_view_html", "model_view_html", "offline_page",
           "external_urls", "LABEL_ROW", "MODEL_ROW"]

LABEL_ROW, MODEL_ROW = "[CLS] label", "[CLS] model"
# XML namespace identifiers inside d3 are names, never fetched; everything else counts as external.
_NAMESPACE_URLS = re.compile(r"^https?://www\.w3\.org/")
_URL = re.compile(r"""(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}[^\s"'<>)]*""")


@lru_cache(maxsize=1)
def _libraries() -> tuple[str, str]:
    """(jquery, d3 v5) source text from the installed registry packages."""
    import importlib.util

    import xstatic.pkg.jquery as xjq

    # find mpld3's folder without importing it: `import mpld3` imports matplotlib, for one JS file
    spec = importlib.util.find_spec("mpld3")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the bertviz views need the package mpld3 (for its d3.v5.min.js)")
    d3 = (Path(spec.submodule_search_locations[0]) / "js" / "d3.v5.min.js").read_text(encoding="utf-8")
    jquery = (Path(xjq.BASE_DIR) / "jquery.min.js").read_text(encoding="utf-8")
    d3 = "\n".join(line for line in d3.splitlines() if not line.startswith("//"))  # "// https://d3js.org" banner
    return jquery, d3


_SHIM = """
(function () {
  // Offline stand-in for require.js: bertviz only asks for 'jquery' and 'd3', already loaded above.
  var modules = {jquery: window.jQuery, d3: window.d3};
  function require(deps, callback) {
    var found = deps.map(function (name) {
      if (!(name in modules)) { throw new Error("offline require: unknown module " + name); }
      return modules[name];
    });
    if (callback) { callback.apply(window, found); }
  }
  require.config = function () {};
  window.require = window.requirejs = require;
})();
"""


def external_urls(text: str) -> list[str]:
    """URLs in `text` that a browser could try to fetch (XML namespace names excluded)."""
    return [u for u in _URL.findall(text) if not _NAMESPACE_URLS.match(u if u.startswith("http") else "http:" + u)]


def _strip_cdn(bertviz_html: str) -> str:
    out = re.sub(r"<script[^>]*\bsrc=[\"'][^\"']*[\"'][^>]*>\s*</script>", "", bertviz_html)  # require.js tag
    out = re.sub(r"require\.config\(\{.*?\}\);", "", out, count=1, flags=re.S)              # CDN paths
    out = re.sub(r"/\*\*.*?\*\*/", "", out, count=1, flags=re.S)                              # header comment
    return out


_FIT_WIDTH = """
(function () {
  // The model view draws a fixed 970px-wide SVG; give it a viewBox so it shrinks to narrow iframes.
  document.querySelectorAll("#vis svg").forEach(function (svg) {
    var w = parseFloat(svg.getAttribute("width")), h = parseFloat(svg.getAttribute("height"));
    if (!svg.getAttribute("viewBox") && w > 0 && h > 0 && String(svg.getAttribute("width")).indexOf("%") < 0) {
      svg.setAttribute("viewBox", "0 0 " + w + " " + h);
      svg.setAttribute("width", "100%");
      svg.removeAttribute("height");
      svg.style.maxWidth = w + "px";
    }
  });
})();
"""


# Page colours per theme; dark matches Streamlit's dark background so the iframe shows no seam.
_THEMES = {
    "light": {"bg": "#ffffff", "fg": "#222222", "note": "#555555", "hover": "lightgray"},
    "dark": {"bg": "#0e1117", "fg": "#dddddd", "note": "#aaaaaa", "hover": "#3a3f4b"},
}


def _theme_css(mode: str) -> str:
    t = _THEMES[mode]
    css = (f":root {{ color-scheme: {mode}; }} body {{ margin: 6px; font-family: 'Helvetica Neue', Helvetica, "
           f"Arial, sans-serif; background: {t['bg']}; color: {t['fg']}; }} "
           f".note {{ font-size: 13px; color: {t['note']}; margin: 0 0 6px 0; }}")
    if mode == "dark":
        # bertviz paints SVG text black (model view axis labels, head view tokens by default) and a light-grey
        # hover box; CSS beats SVG presentation attributes, so these stay readable on the dark page.
        css += f" #vis svg text {{ fill: {t['fg']}; }} #vis svg rect.background {{ fill: {t['hover']}; }}"
    return css


def offline_page(body: str, title: str = "attention", note: str = "", after: str = "", dark: bool = False) -> str:
    """A self-contained HTML document around bertviz output: libraries inlined, no CDN left; light or dark page."""
    jquery, d3 = _libraries()
    cleaned = _strip_cdn(body)
    mode = "dark" if dark else "light"
    page = f"""<!DOCTYPE html>
<html data-theme="{mode}"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_theme_css(mode)}</style>
<script>{jquery}</script>
<script>{d3}</script>
<script>{_SHIM}</script>
</head><body>
{f'<p class="note">{html.escape(note)}</p>' if note else ''}
{cleaned}
{f"<script>{after}</script>" if after else ""}
</body></html>
"""
    left = external_urls(page)
    if left:
        raise RuntimeError(f"offline bertviz page still references external URLs: {left[:3]}")
    return page


@dataclass
class ClsComparison:
    """Label vs model [CLS] attention restricted to the shown positions, in bertviz's layout."""

    rows: list[str]            # query rows: "[CLS] label", "[CLS] model" (label row absent without labels)
    tokens: list[str]          # "pos token" of each shown position
    attention: np.ndarray      # (K, H, rows, shown)
    positions: np.ndarray      # shown positions, ascending
    note: str                  # what was cut, in words

    def as_layers(self):
        """bertviz's input: a tuple of per-layer tensors (1, heads, rows, cols)."""
        import torch

        return tuple(torch.as_tensor(a[None], dtype=torch.float32) for a in self.attention)


def cls_comparison(label: np.ndarray | None, actual: np.ndarray, tokens: list[str],
                   max_positions: int = 32) -> ClsComparison:
    """Pick the positions with the most label mass (model mass without labels) and stack the rows.

    label, actual: (K, H, L) [CLS] distributions; tokens: L names. Values are not renormalised
    after the cut, so line strengths stay comparable with the full distributions.
    """
    K, H, L = actual.shape
    if len(tokens) != L:
        raise ValueError(f"got {len(tokens)} tokens for {L} attention positions")
    if max_positions < 1:
        raise ValueError(f"max_positions must be >= 1, got {max_positions}")
    ranking = (label if label is not None else actual).mean(axis=(0, 1))      # (L,)
    keep = np.sort(np.argsort(-ranking, kind="stable")[: min(max_positions, L)])
    names = [f"{i} {tokens[i]}" for i in keep]
    parts = ([label[..., keep]] if label is not None else []) + [actual[..., keep]]
    rows = ([LABEL_ROW] if label is not None else []) + [MODEL_ROW]
    att = np.stack(parts, axis=2)                                              # (K, H, rows, shown)
    if len(keep) == L:
        note = f"All {L} positions shown."
    else:
        what = "attention-label" if label is not None else "model attention"
        cover = f"{ranking[keep].sum() / max(ranking.sum(), 1e-12):.0%} of the {what} mass"
        if label is not None:
            cover += f", {actual.mean(axis=(0, 1))[keep].sum():.0%} of the model's"
        note = (f"Showing the {len(keep)} of {L} positions with the most {what} mass ({cover}); "
                f"{L - len(keep)} positions cut. Weights are not renormalised.")
    return ClsComparison(rows, names, att, keep, note)


def head_view_html(comp: ClsComparison, layer: int = 0, title: str = "bertviz head view", dark: bool = False) -> str:
    """bertviz's head view as an offline page; bertviz's head view has no display_mode, so the page CSS themes it."""
    from bertviz import head_view

    out = head_view(cross_attention=comp.as_layers(), encoder_tokens=comp.tokens, decoder_tokens=comp.rows,
                    layer=layer, html_action="return")
    return offline_page(out.data, title, comp.note, dark=dark)


def model_view_html(comp: ClsComparison, title: str = "bertviz model view", dark: bool = False) -> str:
    """bertviz's model view (display_mode "dark" or "light") as an offline page."""
    from bertviz import model_view

    out = model_view(cross_attention=comp.as_layers(), encoder_tokens=comp.tokens, decoder_tokens=comp.rows,
                     display_mode="dark" if dark else "light", html_action="return")
    return offline_page(out.data, title, comp.note, after=_FIT_WIDTH, dark=dark)


def view_height(comp: ClsComparison, kind: str) -> int:
    """Iframe height (pixels) that fits the view without an inner scrollbar (bertviz's own layout maths)."""
    K, H, rows, n = comp.attention.shape
    tall = max(rows, n)
    if kind == "head":
        return int(tall * 22.5 + 30 + 100)
    thumb = tall * 7 * (12 / H) + 10
    return int(max(K * thumb + 50, tall * 18 + 55) + 80)


__all__.append("view_height")
