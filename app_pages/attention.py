"""Attention: learned [CLS] attention labels vs the model's actual [CLS] attention, per layer and head."""

import streamlit as st

from distill_core.views import attention, bertviz_html
from app_pages._shared import (export_buttons, inspect_cached, is_dark, load_checkpoint, pick_checkpoint, pick_run,
                           show_error)

st.title("Attention")
st.caption("Each distilled sample carries a target [CLS] attention for every layer and head. Here it is set "
           "against the model's actual [CLS] attention on that sample, before and after the inner-loop step.")
run = pick_run()
ckpt = pick_checkpoint(run) if run else None
if ckpt is None:
    st.stop()
try:
    learner, distilled = load_checkpoint(run, ckpt)
except Exception as exc:
    show_error(exc)
    st.stop()

c = st.columns(4)
C, L = distilled.num_labels, distilled.config.seq_len
sample = c[0].selectbox("Distilled sample", range(distilled.num_samples), key="sample",
                        format_func=lambda r: f"{r} ({distilled.label_names[r % C]})")
seed = int(c[1].number_input("Head seed", min_value=0, value=0, step=1, key="head_seed",
                             help="seed of the fresh classification head of the learner"))
which = c[2].radio("Model attention", ["after", "before"], key="which", horizontal=True,
                   help="after / before the inner-loop fine-tuning on the distilled data")
top = c[3].slider("Positions in the bertviz views", 1, L, min(24, L), key="top_positions",
                  help="long samples: the positions with the most label mass")
path = run.checkpoint(ckpt)
sa = inspect_cached(str(run.path), ckpt, path.stat().st_mtime, sample, seed)
st.caption(f"Run {run.name}, checkpoint {ckpt} (step {distilled.meta.get('step')}), "
           f"{distilled.num_layers} layers × {distilled.num_heads} heads, L = {L}.")

if sa.label is None:
    st.info("This run learns no attention labels (attention labels: none); the views show the model's attention only.")
else:
    fig = attention.kl_figure(sa.kl_before, sa.kl_after)
    st.plotly_chart(fig, key="kl_chart")
    export_buttons(fig, f"{run.name}-{ckpt}-sample{sample}-kl", "kl")

dark = is_dark()
comp = bertviz_html.cls_comparison(sa.label, getattr(sa, which), sa.tokens, top)
st.subheader("bertviz: label vs model")
st.caption(f"Rows: '{bertviz_html.LABEL_ROW}' is the learned label, '{bertviz_html.MODEL_ROW}' the model's "
           f"attention ({which} the inner step). Tokens: nearest vocabulary token of each position. {comp.note}")
head_tab, model_tab = st.tabs(["Head view", "Model view"])
views = ((head_tab, "head", bertviz_html.head_view_html), (model_tab, "model", bertviz_html.model_view_html))
for tab, kind, build in views:
    with tab:
        page = build(comp, dark=dark)
        st.iframe(page, height=bertviz_html.view_height(comp, kind))
        st.download_button(f"Download the {kind} view (HTML, works offline)", page, key=f"{kind}_html",
                           file_name=f"{run.name}-{ckpt}-sample{sample}-{kind}-view.html", mime="text/html",
                           on_click="ignore")
