"""Streamlit glue for jobs: who started a job, the live run panel, the evaluation panel, Resume.

The panels poll the job's snapshot in fragments and rebuild a chart only when the job's event
version moved; the job itself runs in its own process (distill_core.jobs), so a page open in a
browser costs the run little.
"""

from __future__ import annotations

import time
from typing import Callable

import streamlit as st

from distill_core import jobs
from distill_core.event_window import EventWindow
from distill_core.runs import RunDir, default_runs_dir
from app_pages._shared import PAGES, is_dark, label_names, show_error

STATUS_POLL_S = 2.0     # headline numbers: cheap text
CHART_POLL_S = 4.0      # charts: rebuilt (and re-rendered by the browser) only this often, and only on change
MAX_POINTS = 600        # a long curve is thinned to this many points before it reaches the browser


def session_owner() -> tuple[str, str]:
    """(an id for this browser session, a label others see) for the jobs it starts."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    sid = ctx.session_id if ctx is not None else "script"
    ip = None
    try:
        ip = st.context.ip_address
    except Exception:  # older Streamlit, or no request context (AppTest)
        pass
    where = f" at {ip}" if ip and ip not in ("127.0.0.1", "::1") else ""
    return sid, f"browser session {sid[:6]}{where}, {time.strftime('%H:%M')}"


def clock(seconds) -> str:
    if seconds is None:
        return "–"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def _ends(snap: jobs.JobSnapshot) -> str:
    end = snap.ends_at()
    return "" if end is None else f", ends about {time.strftime('%H:%M', time.localtime(end))}"


def busy_notice(container, job: jobs.Job, queued: jobs.Job | None = None) -> None:
    """Say which heavy job holds the machine (who started it, when it ends) and link to it."""
    snap = job.snapshot(events=False)
    page = PAGES.get({"distill": "distill", "anatomy": "attention"}.get(job.kind, "runs"), PAGES["runs"])
    who = "you" if snap.owner == session_owner()[0] else (snap.owner_label or "another session")
    text = f"A run is active: **{job.id}** ({job.kind}, started by {who}{_ends(snap)}). One heavy run at a time."
    if queued is not None:
        text += f" **{queued.id}** is queued and starts when it finishes."
    container.warning(text)
    container.page_link(page, label=f"Open {job.run_dir.name}", query_params={"run": job.run_dir.name})


@st.cache_data(max_entries=8, show_spinner=False)
def _saved_events(path: str, size: int, mtime: float) -> list[dict]:
    """A saved run's events, bounded like a live job's (cached by file size and time)."""
    return EventWindow().extend(RunDir(path).metrics()).events()


def saved_events(run: RunDir) -> list[dict]:
    if not run.metrics_path.exists():
        return []
    st_ = run.metrics_path.stat()
    return _saved_events(str(run.path), st_.st_size, st_.st_mtime)


def _charts(key: str, version, build):
    """The figures of `build()`, rebuilt only when `version` changed (kept in this session)."""
    cache = st.session_state.setdefault("_live_charts", {})
    hit = cache.get(key)
    if hit is None or hit[0] != version:
        hit = (version, build())
        cache[key] = hit
    return hit[1]


def resume_button(run: RunDir, registry: jobs.JobRegistry, key: str) -> None:
    """Resume a stopped or killed run from its last checkpoint (only where it has one and is not finished)."""
    step = run.resume_step()
    total = ((run.config().get("distill") or {}).get("outer_steps")) or 0
    if run.results().get("distillation", {}).get("status") == "done" or (step or 0) >= int(total):
        return
    label = f"Resume from step {step}" if step else "Restart (no resume point was saved yet)"
    if st.button(label, key=key, help="continue from the last resume point"):
        sid, label = session_owner()
        try:
            jobs.start_resume(run, registry, owner=sid, owner_label=label)
            st.query_params["run"] = run.name
            st.rerun()
        except Exception as exc:
            show_error(exc)


def live_run_panel(job: jobs.Job | None, run_id: str, registry: jobs.JobRegistry) -> None:
    """Headline numbers (every 2 s) and charts (every 4 s, on change) of a run while its job is active."""
    from distill_core.views import curves

    run = RunDir(default_runs_dir() / run_id)
    was_active = job is not None and job.snapshot(events=False).active
    me = session_owner()[0]

    @st.fragment(run_every=STATUS_POLL_S if was_active else None)
    def status() -> None:
        snap = job.snapshot() if job else None
        events = snap.events if snap else saved_events(run)
        start = next((e for e in events if e.get("type") == "start"), {})
        label = snap.status if snap else "saved"
        if snap is None and events and events[-1].get("type") in ("done", "stopped", "error"):
            label = events[-1]["type"]
        info = (run.config().get("run") or {}) if run.exists() else {}

        # A fixed set of slots (containers always render, even empty): when a notice comes or goes,
        # the elements after it keep their places instead of being redrawn as new ones.
        st.subheader(f"Run {run_id}  ·  {label}")
        about, notice, numbers, controls = st.container(), st.container(), st.container(), st.container()
        if info.get("name") or info.get("notes"):
            about.caption(" — ".join(x for x in (info.get("name"), info.get("notes")) if x))
        if snap and snap.status == "queued":
            notice.info(f"Queued behind **{snap.queued_behind}**: it starts when that job ends.")
        if snap and snap.status in ("error", "killed"):
            notice.error(snap.message)
            if snap.log_tail:
                with notice.expander("Last lines of the job process"):
                    st.code("\n".join(snap.log_tail))
        n = curves.live_numbers(events)
        total = snap.total if snap else start.get("outer_steps", 0)
        step = max([e["step"] for e in events if e.get("type") == "step"] or [0])
        c = numbers.columns(6)
        c[0].metric("Step", f"{step} / {total}")
        c[1].metric("Elapsed", clock(snap.elapsed if snap else None))
        c[2].metric("ETA", clock(snap.eta if snap and snap.running else None),
                    help="remaining steps at the median of the last 30 step times, plus the evaluations to come")
        c[3].metric("Real-data loss", "–" if n["real_loss"] is None else f"{n['real_loss']:.3f}")
        c[4].metric("Inner lr", "–" if n["inner_lrs"] is None else curves.format_inner_lrs(n["inner_lrs"], n["inner_lr_groups"]))
        c[5].metric(n["metric"].capitalize(), "–" if n["score"] is None else
                    f"{n['score']['mean']:.1f} ± {n['score']['std']:.1f}",
                    help=None if n["score_step"] is None else f"at step {n['score_step']}")
        with controls:
            if snap and snap.running:
                st.progress(min(1.0, step / max(1, total)), text=snap.message)
                pid = f" · job process {snap.pid}" if snap.pid else ""
                if snap.owner in (None, me):
                    st.button("Stop", key="stop", on_click=job.stop, help="stops after the current step; the run is kept")
                    st.caption(f"Started by you{_ends(snap)}{pid}")
                else:
                    st.caption(f"Started by {snap.owner_label or 'another session'}{_ends(snap)}; only it can stop "
                               f"it{pid}")
            if snap and snap.status == "queued" and snap.owner in (None, me):
                st.button("Cancel", key="cancel", on_click=lambda: registry.stop(job))
            if not (snap and snap.active) and run.exists():
                resume_button(run, registry, key="resume")
        if was_active and not (snap and snap.active):
            st.rerun()   # finished: one full rerun turns polling off

    @st.fragment(run_every=CHART_POLL_S if was_active else None)
    def charts() -> None:
        snap = job.snapshot(events=False) if job else None    # the events only when a figure is rebuilt
        cfg = run.config() if run.exists() else {}
        if snap is not None:
            version = (run_id, snap.version)
        else:
            version = (run_id, "saved", run.metrics_path.stat().st_mtime if run.metrics_path.exists() else 0)
        smooth, dark = st.session_state.get("loss_smoothing", 0), is_dark()

        def build():
            ev = job.snapshot().events if snap else saved_events(run)
            start = next((e for e in ev if e.get("type") == "start"), {})
            total = snap.total if snap else start.get("outer_steps", 0)
            return (curves.accuracy_figure(ev, total_steps=total, max_points=MAX_POINTS),
                    curves.training_figure(ev, label_names(cfg), max_points=MAX_POINTS, smooth=smooth, dark=dark),
                    start)

        acc, train, start = _charts(f"live-{run_id}-{smooth}-{dark}", version, build)
        caption = st.container()
        if start:
            cap, rows = (cfg.get("data") or {}).get("eval_rows"), start.get("eval_rows", "?")
            split = start.get("eval_split")
            where = ("dev rows (held out from train; the evaluation split is kept for Runs › Evaluate)"
                     if split == "dev" else f"rows of the {split or 'evaluation'} split"
                     + ("" if split else " (a run made before the dev split: selection used the reported split)"))
            subset = " (a random subset for speed)" if rows == cap else ""
            demo = " Built-in demo data: these numbers say nothing about real benchmarks." if start.get("demo") else ""
            learners = (cfg.get("distill") or {}).get("eval_learners", "?")
            caption.caption(f"Accuracy: mean ± std over {learners} fresh learner{'' if learners == 1 else 's'} on "
                            f"{rows} {where}{subset}.{demo}")
        st.plotly_chart(acc, key="accuracy_chart")
        st.plotly_chart(train, key="training_chart")
        if not (snap and snap.active):   # last in the fragment: nothing after it can shift
            for name, text in (("attention", "Attention"), ("tokens", "Nearest tokens"), ("runs", "Runs")):
                st.page_link(PAGES[name], label=f"Open in {text}", query_params={"run": run_id})

    status()
    st.select_slider("Smooth the loss curve", options=[0, 5, 10, 25, 50], key="loss_smoothing",
                     help="moving average over this many steps (0: raw)")
    charts()


def _learner_job_panel(run: RunDir, registry: jobs.JobRegistry, kind: str, noun: str, stop_key: str,
                       show_result: Callable[[], None]) -> None:
    """A learner-by-learner job's progress (queued, running with a stop button, failed), then its saved
    result; polls while the job is active and reruns the page once when it ends."""
    job = registry.for_run(run.path, kind)
    was_active = job is not None and job.snapshot(events=False).active
    me = session_owner()[0]

    @st.fragment(run_every=STATUS_POLL_S if was_active else None)
    def panel() -> None:
        snap = job.snapshot() if job else None
        if snap and snap.status == "queued":
            st.info(f"{noun} queued behind {snap.queued_behind}.")
        elif snap and snap.running:
            eta = f", about {clock(snap.eta)} left" if snap.eta is not None else ""
            st.progress(snap.done_units / max(1, snap.total),
                        text=f"{snap.message or 'starting'}: {snap.done_units}/{snap.total} learners{eta}")
            if snap.owner in (None, me):
                st.button(f"Stop {noun.lower()}", key=stop_key, on_click=job.stop)
        elif snap and snap.status in ("error", "killed"):
            st.error(snap.message)
        show_result()
        if was_active and not (snap and snap.active):
            st.rerun()

    panel()


def evaluation_panel(run: RunDir, registry: jobs.JobRegistry) -> None:
    """Progress of the run's latest evaluation job (one learner at a time) and the saved result."""
    def result() -> None:
        ev = run.results().get("evaluation")
        if ev:
            split = f" ({ev['split']})" if ev.get("split") else ""
            st.success(f"{ev['checkpoint']} (step {ev.get('step')}), {ev['learners']} learners on {ev['eval_rows']} "
                       f"evaluation rows{split}: " + ", ".join(f"{k} {v['mean']:.2f} ± {v['std']:.2f}"
                                                             for k, v in ev["metrics"].items()))
    _learner_job_panel(run, registry, "evaluate", "Evaluation", "stop_eval", result)


def anatomy_panel(run: RunDir, checkpoint: str, step: int | None, registry: jobs.JobRegistry) -> None:
    """Progress of the run's latest step-anatomy job, then the recorded measurement of this checkpoint."""
    from distill_core.step_anatomy import recorded_anatomy
    from distill_core.views.anatomy import anatomy_caption, anatomy_figure

    def result() -> None:
        found = recorded_anatomy(run, checkpoint, step)
        if not found:
            others = sorted({f"{r.get('checkpoint')} (step {r.get('step')})"
                             for r in (run.results().get("anatomy") or {}).values() if isinstance(r, dict)})
            st.caption(f"No anatomy of {checkpoint} (step {step}) is recorded yet."
                       + (f" Recorded for: {', '.join(others)}." if others else ""))
        for a in found[:1]:   # the one with the most learners
            st.caption(anatomy_caption(a))
            st.plotly_chart(anatomy_figure(a), key="anatomy_chart")
    _learner_job_panel(run, registry, "anatomy", "Anatomy", "stop_anatomy", result)
