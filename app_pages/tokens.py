"""Nearest tokens: what each distilled position is closest to in the vocabulary, and how it moves."""

import streamlit as st

from distill_core.views import tokens as views
from app_pages._shared import (checkpoint_mtime, export_buttons, is_dark, load_checkpoint, nearest_cached,
                               order_cached, pick_run, show_error)

st.title("Nearest tokens")
st.caption("Distilled samples live in embedding space; each position is shown as its nearest vocabulary tokens "
           "(cosine similarity). Shading: each position's attention-label mass (mean over layers and heads), "
           "from the sample's least-attended position (light) to its most-attended (dark).")
run = pick_run()
ckpts = run.list_checkpoints() if run else []
if run and not ckpts:
    st.info(f"Run {run.name} has no checkpoint yet.")
if not ckpts:
    st.stop()
if st.session_state.get("checkpoint") not in ckpts:
    st.session_state["checkpoint"] = "best" if "best" in ckpts else ckpts[-1]
ckpt = st.select_slider("Checkpoint", ckpts, key="checkpoint", help="slide through the run's checkpoints")
top_k = st.slider("Top-k tokens per position", 1, 10, 5, key="top_k")
try:
    near, mass, step = nearest_cached(str(run.path), ckpt, checkpoint_mtime(run, ckpt), top_k)
    order = order_cached(str(run.path), ckpt, checkpoint_mtime(run, ckpt))
    names = load_checkpoint(run, ckpt)[1].label_names   # cached: nearest_cached loaded the same file
except Exception as exc:
    show_error(exc)
    st.stop()

dark = is_dark()
st.subheader(f"Decoded samples at {ckpt} (step {step})")
for r, sample in enumerate(near):
    st.markdown(f"**{views.sample_caption(r, names)}**")
    st.html(views.weighted_line_html([p[0][0] for p in sample], None if mass is None else mass[r], dark=dark))

r = st.selectbox("Sample", range(len(near)), key="sample", format_func=lambda i: views.sample_caption(i, names))
tokens = [p[0][0] for p in near[r]]
if order is not None:
    st.caption(views.order_caption(float(order.token_norm[r]), float(order.position_share[r]),
                                   order.real_token_norm, order.real_position_share))
if mass is not None:
    fig = views.mass_figure(tokens, mass[r], title=f"attention-label mass per position, sample {r}")
    st.plotly_chart(fig, key="mass_chart")
    export_buttons(fig, f"{run.name}-{ckpt}-sample{r}-mass", "mass")
st.dataframe(views.nearest_frame(near[r], None if mass is None else mass[r]), hide_index=True, key="nearest_table")

st.subheader("Across checkpoints")
lines, steps = {}, {}
for c in ckpts:
    n, _, s = nearest_cached(str(run.path), c, checkpoint_mtime(run, c), 1)
    lines[c], steps[c] = [p[0][0] for p in n[r]], s
if len([c for c in ckpts if c.startswith("step-")]) > 1:
    steps_only = {c: lines[c] for c in ckpts if c.startswith("step-")}
    st.plotly_chart(views.change_figure(steps_only, steps), key="change_chart")
st.dataframe(views.checkpoint_frame(lines), key="checkpoint_table")
