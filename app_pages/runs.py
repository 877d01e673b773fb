"""Runs: saved runs (app and CLI alike); load, compare, evaluate with N learners, download and export."""

import streamlit as st

from distill_core import jobs
from distill_core.runs import default_runs_dir, move_to_trash, write_json
from distill_core.views import curves, runs as views
from app_pages._live import busy_notice, evaluation_panel, resume_button, saved_events, session_owner
from app_pages._shared import (PAGES, check_distilled_upload, export_buttons, is_dark, job_registry, label_names, load_checkpoint,
                           pick_checkpoint, pick_run, saved_runs, show_error)

st.title("Runs")
st.caption(f"Every run in `{default_runs_dir()}`, newest first; runs started from the command line appear here too, "
           "then the reproduction study's runs (Results page).")
reg, all_runs = job_registry(), saved_runs()
if all_runs:
    st.dataframe(views.runs_table(all_runs), hide_index=True, key="runs_table")
for sweep, trials in views.sweeps(all_runs).items():
    with st.expander(f"Sweep {sweep}: {len(trials)} trials", expanded=False):
        st.caption("Each trial is an ordinary run (`python -m distill_core sweep`); its settings against its dev "
                   "validations. Open a trial below to see its curves.")
        frame = views.sweep_frame(trials)
        st.dataframe(views.fill_missing(frame), hide_index=True, key=f"sweep_{sweep}")
        fig = views.sweep_figure(frame, f"sweep {sweep}: best dev score per trial")
        st.plotly_chart(fig, key=f"sweep_fig_{sweep}")
        export_buttons(fig, f"sweep-{sweep}", f"exp_sweep_{sweep}")
run = pick_run("Load run")
if run is None:
    st.stop()
events, cfg = saved_events(run), run.config()
for name, label in (("attention", "Attention"), ("tokens", "Nearest tokens"), ("distill", "Live view")):
    st.page_link(PAGES[name], label=f"{label} for {run.name}", query_params={"run": run.name})
own_run = run.path.parent.resolve() == default_runs_dir().resolve()
tabs = ["Curves", "Compare", "Evaluate", "Download / import"] + (["Manage"] if own_run else [])
tab_curves, tab_compare, tab_eval, tab_files, *tab_manage = st.tabs(tabs)

with tab_curves:
    acc = curves.accuracy_figure(events, title=f"{run.name}", demo=bool(cfg.get("demo")))
    st.plotly_chart(acc, key="run_accuracy")
    export_buttons(acc, f"{run.name}-accuracy", "acc")
    train = curves.training_figure(events, label_names(cfg), dark=is_dark())
    st.plotly_chart(train, key="run_training")
    export_buttons(train, f"{run.name}-training", "train")
    with st.expander("Settings (config.json)"):
        st.json(cfg, expanded=False)

with tab_compare:
    names = [r.name for r in all_runs]
    chosen = st.multiselect("Runs to compare", names, default=names[:2], key="compare")
    picked = [r for r in all_runs if r.name in chosen]
    if picked:
        st.dataframe(views.runs_table(picked), hide_index=True, key="compare_scores")
        st.caption("Settings that differ:")
        st.dataframe(views.settings_frame(picked), key="settings_diff")
        cmp = curves.compare_figure({r.name: saved_events(r) for r in picked})
        st.plotly_chart(cmp, key="compare_chart")
        export_buttons(cmp, "compare", "cmp")

with tab_eval:
    ckpt = pick_checkpoint(run, key="eval_checkpoint")
    n = st.number_input("Learners", min_value=1, max_value=1000, value=20, step=1, key="eval_n",
                        help="fresh heads fine-tuned on the distilled data, each scored on the whole evaluation split")
    if ckpt and st.button("Evaluate", key="evaluate"):
        try:
            running = reg.active()
            sid, who = session_owner()
            queued = jobs.start_evaluate(run, ckpt, int(n), reg, owner=sid, owner_label=who)
            if running is not None:
                busy_notice(st, running, queued=queued)
        except Exception as exc:
            show_error(exc)
    evaluation_panel(run, reg)

with tab_files:
    ckpt = pick_checkpoint(run, key="file_checkpoint")
    if ckpt:
        path = run.checkpoint(ckpt)
        st.download_button("Distilled data (.safetensors)", path.read_bytes(),
                           file_name=f"{run.name}-{ckpt}.safetensors",
                           key="dl_safetensors", on_click="ignore")
        st.download_button("Distilled data (.json)", lambda: views.distilled_json(load_checkpoint(run, ckpt)[1]),
                           file_name=f"{run.name}-{ckpt}.json", mime="application/json", key="dl_json",
                           on_click="ignore")
    up = st.file_uploader(f"Import a distilled-data file made for {run.name}'s model and task", key="import_upload")
    if up is not None and st.button("Import as a new run", key="import"):
        try:
            st.success(f"Imported as run {check_distilled_upload(run, up.name, up.getvalue()).name}.")
        except Exception as exc:
            show_error(exc)

if tab_manage:
    with tab_manage[0]:
        info = cfg.get("run") or {}
        job = reg.for_run(run.path)
        busy = job is not None and job.snapshot(events=False).active
        resume_button(run, reg, key="resume_run")
        notes = st.text_area("Notes", info.get("notes", ""), key="notes_edit", max_chars=2000)
        if st.button("Save notes", key="save_notes"):
            write_json(run.config_path, {**run.config(), "run": {**info, "notes": notes.strip()}})
            st.success("Notes saved.")
        st.divider()
        confirm = st.checkbox(f"Yes, move {run.name} to the trash", key="confirm_delete",
                              help=f"it goes to {default_runs_dir() / '.trash'}; move it back to restore it")
        if st.button("Delete run", key="delete_run", disabled=not confirm or busy, type="secondary"):
            try:
                where = move_to_trash(run)
                st.query_params.pop("run", None)
                st.session_state.pop("run", None)
                st.success(f"Moved to {where}.")
            except Exception as exc:
                show_error(exc)
        if busy:
            st.caption("A job of this run is active; stop it before deleting the run.")
