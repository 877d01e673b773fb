"""Results: the reproduction study (docs/REPRODUCTION.md) beside the paper, with links into each run."""

import streamlit as st

from distill_core.errors import UserError
from distill_core.study import cpu_breakdown, load_summary, time_to_accuracy
from distill_core.views import results as views
from app_pages._shared import PAGES, export_buttons, show_error, study_dir

st.title("Results: does it reproduce the paper?")
st.caption("The paper's settings on real SST-2 and MRPC with the bundled all-MiniLM-L6-v2 (6 layers, 384 wide), "
           "against the paper's BERT-base numbers. Every score is on the evaluation split, which nothing was "
           "chosen on: the learning rates, checkpoints, tuned baselines and early stopping were chosen on a dev "
           "split carved from train ('chosen on dev'). A score's ± is the std over the row's learners (fresh "
           "heads fine-tuned on the distilled data, pooled over seeds); 'across seeds' is the paper's metric "
           "over distillation seeds. See docs/REPRODUCTION.md for the discussion.")
summary = study_dir() / "summary.json"
if not summary.exists():
    st.info(f"No study summary at `{summary}` yet. Run `python -m distill_core study --preset paper "
            "--data-dir ../shared/data` (resumable), or set DISTILL_STUDY_DIR.")
    st.stop()
try:
    rows = load_summary(summary)
except UserError as exc:
    show_error(exc)
    st.stop()

tasks = list(dict.fromkeys(r["task"] for r in rows))
cpu = cpu_breakdown(study_dir(), rows)
c = st.columns(3)
c[0].metric("Rows", len(rows))
c[1].metric("Tasks", ", ".join(tasks))
c[2].metric("CPU time", f"{cpu.hours:.1f} h", help="process CPU time (all threads) of every row and of the "
            "learning-rate pilots: " + cpu.describe("; "))
st.caption("QNLI and AG News are supported by the code but absent here: only their evaluation splits are "
           "available offline, and distillation needs a train split.")

frame = views.results_frame(rows)
st.dataframe(frame.drop(columns=["run"]), hide_index=True, key="results_table")

for task in tasks:
    # MRPC: the GLUE score (mean of accuracy and F1) is the paper's column, so its chart carries the paper's marks
    metrics = [m for m in ("accuracy", "f1") if any(m in r["metrics"] for r in rows if r["task"] == task)]
    if views.PAPER_METRIC.get(task) == "glue":
        metrics = ["glue", *metrics]
    for col, metric in zip(st.columns(len(metrics)), metrics):
        with col:
            fig = views.results_figure(rows, task, metric)
            st.plotly_chart(fig, key=f"bars_{task}_{metric}")
            export_buttons(fig, f"results-{task}-{metric}", f"exp_{task}_{metric}")

st.subheader("Time to accuracy")
st.caption("Dev score of the distilled rows validated along the way, against the CPU minutes their runs had "
           "spent (process time, all threads, periodic validation included), with a band of ± one std over "
           "the seeds; the dashed line is ordinary fine-tuning of the same model on all of the train split "
           "(its learners' dev checks).")
curves = time_to_accuracy(study_dir(), rows)
shown = 0
for task in tasks:
    fig = views.time_to_accuracy_figure(curves, task)
    if fig is not None:
        st.plotly_chart(fig, key=f"tta_{task}")
        export_buttons(fig, f"time-to-accuracy-{task}", f"exp_tta_{task}")
        shown += 1
if not shown:
    st.info("This study has no dev curves yet: rows run before curves were recorded, or none of its rows is a "
            "curve row (`StudyConfig.curve_rows`).")

st.subheader("Open a row's run")
st.caption("Distilled rows keep their run (config, training curves, last checkpoint): inspect what was learned.")
for r in rows:
    if not r.get("run"):
        continue
    name = r["run"].rsplit("/", 1)[-1]
    cols = st.columns([3, 1, 1, 1])
    cols[0].markdown(f"**{r['task']} · {views.row_label(r)}** — {views.format_score(r['metrics'].get('accuracy'))}")
    for col, (page, label) in zip(cols[1:], (("attention", "Attention"), ("tokens", "Tokens"), ("runs", "Curves"))):
        col.page_link(PAGES[page], label=label, query_params={"run": name})
