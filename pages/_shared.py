"""Streamlit glue shared by the pages: cached engine objects, the run/checkpoint pickers, form widgets."""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from distill_core import jobs
from distill_core.distilled import DistilledData
from distill_core.errors import UserError
from distill_core.learner import Learner, load_learner
from distill_core.runs import RunDir, default_runs_dir, list_runs
from distill_core.tasks import TASKS
from distill_core.views.form import Field

ROOT = Path(__file__).resolve().parent.parent


def study_dir() -> Path:
    """The reproduction study (docs/REPRODUCTION.md), or DISTILL_STUDY_DIR; its runs open in every page."""
    return Path(os.environ.get("DISTILL_STUDY_DIR") or ROOT / "docs" / "reproduction")


PAGES = {"distill": "pages/distill.py", "attention": "pages/attention.py", "tokens": "pages/tokens.py",
         "runs": "pages/runs.py", "results": "pages/results.py"}


@st.cache_resource
def job_registry() -> jobs.JobRegistry:
    """The process-wide job registry (jobs by run id; one heavy job at a time)."""
    return jobs.REGISTRY


@st.cache_resource(max_entries=3, show_spinner="Loading the model…")
def cached_learner(model: str, num_labels: int, label_names: tuple[str, ...], device: str) -> Learner:
    return load_learner(model, num_labels, device, label_names=list(label_names))


@st.cache_resource(max_entries=16, show_spinner="Loading distilled data…")
def _cached_distilled(path: str, mtime: float, model: str, device: str) -> tuple[Learner, DistilledData]:
    header = DistilledData.load(path)    # UserError for a missing, foreign or broken file
    learner = cached_learner(model, header.num_labels, tuple(header.label_names), device)
    return learner, DistilledData.load(path, device=learner.device, dtype=learner.dtype, expect=learner.fingerprint())


def load_checkpoint(run: RunDir, checkpoint: str) -> tuple[Learner, DistilledData]:
    """The learner of a run's model and one of its checkpoints (cached by file and modification time)."""
    cfg = run.config().get("model", {})
    path = run.checkpoint(checkpoint)
    if not path.exists():
        raise UserError(f"{run.name} has no checkpoint {checkpoint!r}")
    # device "auto": a run made on a GPU server still opens on a laptop
    return _cached_distilled(str(path), path.stat().st_mtime, cfg.get("name") or "bundled", "auto")


def label_names(config: dict) -> list[str] | None:
    task = (config.get("data") or {}).get("task")
    return list(TASKS[task].label_names) if task in TASKS else None


def saved_runs() -> list[RunDir]:
    """The user's runs (newest first), then the reproduction study's runs."""
    return list_runs(default_runs_dir()) + list_runs(study_dir() / "runs")


def pick_run(label: str = "Run", key: str = "run") -> RunDir | None:
    """Choose a saved run; defaults to the one named in the URL (?run=...), else the most recent."""
    runs = saved_runs()
    names = [r.name for r in runs]
    if not runs:
        st.info(f"No saved runs in `{default_runs_dir()}` yet. Start one on the Distill page.")
        st.page_link(PAGES["distill"], label="Go to Distill", icon=":material/science:")
        return None
    wanted = st.query_params.get("run")
    if wanted in names:                    # the URL wins: links and reloads open the run they name
        st.session_state[key] = wanted
    elif st.session_state.get(key) not in names:
        st.session_state[key] = names[0]   # else the most recent run
    name = st.selectbox(label, names, key=key,
                        on_change=lambda: st.query_params.update({"run": st.session_state[key]}))
    st.query_params["run"] = name
    return runs[names.index(name)]


def pick_checkpoint(run: RunDir, key: str = "checkpoint") -> str | None:
    ckpts = run.list_checkpoints()
    if not ckpts:
        st.info(f"Run {run.name} has no checkpoint yet (the first is written after the first evaluation).")
        return None
    if st.session_state.get(key) not in ckpts:
        st.session_state[key] = "best" if "best" in ckpts else ckpts[-1]
    return st.selectbox("Checkpoint", ckpts, key=key)


def field_widget(f: Field, default=None):
    """The Streamlit widget for one setting of the method, keyed by the setting's name."""
    value = f.default if default is None else default
    if f.kind == "bool":
        return st.checkbox(f.label, value=bool(value), key=f.key, help=f.help or None)
    if f.kind == "choice":
        return st.selectbox(f.label, f.options, index=list(f.options).index(value), key=f.key, help=f.help or None)
    if f.kind == "text":
        return st.text_input(f.label, value=str(value), key=f.key, help=f.help or None)
    if f.kind == "int":
        return st.number_input(f.label, value=int(value), step=1, key=f.key, help=f.help or None,
                               min_value=None if f.min is None else int(f.min))
    return st.number_input(f.label, value=float(value), format="%g", key=f.key, help=f.help or None,
                           min_value=f.min, step=max(abs(float(value)) / 10, 1e-4) if value else 0.01)


def show_error(exc: Exception) -> None:
    st.error(str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}", icon=":material/error:")


@st.cache_data(max_entries=32, show_spinner="Running the inner loop and reading the model's attention…")
def inspect_cached(run_path: str, checkpoint: str, mtime: float, sample: int, head_seed: int):
    """inspection.inspect_sample for one run checkpoint (cached by file, time, sample and head seed)."""
    from distill_core.inspection import inspect_sample

    learner, distilled = load_checkpoint(RunDir(Path(run_path)), checkpoint)
    return inspect_sample(learner, distilled, sample, head_seed)


def export_buttons(fig, name: str, key: str) -> None:
    """Download a figure as self-contained HTML (and PNG where kaleido is installed)."""
    from distill_core.views import export

    c1, c2 = st.columns(2)
    c1.download_button("Download HTML", lambda: export.figure_html(fig), file_name=f"{name}.html",
                       mime="text/html", key=f"{key}_html", on_click="ignore")
    png = export.figure_png(fig) if export.png_available() else None
    if png is not None:
        c2.download_button("Download PNG", png, file_name=f"{name}.png", mime="image/png", key=f"{key}_png",
                           on_click="ignore")
    else:
        c2.caption("PNG: the camera icon in the chart's toolbar (here or in the HTML file).")


@st.cache_data(max_entries=64, show_spinner="Finding the nearest vocabulary tokens…")
def nearest_cached(run_path: str, checkpoint: str, mtime: float, top_k: int):
    """(nearest tokens per sample and position, attention-label mass (N, L) or None, step) of a checkpoint."""
    from distill_core.inspection import nearest_tokens, position_mass

    learner, distilled = load_checkpoint(RunDir(Path(run_path)), checkpoint)
    return nearest_tokens(distilled, learner, top_k), position_mass(distilled), distilled.meta.get("step")


def checkpoint_mtime(run: RunDir, checkpoint: str) -> float:
    return run.checkpoint(checkpoint).stat().st_mtime


def check_distilled_upload(run: RunDir, name: str, data: bytes) -> RunDir:
    """Check an uploaded distilled-data file against `run`'s model and task, then save it as a new run."""
    import tempfile

    ckpts = run.list_checkpoints()
    if not ckpts:
        raise UserError(f"{run.name} has no checkpoint to compare the upload with; pick a run that has one")
    learner, _ = load_checkpoint(run, ckpts[-1])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "upload.safetensors"
        path.write_bytes(data)
        try:
            DistilledData.load(path, expect=learner.fingerprint())
        except UserError as exc:
            raise UserError(str(exc).replace(str(path), repr(name))) from None
    return jobs.write_imported_run(run, data, name=Path(name).stem)


def busy_notice(container, job: jobs.Job) -> None:
    """Say which heavy job holds the machine, with a link to where it is shown."""
    page = PAGES["distill"] if job.kind == "distill" else PAGES["runs"]
    container.warning(f"A run is active: **{job.id}** ({job.kind}). One heavy run at a time on this machine.")
    container.page_link(page, label=f"Open {job.run_dir.name}", query_params={"run": job.run_dir.name})


def _clock(seconds) -> str:
    return "–" if seconds is None else f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def live_run_panel(job: jobs.Job | None, run_id: str) -> None:
    """Headline numbers and charts of a run; polls every 1.5 s while its job is active (a fragment)."""
    from distill_core.views import curves

    run = RunDir(default_runs_dir() / run_id)
    was_active = job is not None and job.snapshot().active

    @st.fragment(run_every=1.5 if was_active else None)
    def panel() -> None:
        snap = job.snapshot() if job else None
        events = snap.events if snap else run.metrics()
        start = next((e for e in events if e.get("type") == "start"), {})
        st.subheader(f"Run {run_id}  ·  {snap.status if snap else 'saved'}")
        if snap and snap.status == "error":
            st.error(snap.message)
        n = curves.live_numbers(events)
        total = snap.total if snap else start.get("outer_steps", 0)
        step = max([e["step"] for e in events if e.get("type") == "step"] or [0])
        c = st.columns(6)
        c[0].metric("Step", f"{step} / {total}")
        c[1].metric("Elapsed", _clock(snap.elapsed if snap else None))
        c[2].metric("ETA", _clock(snap.eta if snap and snap.active else None))
        c[3].metric("Real-data loss", "–" if n["real_loss"] is None else f"{n['real_loss']:.3f}")
        c[4].metric("Inner lr", "–" if n["inner_lrs"] is None else ", ".join(f"{x:.3g}" for x in n["inner_lrs"]))
        c[5].metric(n["metric"].capitalize(), "–" if n["score"] is None else
                    f"{n['score']['mean']:.1f} ± {n['score']['std']:.1f}", help=f"at step {n['score_step']}")
        if snap and snap.active:
            st.progress(min(1.0, step / max(1, total)), text=snap.message)
            st.button("Stop", key="stop", on_click=job.stop)
        cfg = run.config() if run.exists() else {}
        if start:
            cap, rows = (cfg.get("data") or {}).get("eval_rows"), start.get("eval_rows", "?")
            subset = " (a random subset for speed; Runs › Evaluate scores the full split)" if rows == cap else ""
            demo = " Built-in demo data: these numbers say nothing about real benchmarks." if start.get("demo") else ""
            learners = (cfg.get("distill") or {}).get("eval_learners", "?")
            st.caption(f"Accuracy: mean ± std over {learners} fresh learner{'' if learners == 1 else 's'} on {rows} "
                       f"evaluation rows{subset}.{demo}")
        st.plotly_chart(curves.accuracy_figure(events, total_steps=total), key="accuracy_chart")
        st.plotly_chart(curves.training_figure(events, label_names(cfg)), key="training_chart")
        if not (snap and snap.active):
            for name, label in (("attention", "Attention"), ("tokens", "Nearest tokens"), ("runs", "Runs")):
                st.page_link(PAGES[name], label=f"Open in {label}", query_params={"run": run_id})
        if was_active and not (snap and snap.active):
            st.rerun()   # finished: one full rerun turns polling off

    panel()


def evaluation_panel(run: RunDir, registry: jobs.JobRegistry) -> None:
    """Progress of the run's latest evaluation job (polling while it runs) and the saved result."""
    job = next((j for j in reversed(registry.jobs()) if j.kind == "evaluate" and j.run_dir == run.path), None)
    was_active = job is not None and job.snapshot().active

    @st.fragment(run_every=1.0 if was_active else None)
    def panel() -> None:
        snap = job.snapshot() if job else None
        if snap and snap.active:
            st.progress(snap.done_units / max(1, snap.total), text=f"{snap.message}: {snap.done_units}/{snap.total}")
            st.button("Stop evaluation", key="stop_eval", on_click=job.stop)
        elif snap and snap.status == "error":
            st.error(snap.message)
        ev = run.results().get("evaluation")
        if ev:
            st.success(f"{ev['checkpoint']} (step {ev.get('step')}), {ev['learners']} learners on {ev['eval_rows']} "
                       "evaluation rows: " + ", ".join(f"{k} {v['mean']:.2f} ± {v['std']:.2f}"
                                                      for k, v in ev["metrics"].items()))
        if was_active and not (snap and snap.active):
            st.rerun()

    panel()
