"""One AppTest per page of the Streamlit app (streamlit.testing.v1), on the bundled model and the demo task.

The Distill page starts a real tiny run from the UI (module fixture `ui_run`); the other pages
inspect that run. Widgets are found by key; every script run must end without an exception.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from distill_core import jobs
from distill_core.runs import RunDir, list_runs
from distill_core.views.bertviz_html import external_urls

REPO = Path(__file__).resolve().parent.parent
APP = str(REPO / "app.py")
TIMEOUT = 180
TINY = dict(seq_len=16, outer_steps=2, eval_every=1, eval_learners=1, real_batch_size=8, max_length=32, eval_rows=60)

if str(REPO) not in sys.path:   # `streamlit run` puts the app's folder on sys.path; AppTest does not
    sys.path.insert(0, str(REPO))


def app(page: str | None = None, run: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    if run:
        at.query_params["run"] = run
    if page:
        at.switch_page(page)
    return at


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def wait_idle(timeout: float = 240) -> None:
    """The job registry is process-wide: let a test's jobs (running and queued) finish before the next starts."""
    for job in jobs.REGISTRY.jobs():
        assert job.join(timeout), f"job {job.id} still running"


def rerun_until_idle(at: AppTest) -> None:
    """Rerun the page every second while a job is active (its panel polls), then once more."""
    deadline = time.time() + TIMEOUT
    while jobs.REGISTRY.active() is not None and time.time() < deadline:
        time.sleep(1.0)
        ok(at.run())
    ok(at.run())


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("app-runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DISTILL_RUNS_DIR", str(path))
        mp.delenv("DISTILL_DATA_DIR", raising=False)   # default task: the built-in demo set
        yield path
    wait_idle()


@pytest.fixture(scope="module")
def ui_run(runs_dir):
    """Start a tiny run from the Distill page, click Start a second time while it runs, poll until done."""
    wait_idle()
    at = ok(app().run())
    assert at.selectbox(key="task").value == "demo"
    for key, value in TINY.items():
        at.number_input(key=key).set_value(value)
    ok(at.button(key="start").click().run())
    run_id = at.query_params["run"]
    assert jobs.REGISTRY.get(run_id) is not None
    ok(at.button(key="start").click().run())                     # a second Start while the first runs: queued
    busy = [w.value for w in at.warning]
    queued = at.query_params["run"]
    seen_running, deadline = False, time.time() + TIMEOUT
    while time.time() < deadline:
        status = at.subheader[0].value if at.subheader else ""
        seen_running |= "running" in status
        if status.endswith(("done", "stopped", "error")):
            break
        time.sleep(1.0)
        ok(at.run())
    wait_idle()
    return at, run_id, busy, seen_running, queued


def test_distill_page_runs_a_tiny_job_from_the_ui(ui_run, runs_dir):
    at, run_id, busy, seen_running, queued = ui_run
    assert seen_running
    assert any("A run is active" in w and run_id in w and "started by you" in w and f"{queued}** is queued" in w
               for w in busy), busy
    assert queued != run_id and RunDir(runs_dir / queued).metrics()[-1]["type"] == "done"   # nothing lost
    at = ok(app(run=run_id).run())
    assert at.subheader[0].value.endswith("done"), at.subheader[0].value
    assert at.metric[0].value == "2 / 2"
    assert "±" in at.metric[5].value                                  # accuracy mean ± std
    charts = [c for c in at.get("plotly_chart")]
    assert len(charts) == 2
    spec = charts[0].proto.spec
    assert "majority" in spec and "random-1-shot" in spec and "distilled (accuracy)" in spec
    run = RunDir(runs_dir / run_id)
    assert {"step-000000", "step-000001", "step-000002", "best", "last"} <= set(run.list_checkpoints())
    assert [e["type"] for e in run.metrics()][-1] == "done"
    # a fresh session (reload, second tab) with the run in the URL re-attaches to it
    again = ok(app(run=run_id).run())
    assert again.subheader[0].value == f"Run {run_id}  ·  done"


def poll(at: AppTest, done, timeout: float = TIMEOUT) -> AppTest:
    deadline = time.time() + timeout
    while not done(at) and time.time() < deadline:
        time.sleep(0.5)
        ok(at.run())
    assert done(at), [s.value for s in at.subheader]
    return at


def test_distill_page_stop_keeps_the_run(runs_dir):
    wait_idle()
    at = ok(app().run())
    settings = dict(TINY, seq_len=8, real_batch_size=4, max_length=16, outer_steps=500, eval_every=0)
    for key, value in settings.items():
        at.number_input(key=key).set_value(value)
    at.checkbox(key="eval_at_start").set_value(False)
    at.checkbox(key="baselines").set_value(False)
    ok(at.button(key="start").click().run())
    run_id = at.query_params["run"]
    poll(at, lambda a: a.metric and not a.metric[0].value.startswith("0 /"))   # a step has been made
    ok(at.button(key="stop").click().run())
    poll(at, lambda a: a.subheader[0].value.endswith("stopped"))
    run = RunDir(runs_dir / run_id)
    assert run.metrics()[-1]["type"] == "stopped" and "last" in run.list_checkpoints()
    assert 1 <= run.state()["step"] < 500
    assert any(link.proto.label == "Open in Attention" for link in at.get("page_link"))
    # Resume continues the stopped run in a new job process
    step = run.state()["step"]
    ok(at.button(key="resume").click().run())
    poll(at, lambda a: a.subheader[0].value.endswith("running") and int(a.metric[0].value.split(" /")[0]) > step)
    job = jobs.REGISTRY.for_run(run.path, "distill")
    assert job.pid is not None and job.pid != os.getpid()              # the job lives in another process
    os.kill(job.pid, signal.SIGKILL)
    poll(at, lambda a: a.subheader[0].value.endswith("killed"))
    assert any("killed by SIGKILL" in e.value for e in at.error), [e.value for e in at.error]
    assert any(b.key == "resume" for b in at.button)                   # and it can be resumed again


def test_distill_page_reports_missing_data_in_the_form(runs_dir, tmp_path):
    wait_idle()
    before = set(runs_dir.iterdir())
    at = ok(app().run())
    at.selectbox(key="task").set_value("mrpc")
    at.text_input(key="data_dir").set_value(str(tmp_path))            # no mrpc files there
    ok(at.button(key="start").click().run())
    assert any("task 'mrpc' has no train split" in e.value for e in at.error), [e.value for e in at.error]
    assert jobs.REGISTRY.active() is None and set(runs_dir.iterdir()) == before


@pytest.mark.parametrize("settings, message", [
    ({"seq_len": 1}, "seq_len must be >= 2"),
    ({"eval_learners": 0}, "eval_learners must be >= 1"),
    ({"samples_per_class": 1, "inner_steps": 2, "different_data_per_step": True}, "multiple of inner_steps"),
    ({"lr_embeds": 50.0}, "lr_embeds must be in [0, 10]"),
    ({"outer_steps": 0}, "outer_steps must be >= 1"),
    ({"seq_len": 1024}, "seq_len 1024 is above the model's 512 max positions"),
])
def test_distill_page_rejects_bad_settings(runs_dir, settings, message):
    wait_idle()
    before = set(runs_dir.iterdir())
    at = ok(app().run())
    for key, value in settings.items():
        (at.checkbox(key=key) if isinstance(value, bool) else at.number_input(key=key)).set_value(value)
    ok(at.button(key="start").click().run())
    assert any(message in e.value for e in at.error), [e.value for e in at.error]
    assert jobs.REGISTRY.active() is None
    assert set(runs_dir.iterdir()) == before                          # no run directory, not even an empty one


@pytest.mark.parametrize("train, message", [
    (b"", "is empty"),
    (b"text,label\nfine film,positive\n", "missing column(s) 'sentence'"),
    (b"\x00\xff\xfe garbage \x00", "could not read"),
    (b"sentence,label\nonly one class,positive\nanother,positive\n", "'train.csv': the train split holds a single"),
    (b'sentence,label\n"an unclosed quote,positive\nbad,negative\n', "could not parse 'train.csv' near line"),
    (b"sentence,label\nno label here\nbad,negative\n", "'train.csv': line 2 has 1 field"),
])
def test_distill_page_reports_bad_uploads(runs_dir, train, message):
    wait_idle()
    at = ok(app().run())
    at.radio(key="data_source").set_value("upload")
    ok(at.run())
    at.file_uploader(key="train_upload").upload("train.csv", train, "text/csv")
    at.file_uploader(key="eval_upload").upload("eval.csv", b"sentence,label\ngood,positive\nbad,negative\n", "text/csv")
    ok(at.run())
    ok(at.button(key="start").click().run())
    assert any(message in e.value for e in at.error), [e.value for e in at.error]
    assert jobs.REGISTRY.active() is None
    assert not any(p.name.startswith("custom-") for p in runs_dir.iterdir())   # nothing half-made left behind


def test_attention_page(ui_run):
    _, run_id, *_ = ui_run
    at = ok(app("app_pages/attention.py", run_id).run())
    assert at.title[0].value == "Attention"
    assert at.selectbox(key="run").value == run_id
    assert at.selectbox(key="checkpoint").value == "best"
    frames = at.get("iframe")
    assert len(frames) == 2                                          # head view and model view
    for frame in frames:
        page = frame.proto.srcdoc
        assert "cdnjs" not in page and "cdn." not in page and "require.min.js" not in page
        assert external_urls(page) == [], external_urls(page)[:3]
        assert "[CLS] label" in page and "window.requirejs" in page and "jQuery" in page
    assert any("KL" in c.proto.spec for c in at.get("plotly_chart"))
    at.radio(key="which").set_value("before")
    at.selectbox(key="sample").set_value(1)
    at.slider(key="top_positions").set_value(5)
    ok(at.run())
    assert "Showing the 5 of 16 positions" in at.get("iframe")[0].proto.srcdoc
    at.selectbox(key="checkpoint").set_value("step-000000")
    ok(at.run())


def test_attention_page_measures_what_the_inner_step_moves(ui_run, runs_dir):
    _, run_id, *_ = ui_run
    wait_idle()
    at = ok(app("app_pages/attention.py", run_id).run())
    assert any(c.value.startswith("No anatomy of best") for c in at.caption)
    at.number_input(key="anatomy_learners").set_value(1)
    at.radio(key="anatomy_split").set_value("dev")
    ok(at.button(key="anatomy_start").click().run())
    rerun_until_idle(at)
    recorded = RunDir(runs_dir / run_id).results()["anatomy"]
    assert list(recorded) == ["best|dev|1|seed 1234"]
    assert any("with every move" in c.value for c in at.caption)
    assert any("how far each part moved" in c.proto.spec for c in at.get("plotly_chart"))


def test_tokens_page(ui_run):
    _, run_id, *_ = ui_run
    at = ok(app("app_pages/tokens.py", run_id).run())
    assert at.title[0].value == "Nearest tokens"
    assert at.select_slider(key="checkpoint").value == "best"
    assert len(at.get("html")) == 2                                  # one decoded line per distilled sample
    table = at.dataframe[0].value
    assert len(table) == 16 and "#5" in table.columns and "label mass" in table.columns
    assert any(c.value.startswith("Word order: this sample's token vectors") for c in at.caption)
    at.select_slider(key="checkpoint").set_value("step-000000")
    at.slider(key="top_k").set_value(3)
    at.selectbox(key="sample").set_value(1)
    ok(at.run())
    assert "#3" in at.dataframe[0].value.columns and "#4" not in at.dataframe[0].value.columns
    across = at.dataframe[1].value
    assert list(across.index) == ["step-000000", "step-000001", "step-000002", "best", "last"]


def test_runs_page(ui_run, runs_dir):
    _, run_id, *_ = ui_run
    wait_idle()
    at = ok(app("app_pages/runs.py", run_id).run())
    assert at.title[0].value == "Runs"
    assert run_id in list(at.dataframe[0].value["run"])
    assert at.selectbox(key="run").value == run_id
    # evaluate with N learners from the UI, with progress
    at.number_input(key="eval_n").set_value(2)
    ok(at.button(key="evaluate").click().run())
    rerun_until_idle(at)
    evaluation = RunDir(runs_dir / run_id).results()["evaluation"]
    assert evaluation["learners"] == 2 and evaluation["checkpoint"] == "best"
    assert any("2 learners" in s.value for s in at.success)
    # downloads: the distilled data as safetensors and JSON
    assert {b.key for b in at.get("download_button")} >= {"dl_safetensors", "dl_json", "acc_html"}
    # bad and good distilled-data imports
    at.file_uploader(key="import_upload").upload("notes.safetensors", b"this is not safetensors")
    ok(at.run())
    ok(at.button(key="import").click().run())
    assert any("not a readable safetensors file" in e.value for e in at.error)
    own = (runs_dir / run_id / "checkpoints" / "best.safetensors").read_bytes()
    at.file_uploader(key="import_upload").clear().upload("mine.safetensors", own)
    ok(at.run())
    ok(at.button(key="import").click().run())
    assert any("Imported as run" in s.value for s in at.success)
    assert any(r.config().get("imported_from") == run_id for r in list_runs(runs_dir))


def test_runs_page_rejects_a_mismatched_distilled_file(ui_run, runs_dir, tmp_path):
    from distill_core.distilled import DistilledConfig, DistilledData

    _, run_id, *_ = ui_run
    other = DistilledData(DistilledConfig(seq_len=4), num_labels=3, hidden_size=12, num_layers=2, num_heads=2)
    other.save(tmp_path / "other.safetensors")
    at = ok(app("app_pages/runs.py", run_id).run())
    at.file_uploader(key="import_upload").upload("other.safetensors", (tmp_path / "other.safetensors").read_bytes())
    ok(at.run())
    ok(at.button(key="import").click().run())
    errors = [e.value for e in at.error]
    assert any("made for another model or task" in e and "'other.safetensors'" in e for e in errors), errors


def test_inspection_pages_open_on_the_most_recent_run(ui_run, runs_dir):
    newest = list_runs(runs_dir)[0].name
    at = ok(app("app_pages/tokens.py").run())
    assert at.select_slider(key="checkpoint").value in ("best", "last")
    assert at.selectbox(key="run").value == newest
    assert at.query_params["run"] == newest


def test_pages_without_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_RUNS_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("DISTILL_STUDY_DIR", str(tmp_path / "no-study"))   # the study's runs list too
    for page in ("app_pages/attention.py", "app_pages/tokens.py", "app_pages/runs.py"):
        at = ok(app(page).run())
        assert any("No saved runs" in i.value for i in at.info)


def test_the_cli_reads_a_run_made_in_the_app(ui_run, runs_dir, capsys):
    from distill_core.cli import main

    _, run_id, *_ = ui_run
    assert main(["inspect", str(runs_dir / run_id), "--json", "--checkpoint", "best", "--top-k", "2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert len(summary["samples"]) == 2 and len(summary["samples"][0]["nearest"]) == TINY["seq_len"]


@pytest.mark.parametrize("name", ["../secret", "/etc", "a/../../b"])
def test_the_distill_page_refuses_a_run_parameter_outside_the_runs_root(runs_dir, name):
    at = ok(app(run=name).run())
    assert any("is not a run name" in e.value for e in at.error), [e.value for e in at.error]
    assert not at.subheader                                          # nothing was opened


def test_the_preset_picker_fills_every_field(runs_dir):
    at = ok(app().run())
    assert at.selectbox(key="preset").value == "cpu" and at.number_input(key="seq_len").value == 64
    at.selectbox(key="preset").set_value("paper")
    ok(at.run())
    assert at.number_input(key="seq_len").value == 512 and at.selectbox(key="init").value == "random"
    assert at.number_input(key="inner_lr_init").value == pytest.approx(0.01)
    assert not at.warning                                            # no "value set twice" warnings


def test_runs_page_refuses_a_hostile_distilled_file_and_writes_nothing(ui_run, runs_dir):
    import json as _json

    from safetensors.torch import save

    from distill_core.distilled import DistilledConfig, DistilledData

    _, run_id, *_ = ui_run
    d = DistilledData(DistilledConfig(seq_len=4), num_labels=2, hidden_size=6, num_layers=2, num_heads=2)
    header = _json.loads(d.metadata()["distilled"])
    header["config"]["seq_len"] = 10_000_000                           # a 1 KB file asking for 30 GB
    hostile = save(d.tensors(), metadata={"distilled": _json.dumps(header)})
    before = sorted(p.name for p in runs_dir.iterdir())
    at = ok(app("app_pages/runs.py", run_id).run())
    at.file_uploader(key="import_upload").upload("huge.safetensors", hostile)
    ok(at.run())
    ok(at.button(key="import").click().run())
    assert any("seq_len=10000000" in e.value for e in at.error), [e.value for e in at.error]
    assert sorted(p.name for p in runs_dir.iterdir()) == before
