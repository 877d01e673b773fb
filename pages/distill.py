"""Distill (home): choose data, model and every setting; Start/Stop a background run; watch it live."""

import streamlit as st

from distill_core import jobs
from distill_core.errors import UserError
from distill_core.runs import RunDir, default_runs_dir, list_runs
from distill_core.views import form
from pages._shared import PAGES, busy_notice, field_widget, job_registry, live_run_panel, show_error

st.title("Distill")
st.caption("Learn a tiny synthetic training set with attention labels (Maekawa et al., ACL 2023). Defaults are "
           "sized for a laptop CPU: the first accuracy point appears within about two minutes.")
reg, d = job_registry(), form.defaults()
messages, panel = st.container(), st.container()

with st.sidebar:
    st.header("New run")
    source = st.radio("Data source", ["task", "upload", "files"], key="data_source", horizontal=True,
                      format_func={"task": "Task", "upload": "Upload", "files": "File paths"}.get)
    values, uploads = {}, {}
    if source == "task":
        tasks = form.task_options()
        values["task"] = st.selectbox("Task", tasks, index=tasks.index(d["task"]), key="task")
        values["data_dir"] = st.text_input("Data directory", d["data_dir"], key="data_dir",
                                           help="<dir>/<task>/<split>.parquet|csv|tsv|jsonl (env DISTILL_DATA_DIR)")
    else:
        for role in ("train", "eval"):
            if source == "upload":
                up = st.file_uploader(f"{role} file", type=["csv", "tsv", "jsonl", "parquet"], key=f"{role}_upload")
                uploads[role] = (up.name, up.getvalue()) if up is not None else None
            else:
                values[f"{role}_path"] = st.text_input(f"{role} file path", key=f"{role}_path")
        values["text_columns"] = st.text_input("Text column(s), comma-separated", d["text_columns"], key="text_columns")
        values["label_column"] = st.text_input("Label column", d["label_column"], key="label_column")
    start = st.button("Start", key="start", type="primary", width="stretch")
    for section in form.SECTIONS:
        with st.expander(section, expanded=section == "Outer loop and evaluation"):
            values.update({f.key: field_widget(f) for f in form.FIELDS if f.section == section})

if start:
    try:
        if source == "upload" and not all(uploads.values()):
            raise UserError("upload both a train file and an evaluation file")
        job = jobs.start_distill(form.config_from_values(values, source), reg, uploads=uploads or None)
        st.query_params["run"] = job.id
    except jobs.JobBusy as busy:
        busy_notice(messages, busy.job)
    except Exception as exc:  # settings, files, columns: say what is wrong and keep the app up
        with messages:
            show_error(exc)

job = reg.get(st.query_params.get("run")) or (reg.active() if reg.active() and reg.active().kind == "distill" else None)
run_id = job.id if job else st.query_params.get("run")
active = reg.active()
if active is not None and active is not job and not start:
    busy_notice(messages, active)
if run_id and (job or RunDir(default_runs_dir() / run_id).exists()):
    st.query_params["run"] = run_id
    with panel:
        live_run_panel(job, run_id)
else:
    panel.info("Choose settings in the sidebar and press **Start**. Runs are saved to "
               f"`{default_runs_dir()}`; command-line runs show up on the Runs page too.")
    latest = next(iter(list_runs(default_runs_dir())), None)
    if latest is not None:
        panel.page_link(PAGES["distill"], label=f"Show the most recent run, {latest.name}",
                        query_params={"run": latest.name})
