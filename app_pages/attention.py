"""Attention: learned [CLS] attention labels vs the model's actual [CLS] attention, per layer and head."""

import streamlit as st

from distill_core.views import attention, bertviz_html
from app_pages._live import anatomy_panel, busy_notice, session_owner
from app_pages._shared import (export_buttons, inspect_cached, is_dark, job_registry, load_checkpoint,
                               pick_checkpoint, pick_run, show_error)
from distill_core import jobs

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

st.subheader("What the inner step moves")
st.caption("Beyond the paper, a diagnostic: fresh learners are fine-tuned on this checkpoint as evaluation does, "
           "then scored with each part's move undone in turn (put back to the pre-trained weights, or the head to "
           "its random draw). It shows which moves carry the score. A job like Evaluate: a learner costs about "
           "13 scorings of the split and 3 fine-tunings. `python -m distill_core inspect RUN --anatomy` does the "
           "same from a terminal.")
c = st.columns([1, 1, 2])
n = int(c[0].number_input("Learners", min_value=1, max_value=100, value=4, step=1, key="anatomy_learners"))
on = c[1].radio("Split", ["dev", "evaluation"], key="anatomy_split", horizontal=True,
                help="dev: carved from train, what selection reads; evaluation: the reported split")
reg = job_registry()
if c[2].button("Measure", key="anatomy_start"):
    try:
        running = reg.active()
        sid, who = session_owner()
        queued = jobs.start_anatomy(run, ckpt, n, on, reg, owner=sid, owner_label=who)
        if running is not None:
            busy_notice(st, running, queued=queued)
    except Exception as exc:
        show_error(exc)
anatomy_panel(run, ckpt, distilled.meta.get("step"), reg)
