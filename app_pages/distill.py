"""Distill (home): choose data, model and every setting; Start/Stop a run in its own process; watch it live."""

import streamlit as st

from distill_core import jobs
from distill_core.errors import UserError
from distill_core.paths import allowed_dirs, inside_allowed, run_name_in
from distill_core.runs import RunDir, default_runs_dir, list_runs
from distill_core.views import form, intro
from app_pages._live import busy_notice, live_run_panel, session_owner
from app_pages._shared import PAGES, field_widget, is_dark, is_served, job_registry, preset_picker, show_error

st.title("Distill")
st.caption("Learn a tiny synthetic training set with attention labels (Maekawa et al., ACL 2023). Defaults are "
           "sized for a laptop CPU: the first accuracy point appears within about two minutes.")
reg, d = job_registry(), form.defaults()
messages, panel = st.container(), st.container()

with st.sidebar:
    st.header("New run")
    preset = preset_picker()
    source = st.radio("Data source", ["task", "upload", "files"], key="data_source", horizontal=True,
                      format_func={"task": "Task", "upload": "Upload", "files": "File paths"}.get)
    values, uploads = {"preset": preset}, {}
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
    run_name = st.text_input("Run name (optional)", key="run_name", max_chars=40,
                             help="starts the run's id; a date and time keep it unique")
    run_notes = st.text_area("Notes (optional)", key="run_notes", height=68, max_chars=2000)
    start = st.button("Start", key="start", type="primary", width="stretch")
    for section in form.SECTIONS:
        with st.expander(section, expanded=section == "Outer loop and evaluation"):
            values.update({f.key: field_widget(f) for f in form.FIELDS if f.section == section})

if start:
    try:
        if is_served():   # a browser elsewhere must not read the server's files by naming them
            for key, what in (("train_path", "the train file path"), ("eval_path", "the evaluation file path"),
                              ("data_dir", "the data directory")):
                if values.get(key) and not (key == "data_dir" and values[key] == d["data_dir"]):
                    values[key] = str(inside_allowed(values[key], allowed_dirs(), what))
        owner, owner_label = session_owner()
        running = reg.active()
        job = jobs.start_distill(form.config_from_values(values, source), reg, uploads=uploads or None,
                                 name=run_name, notes=run_notes, owner=owner, owner_label=owner_label)
        st.query_params["run"] = job.id
        if running is not None:
            busy_notice(messages, running, queued=job)
    except Exception as exc:  # settings, files, columns: say what is wrong and keep the app up
        with messages:
            show_error(exc)

wanted = st.query_params.get("run")
if wanted:
    try:
        run_name_in([default_runs_dir()], wanted)
    except UserError as exc:          # ?run=../elsewhere or an absolute path: refused, not opened
        show_error(exc)
        wanted = None
        st.query_params.pop("run", None)
# the run's latest distill job (a resumed run has several); else a job id from an older link
job = (reg.for_run(default_runs_dir() / wanted, "distill") or reg.get(wanted)) if wanted else None
if job is None and not wanted:
    active = reg.active()
    job = active if active is not None and active.kind == "distill" and active.snapshot(events=False).owner == session_owner()[0] \
        else None
run_id = job.run_dir.name if job else wanted
active = reg.active()
if active is not None and active is not job and not start:
    busy_notice(messages, active)
if run_id and (job or RunDir(default_runs_dir() / run_id).exists()):
    st.query_params["run"] = run_id
    with panel:
        live_run_panel(job, run_id, reg)
else:
    with panel:
        st.info("Choose settings in the sidebar and press **Start**. Runs are saved to "
                f"`{default_runs_dir()}`; command-line runs show up on the Runs page too.")
        left, right = st.columns([1, 1])
        left.markdown(intro.INTRO_MARKDOWN)
        right.plotly_chart(intro.intro_figure(dark=is_dark()), key="intro_figure")
        latest = next(iter(list_runs(default_runs_dir())), None)
        if latest is not None:
            st.page_link(PAGES["distill"], label=f"Show the most recent run, {latest.name}",
                         query_params={"run": latest.name})
