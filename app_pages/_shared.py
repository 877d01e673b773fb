"""Streamlit glue shared by the pages: cached engine objects, the run/checkpoint pickers, form widgets."""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from distill_core import jobs, preflight  # noqa: F401  (preflight: transformers imported once, before any session thread)
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


PAGES = {"distill": "app_pages/distill.py", "attention": "app_pages/attention.py", "tokens": "app_pages/tokens.py",
         "runs": "app_pages/runs.py", "results": "app_pages/results.py"}


@st.cache_resource
def job_registry() -> jobs.JobRegistry:
    """The process-wide job registry (jobs by run id; one heavy job at a time)."""
    return jobs.REGISTRY


@st.cache_resource(max_entries=3, show_spinner="Loading the model…")
def cached_learner(model: str, num_labels: int, label_names: tuple[str, ...], device: str,
                   pooling: str = "cls") -> Learner:
    return load_learner(model, num_labels, device, label_names=list(label_names), pooling=pooling)


@st.cache_resource(max_entries=16, show_spinner="Loading distilled data…")
def _cached_distilled(path: str, mtime: float, model: str, device: str) -> tuple[Learner, DistilledData]:
    header = DistilledData.load(path)    # UserError for a missing, foreign or broken file
    learner = cached_learner(model, header.num_labels, tuple(header.label_names), device,
                             (header.meta or {}).get("pooling", "cls"))
    return learner, DistilledData.load(path, device=learner.device, dtype=learner.dtype, expect=learner.fingerprint())


def load_checkpoint(run: RunDir, checkpoint: str) -> tuple[Learner, DistilledData]:
    """The learner of a run's model and one of its checkpoints (cached by file and modification time)."""
    cfg = run.config().get("model", {})
    path = run.checkpoint(checkpoint)
    if not path.exists():
        raise UserError(f"{run.name} has no checkpoint {checkpoint!r}")
    # device "auto": a run made on a GPU server still opens on a laptop
    return _cached_distilled(str(path), path.stat().st_mtime, cfg.get("name") or "bundled", "auto")


def is_served() -> bool:
    """Whether the app listens beyond this machine (then file paths are limited to DISTILL_ALLOWED_DIRS)."""
    return (st.get_option("server.address") or "") not in ("127.0.0.1", "localhost", "::1")


def is_dark() -> bool:
    """Whether the browser shows Streamlit's dark theme (figures and bertviz views follow it)."""
    try:
        return st.context.theme.type == "dark"
    except Exception:  # older Streamlit or no browser (AppTest): light
        return False


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
    """The Streamlit widget for one setting of the method, keyed by the setting's name.

    Where the preset picker already put the value in session state, the widget takes it from there
    (passing a value too would make Streamlit warn on the page).
    """
    value = f.default if default is None else default
    kw = {} if f.key in st.session_state else {"value": value}
    if f.kind == "bool":
        return st.checkbox(f.label, key=f.key, help=f.help or None, **kw)
    if f.kind == "choice":
        index = {} if f.key in st.session_state else {"index": list(f.options).index(value)}
        return st.selectbox(f.label, f.options, key=f.key, help=f.help or None, **index)
    if f.kind == "text":
        return st.text_input(f.label, key=f.key, help=f.help or None,
                             **({} if f.key in st.session_state else {"value": str(value)}))
    if f.kind == "int":
        return st.number_input(f.label, step=1, key=f.key, help=f.help or None,
                               min_value=None if f.min is None else int(f.min),
                               **({} if f.key in st.session_state else {"value": int(value)}))
    return st.number_input(f.label, format="%g", key=f.key, help=f.help or None,
                           min_value=f.min, step=max(abs(float(value)) / 10, 1e-4) if value else 0.01,
                           **({} if f.key in st.session_state else {"value": float(value)}))


def preset_picker(key: str = "preset") -> str:
    """Choose a preset; choosing one fills every field of the form with its values."""
    from distill_core.views import form

    def fill() -> None:
        st.session_state.update(form.preset_widget_values(st.session_state[key]))

    return st.selectbox("Preset", form.preset_names(), key=key, on_change=fill,
                        help="cpu: the fast CPU recipe (real-example and model-attention inits go beyond the paper); "
                             "paper: METHOD.md exactly (L = 512, random inits, inner lr 0.01, 30 epochs of SST-2: "
                             "hours per run on a CPU). Every field below can still be changed.")


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


@st.cache_data(max_entries=64, show_spinner=False)
def order_cached(run_path: str, checkpoint: str, mtime: float):
    """distill_core.inspection.order_weight of a checkpoint (None: the model has no learned positions)."""
    from distill_core.inspection import order_weight

    learner, distilled = load_checkpoint(RunDir(Path(run_path)), checkpoint)
    return order_weight(distilled, learner)


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
