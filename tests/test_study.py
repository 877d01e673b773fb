"""The reproduction study: its plan, a real (tiny) run on the demo task, resuming, the summary and its views."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from distill_core.errors import UserError
from distill_core.study import (PRESETS, Study, StudyConfig, StudyRow, cpu_breakdown, load_summary, plan,
                                run_study)
from distill_core.presets import default_of
from distill_core.views import results as views

# the smoke study's distilled rows run the cpu preset, whose distilled-data average their labels name
AVERAGED = f" (average {default_of('distill', 'average'):g})" if default_of("distill", "average") else ""
SMOKE_LABELS = ["majority", "HL+AL" + AVERAGED, "SL" + AVERAGED, "random-1-shot", "random-1-shot-tuned", "full"]

TINY = dict(preset="smoke", learners=2, outer_steps=2, grid_steps=1, grid_learners=1, grid_outer_lr=(0.01,),
            grid_inner_lr_init=(0.1, 0.3), full_steps=2, seq_len=8, max_length=32, threads=None, device="cpu",
            curve_rows=("demo-hl-al-1x1",))


def test_the_paper_preset_covers_the_issue():
    rows = plan(StudyConfig(preset="paper"))
    keys = [r.key for r in rows]
    assert len(keys) == len(set(keys))
    have = {(r.task, r.setting, r.samples_per_class, r.inner_steps, r.same_data) for r in rows}
    for task in ("sst2", "mrpc"):
        for setting in ("HL", "SL", "HL+AL", "SL+AL", "majority", "random-1-shot", "full"):
            assert (task, setting, 1, 1, True) in have, (task, setting)
    assert ("sst2", "SL+AL", 1, 3, True) in have and ("sst2", "SL+AL", 3, 3, False) in have
    assert ("sst2", "random-1-shot", 1, 3, True) in have and ("sst2", "random-3-shot", 3, 3, False) in have
    assert ("sst2", "SL+AL", 10, 10, False) in have
    long = [r for r in rows if r.task == "sst2" and r.tag.startswith("long")]   # validated along the way
    assert [r.key for r in long] == list(StudyConfig().curve_rows)[:2] == ["sst2-hl-al-1x1-long", "sst2-sl-al-1x1-long"]
    assert [r.outer_steps for r in long] == [StudyConfig().headline_outer_steps] * 2
    assert not any(r.train_min_words for r in rows)
    # the sentences row only when asked for: it alone filters train (and so dev) rows
    asked = StudyConfig(preset="paper", headline_min_words=10)
    long = [r for r in plan(asked) if r.task == "sst2" and r.tag.startswith("long")]
    assert [r.key for r in long] == list(StudyConfig().curve_rows)
    assert [r.outer_steps for r in long] == [asked.headline_outer_steps] * 2 + [asked.headline_min_words_outer_steps]
    study = Study(asked)
    assert [study.run_config(r, 0.01, 0.1, 1).data.train_min_words for r in long] == [None, None, 10]
    assert [r.key for r in plan(StudyConfig(preset="paper", only=("mrpc-h",)))] == [
        "mrpc-hl-al-1x1", "mrpc-hl-1x1", "mrpc-hl-al-1x1-long"]
    # a whole key names that row alone, not its "-long" twin
    assert [r.key for r in plan(StudyConfig(preset="paper", only=("sst2-hl-al-1x1",)))] == ["sst2-hl-al-1x1"]
    assert [r.key for r in plan(StudyConfig(preset="paper", only=("sst2-hl-al",)))] == [
        "sst2-hl-al-1x1", "sst2-hl-al-1x1-long"]
    # the headline rows (3 seeds): SST-2's and MRPC's HL+AL and SL+AL on their "-long" budgets (MRPC's margin
    # over the majority class needs a spread across seeds); the 300-step rows and the multi-step rows
    # measured against them have one seed each
    assert sorted(r.key for r in rows if r.headline) == [
        "mrpc-hl-al-1x1-long", "mrpc-sl-al-1x1-long", "sst2-hl-al-1x1-long", "sst2-sl-al-1x1-long"]
    # MRPC's "-long" rows choose their outer lr in pilots on their budget, the others in the task's or their own
    mrpc_long = [r for r in rows if r.task == "mrpc" and r.tag == "long"]
    assert [r.outer_steps for r in mrpc_long] == [StudyConfig().mrpc_long_outer_steps] * 2
    assert [r.key for r in rows if r.budget_pilots] == [r.key for r in mrpc_long]
    assert not [r for r in plan(StudyConfig(preset="paper", mrpc_long_outer_steps=0)) if r.task == "mrpc" and r.tag]


def test_rows_on_a_longer_budget_share_pilots_on_that_budget(tmp_path, monkeypatch):
    """`budget_pilots` rows (MRPC's "-long" ones) choose their outer lr in one set of pilots on their own budget,
    in the grid setting at the task's chosen inner-lr init, shared by the task's rows of their tag."""
    monkeypatch.delenv("DISTILL_DATA_DIR", raising=False)
    tiny = {**TINY, "grid_outer_lr": (0.01, 0.3), "grid_inner_lr_init": (0.1, 0.3)}
    study = Study(StudyConfig(out=str(tmp_path), **tiny), log=lambda s: None)
    hl, sl = (StudyRow("demo", s, outer_steps=3, tag="long", headline=True, budget_pilots=True) for s in ("HL+AL", "SL+AL"))
    shared = study.grid_for(hl)
    path = tmp_path / "grid" / "demo-1x1-long.json"
    task = json.loads((tmp_path / "grid" / "demo.json").read_text())
    assert json.loads(path.read_text()) == shared and shared["row"] == "demo-1x1-long"
    assert sorted(p["outer_lr"] for p in shared["pilots"]) == [0.01, 0.3]
    assert {(p["setting"], p["steps"], p["inner_lr_init"]) for p in shared["pilots"]} == {
        ("HL+AL", 3, task["chosen"]["inner_lr_init"])}
    losses = {p["outer_lr"]: p["validation_loss"]["mean"] for p in shared["pilots"]}
    assert shared["chosen"]["outer_lr"] == min(losses, key=losses.get)
    assert study.grid_for(sl) == shared            # SL+AL reads the same pilots: none run again
    assert len(json.loads(path.read_text())["pilots"]) == 2
    result = study.run_row(sl)
    assert result["grid_file"] == "grid/demo-1x1-long.json"
    assert result["config"]["distill"]["lr_embeds"] == shared["chosen"]["outer_lr"]
    assert result["config"]["distill"]["outer_steps"] == 3
    assert "pilots on the row's budget: grid/demo-1x1-long.json" in views.chosen_on_dev(result)


def test_the_headline_recipe_reaches_the_sst2_long_rows_and_their_runs(tmp_path, monkeypatch):
    """A recipe chosen on dev outside the study (outer lr, schedule, L, weight noise) goes to SST-2's '-long'
    HL+AL and SL+AL rows alone; the outer lr replaces the pilots' choice, whose inner-lr init the row keeps."""
    recipe = dict(headline_outer_lr=0.1, headline_schedule="linear", headline_seq_len=32, headline_model_noise=0.05)
    rows = plan(StudyConfig(preset="paper", **recipe))
    with_recipe = [r.key for r in rows if (r.outer_lr, r.schedule, r.seq_len, r.model_noise) == (0.1, "linear", 32, 0.05)]
    assert with_recipe == ["sst2-hl-al-1x1-long", "sst2-sl-al-1x1-long"]
    assert all((r.outer_lr, r.schedule, r.seq_len, r.model_noise) == (None,) * 4
               for r in rows if r.key not in with_recipe)
    study = Study(StudyConfig(preset="paper", seq_len=48, **recipe))
    long = next(r for r in rows if r.key == "sst2-sl-al-1x1-long")
    cfg = study.run_config(long, 0.1, 0.3, 10)
    assert (cfg.distilled.seq_len, cfg.distill.schedule, cfg.distill.model_noise) == (32, "linear", 0.05)
    plain = study.run_config(next(r for r in rows if r.key == "sst2-sl-al-1x1"), 0.01, 0.3, 10)
    assert (plain.distilled.seq_len, plain.distill.schedule, plain.distill.model_noise) == (
        48, default_of("distill", "schedule"), default_of("distill", "model_noise"))
    # for real, on the demo task: the row's outer lr and schedule run; the inner-lr init is the pilots'
    monkeypatch.delenv("DISTILL_DATA_DIR", raising=False)
    study = Study(StudyConfig(out=str(tmp_path), **{**TINY, "seeds": 1}), log=lambda s: None)
    row = StudyRow("demo", "SL+AL", outer_steps=2, tag="long", headline=True, outer_lr=0.3, schedule="linear",
                   seq_len=6, model_noise=0.05)
    result = study.run_row(row)
    pilots = json.loads((tmp_path / "grid" / "demo.json").read_text())["chosen"]
    distill, distilled = result["config"]["distill"], result["config"]["distilled"]
    assert distill["lr_embeds"] == distill["lr_inner_lr"] == 0.3 != pilots["outer_lr"]
    assert (distill["schedule"], distilled["seq_len"], distill["model_noise"]) == ("linear", 6, 0.05)
    assert distilled["inner_lr_init"] == pilots["inner_lr_init"]
    assert "outer lr 0.3 (the row's recipe, chosen on dev in docs/ablation)" in views.chosen_on_dev(result)
    assert ("; 2 outer steps, linear outer-lr schedule, pre-trained-weight noise 0.05 (beyond the paper)"
            in views.chosen_on_dev(result))


def test_the_hour_recipe_is_the_default_and_pilots_name_the_way_back(capsys):
    """The SST-2 '-long' rows run the ablation's hour recipe unless told otherwise; on the command line
    'pilots' gives their outer lr back to the task's pilots, and a word that is neither is named."""
    from distill_core.cli import build_parser

    long = [r for r in plan(StudyConfig(preset="paper")) if r.task == "sst2" and r.tag == "long"]
    assert [(r.outer_steps, r.outer_lr, r.schedule) for r in long] == [(6000, 0.1, "linear")] * 2
    parse = build_parser().parse_args
    assert parse(["study"]).headline_outer_lr == 0.1
    assert parse(["study", "--headline-outer-lr", "pilots"]).headline_outer_lr is None
    back = StudyConfig(preset="paper", headline_outer_lr=None, headline_schedule=None, headline_outer_steps=4500)
    assert [(r.outer_steps, r.outer_lr, r.schedule) for r in plan(back) if r.key == "sst2-sl-al-1x1-long"] == [
        (4500, None, None)]
    with pytest.raises(SystemExit):
        parse(["study", "--headline-outer-lr", "fast"])
    assert "expected a number or 'pilots', got 'fast'" in capsys.readouterr().err


@pytest.mark.parametrize("change, message", [
    (dict(preset="nope"), "unknown study preset 'nope'"),
    (dict(learners=0), "learners must be >= 1"),
    (dict(grid_outer_lr=()), "needs at least one outer lr"),
    (dict(grid_setting="XL"), "grid_setting must be one of"),
    (dict(mrpc_long_outer_steps=-1), "mrpc_long_outer_steps must be >= 0"),
    (dict(headline_outer_lr=0.0), "headline_outer_lr must be > 0"),
    (dict(headline_schedule="cosine"), "headline_schedule must be linear or constant"),
    (dict(headline_seq_len=0), "headline_seq_len must be >= 1"),
    (dict(headline_model_noise=-0.1), "headline_model_noise must be >= 0"),
    (dict(curve_points=0), "curve_points must be >= 1"),
])
def test_bad_study_settings_are_named(change, message):
    with pytest.raises(UserError, match=message):
        plan(StudyConfig(**change))


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory):
    """The smoke preset run for real (bundled model, demo data) into a fresh directory."""
    out = tmp_path_factory.mktemp("study")
    log: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("DISTILL_DATA_DIR", raising=False)
        rows = run_study(StudyConfig(out=str(out), **TINY), log=log.append)
    return out, rows, log


def acc_of(row: dict) -> float:
    return row["metrics"]["accuracy"]["mean"]


def test_a_study_writes_rows_grid_runs_and_summary(smoke_study):
    out, rows, log = smoke_study
    summary = json.loads((out / "summary.json").read_text())
    assert summary == rows and isinstance(summary, list)
    assert [r["key"] for r in summary] == [r.key for r in PRESETS["smoke"](StudyConfig(**TINY))]
    for r in summary:
        assert {"task", "setting", "samples_per_class", "inner_steps", "same_data", "metrics", "cpu_seconds",
                "config"} <= set(r)
        acc = r["metrics"]["accuracy"]
        assert 0 <= acc["mean"] <= 100 and acc["std"] >= 0
        seeds = {"HL+AL": StudyConfig().seeds, "SL": StudyConfig().other_seeds}.get(r["setting"], 1)
        assert acc["n"] == (1 if r["setting"] in ("majority", "full") else 2 * seeds)   # distilled: every seed's learners
        assert r["cpu_seconds"] >= 0
    grid = json.loads((out / "grid" / "demo.json").read_text())
    losses = {p["inner_lr_init"]: p["validation_loss"]["mean"] for p in grid["pilots"]}
    assert set(losses) == {0.1, 0.3}
    assert grid["chosen"]["inner_lr_init"] == min(losses, key=losses.get)   # chosen on validation loss
    # a finished grid is read, not rewritten
    grid_file = out / "grid" / "demo.json"
    stamp = grid_file.stat().st_mtime_ns
    assert Study(StudyConfig(out=str(out), **TINY)).grid("demo")["chosen"] == grid["chosen"]
    assert grid_file.stat().st_mtime_ns == stamp
    distilled = [r for r in summary if r["setting"] in ("HL+AL", "SL")]
    for r in distilled:
        assert r["config"]["grid"] == grid["chosen"]
        assert r["config"]["distilled"]["inner_lr_init"] == grid["chosen"]["inner_lr_init"]
        for name, scored in zip(r["config"]["runs"], r["config"]["scored"]):
            run = out / "runs" / name
            kept = ["best.safetensors", "last.safetensors"] if scored["checkpoint"] == "best" else ["last.safetensors"]
            assert sorted(p.name for p in (run / "checkpoints").iterdir()) == kept
            assert not (run / "state.json").exists()
            events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
            evals = [e for e in events if e["type"] == "eval"]
            assert {e["split"] for e in evals} == {"dev"}   # the runs select on dev only
            best = max(evals, key=lambda e: e["metrics"]["accuracy"]["mean"])   # the first of equal scores
            assert scored["step"] == best["step"] and scored["dev"] == best["metrics"]
            # the seed's time: the run's own clock at its end, then its scoring, each counted once
            part = json.loads(Study.part_path(out, name).read_text())
            done = next(e for e in events if e["type"] == "done")
            assert part["distill_cpu_seconds"] == pytest.approx(done["cpu_seconds"], abs=0.05)
            assert part["distill_cpu_seconds"] < part["cpu_seconds"]
        # headline rows: every seed; the others: other_seeds
        seeds = StudyConfig().seeds if r["setting"] == "HL+AL" else StudyConfig().other_seeds
        assert r["seeds"]["accuracy"]["seeds"] == seeds and r["seeds"]["accuracy"]["learners"] == [2] * seeds
        assert r["config"]["runs"] == [r["key"]] + [f"{r['key']}-seed{k}" for k in range(1, seeds)]
        assert r["seeds"]["accuracy"]["mean"] == pytest.approx(acc_of(r))     # equal learners: same mean
    assert [r["seeds"]["accuracy"]["seeds"] for r in distilled] == [3, 1]
    tuned = next(r for r in summary if r["setting"] == "random-1-shot-tuned")
    losses = {float(k): v for k, v in tuned["config"]["dev_loss"].items()}
    assert tuned["config"]["lr"] == min(losses, key=losses.get) and tuned["config"]["tuned_on"] == "dev"
    kshot = next(r for r in summary if r["setting"] == "random-1-shot")
    assert kshot["config"]["lr"] == grid["chosen"]["inner_lr_init"]


def test_each_seed_is_scored_from_the_checkpoint_chosen_on_dev(smoke_study):
    from distill_core.distilled import DistilledData
    from distill_core.evaluation import evaluate_distilled

    out, rows, _ = smoke_study
    row = next(r for r in rows if r["setting"] == "HL+AL")
    study = Study(StudyConfig(out=str(out), **TINY))
    prep = study.prepared("demo")
    for name, scored in zip(row["config"]["runs"], row["config"]["scored"]):
        path = out / "runs" / name / "checkpoints" / f"{scored['checkpoint']}.safetensors"
        data = DistilledData.load(path, device=prep.learner.device, dtype=prep.learner.dtype)
        again = evaluate_distilled(prep.learner, data, prep.eval, prep.task.spec.metrics, study.eval_config())
        part = json.loads((out / "results" / "seeds" / f"{name}.json").read_text())
        assert part["split"] == prep.task.spec.eval_split
        assert again["per_learner"] == part["per_learner"]


def test_a_study_resumes_and_rebuilds_a_row_from_its_finished_seeds(smoke_study):
    out, rows, _ = smoke_study
    before = {p.name: p.stat().st_mtime_ns for p in (out / "results").glob("*.json")}
    # interrupted after its last seed was scored: the seeds are kept, the row's file is missing
    victim = next(r for r in rows if r["setting"] == "HL+AL")   # the row of three seeds
    (out / "results" / f"{victim['key']}.json").unlink()
    # and its seeds were written before a setting existed: added since at its default, it keeps them
    for name in victim["config"]["runs"]:
        part_path = Study.part_path(out, name)
        part = json.loads(part_path.read_text())
        del part["config"]["data"]["dev_disjoint"]
        part_path.write_text(json.dumps(part))
    run_metrics = {name: (out / "runs" / name / "metrics.jsonl").stat().st_mtime_ns for name in victim["config"]["runs"]}
    log: list[str] = []
    again = Study(StudyConfig(out=str(out), **TINY), log=log.append).run()
    assert [r["key"] for r in again] == [r["key"] for r in rows]
    assert sum("done earlier, skipped" in line for line in log) == len(rows) - 1
    after = {p.name: p.stat().st_mtime_ns for p in (out / "results").glob("*.json")}
    assert all(after[name] == mtime for name, mtime in before.items() if name != f"{victim['key']}.json")
    rebuilt = next(r for r in again if r["key"] == victim["key"])
    assert rebuilt["metrics"] == victim["metrics"] and rebuilt["seeds"] == victim["seeds"]
    assert rebuilt["cpu_seconds"] == victim["cpu_seconds"]      # the seeds' own time, not the rebuild's
    assert {n: (out / "runs" / n / "metrics.jsonl").stat().st_mtime_ns for n in run_metrics} == run_metrics
    assert not any("grid demo" in line for line in log)   # the pilots are not run twice
    # a run of a subset (--only) keeps every finished row in the summary
    subset = Study(StudyConfig(out=str(out), only=("majority",), **TINY), log=log.append).run()
    assert [r["key"] for r in subset] == [r["key"] for r in rows]
    assert [r["key"] for r in load_summary(out / "summary.json")] == [r["key"] for r in rows]


def test_curve_rows_give_a_time_to_accuracy_band_over_their_seeds(smoke_study):
    from distill_core.study import time_to_accuracy

    out, rows, _ = smoke_study
    data = time_to_accuracy(out)
    (series,) = data["series"]          # the one curve row; the fixed-step full row records no curve
    assert series["key"] == "demo-hl-al-1x1" and series["curves"] == 3 and data["split"] == "dev"
    assert series["train_min_words"] is None and views.series_label(series) == "HL+AL (3 seeds)"
    assert views.series_label({**series, "train_min_words": 10}) == "HL+AL (3 seeds, train rows of >= 10 words, own dev)"
    assert series["step"] == [1, 2]                        # eval_every = max(1, 2 // 12), and the final one
    runs = [out / "runs" / n / "metrics.jsonl" for n in rows[1]["config"]["runs"]]
    at_two = [next(e for e in map(json.loads, p.read_text().splitlines()) if e["type"] == "eval" and e["step"] == 2)
              for p in runs]
    scores = [e["metrics"]["accuracy"]["mean"] for e in at_two]
    assert series["mean"][1] == pytest.approx(sum(scores) / 3)
    assert series["std"][1] == pytest.approx(float(torch.tensor(scores, dtype=torch.float64).std(unbiased=False)))
    assert series["cpu_minutes"][1] == pytest.approx(sum(e["cpu_seconds"] for e in at_two) / 3 / 60, abs=1e-3)
    assert series["cpu_minutes"][0] < series["cpu_minutes"][1]
    fig = views.time_to_accuracy_figure(data, "demo")
    assert fig is not None and views.time_to_accuracy_figure(data, "sst2") is None
    assert fig.data[1].y == tuple(series["mean"])


def test_load_summary_names_the_file_and_the_row(tmp_path):
    bad = tmp_path / "summary.json"
    bad.write_text(json.dumps({"rows": []}))
    with pytest.raises(UserError, match="summary.json: expected a list of rows"):
        load_summary(bad)
    bad.write_text(json.dumps([{"task": "sst2", "setting": "HL"}]))
    with pytest.raises(UserError, match="row 0 lacks metrics"):
        load_summary(bad)
    bad.write_text("[")
    with pytest.raises(UserError, match="not valid JSON"):
        load_summary(bad)


def test_results_views(smoke_study):
    _, rows, _ = smoke_study
    frame = views.results_frame(rows)
    assert list(frame["setting"]) == SMOKE_LABELS
    fig = views.results_figure(rows, "demo")
    bars = fig.data[0]
    assert list(bars.y) == [r["metrics"]["accuracy"]["mean"] for r in rows]
    assert list(bars.error_y.array) == [r["metrics"]["accuracy"]["std"] for r in rows]
    table = views.markdown_table(rows)
    assert table.count("\n") == len(rows) + 1 and f"| HL+AL{AVERAGED} |" in table
    paper_row = {"task": "sst2", "setting": "SL+AL", "samples_per_class": 3, "inner_steps": 3, "same_data": False}
    assert views.paper_value(paper_row) == 90.4
    assert views.row_label(paper_row) == "SL+AL 3×3 diff"
    averaged = {**paper_row, "tag": "long", "config": {"distill": {"average": 0.98}}}
    assert views.row_label(averaged) == "SL+AL 3×3 diff (long, average 0.98)"
    assert views.paper_value({"task": "mrpc", "setting": "full"}) == 88.6


def test_bf16_scoring_agrees_with_float32(bundled):
    """bf16 autocast only in the scoring pass: logits close, argmax nearly always the same."""
    from distill_core.data import DataConfig, encode_split, load_task_data
    from distill_core.evaluation import predict_logits

    task = load_task_data(DataConfig(task="demo", allow_hub=False))
    enc = encode_split(task.eval, bundled.tokenizer, 64)
    theta = bundled.fresh_params(torch.Generator().manual_seed(0))
    full = predict_logits(bundled, theta, enc)
    half = predict_logits(bundled, theta, enc, precision="bfloat16")
    assert half.dtype == torch.float32 and full.shape == half.shape
    assert not torch.equal(full, half)                         # bf16 really ran
    assert (full - half).abs().max() < 0.05
    assert (full.argmax(-1) == half.argmax(-1)).float().mean() >= 0.95


def _results_app(run: str | None = None, page: str = "app_pages/results.py"):
    import sys

    from streamlit.testing.v1 import AppTest

    repo = Path(__file__).resolve().parent.parent
    if str(repo) not in sys.path:   # `streamlit run` puts the app's folder on sys.path; AppTest does not
        sys.path.insert(0, str(repo))
    at = AppTest.from_file(str(repo / "app.py"), default_timeout=180)
    if run:
        at.query_params["run"] = run
    at.switch_page(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_results_page_shows_the_study_and_links_its_runs(smoke_study, monkeypatch):
    out, rows, _ = smoke_study
    monkeypatch.setenv("DISTILL_STUDY_DIR", str(out))
    at = _results_app()
    table = at.dataframe[0].value
    assert list(table["setting"]) == SMOKE_LABELS
    cpu = at.metric[2]   # the study's whole CPU time, the pilots' included, as the report states it
    assert cpu.label == "CPU time" and cpu.value == f"{cpu_breakdown(out).hours:.1f} h"
    assert list(table["accuracy"])[1] == views.format_score(rows[1]["metrics"]["accuracy"])
    spec = at.get("plotly_chart")[0].proto.spec
    assert "error_y" in spec and "demo: accuracy" in spec
    linked = {p.proto.query_string for p in at.get("page_link")}
    assert {f"run={r['run'].rsplit('/', 1)[-1]}" for r in rows if r.get("run")} <= linked
    # a link opens the study's run in the inspection pages
    att = _results_app(run="demo-hl-al-1x1", page="app_pages/attention.py")
    assert att.selectbox(key="run").value == "demo-hl-al-1x1"


def test_results_page_without_a_study(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_STUDY_DIR", str(tmp_path))
    at = _results_app()
    assert "No study summary" in at.info[0].value
    (tmp_path / "summary.json").write_text("{}")
    at = _results_app()
    assert "expected a list of rows" in at.error[0].value


def test_the_cli_lists_and_reports_a_study(smoke_study, capsys, tmp_path):
    from distill_core.cli import main

    out, rows, _ = smoke_study
    assert main(["study", "--preset", "smoke", "--out", str(out), "--list"]) == 0
    *listed, total = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed] == [r["key"] for r in rows]
    assert all(line.split()[1:] == ["done", f"{r['cpu_seconds'] / 3600:.2f}", "CPU", "h"]
               for line, r in zip(listed, rows))
    pilots_h = sum(json.loads(p.read_text())["cpu_seconds"] for p in (out / "grid").glob("*.json")) / 3600
    assert total == (f"{len(rows)} of {len(rows)} rows done: {sum(r['cpu_seconds'] for r in rows) / 3600:.2f} CPU h, "
                     f"and {pilots_h:.2f} CPU h of learning-rate pilots")
    assert main(["study", "--out", str(out), "--report"]) == 0
    report = capsys.readouterr().out
    assert report.startswith("| task | setting | accuracy |") and "CPU time: " in report
    # the CPU line splits the rows by distillation seeds and adds the pilots, which no row counts
    cpu = cpu_breakdown(out)
    parts = cpu.parts
    seconds = {k: sum(r["cpu_seconds"] for r in rows if r["setting"] in settings) / 3600
               for k, settings in (("3", {"HL+AL"}), ("1", {"SL"}), ("baselines", {"majority", "random-1-shot",
                                                                              "random-1-shot-tuned", "full"}))}
    pilots = sum(json.loads(p.read_text())["cpu_seconds"] for p in (out / "grid").glob("*.json")) / 3600
    assert StudyConfig().seeds == 3 and StudyConfig().other_seeds == 1
    assert parts["distilled rows with 3 seeds"] == (pytest.approx(seconds["3"]), 1, "rows")
    assert parts["distilled rows with 1 seed"] == (pytest.approx(seconds["1"]), 1, "rows")
    assert parts["baselines"] == (pytest.approx(seconds["baselines"]), 4, "rows")
    assert parts["learning-rate pilots"] == (pytest.approx(pilots), 1, "grid files") and pilots > 0
    assert list(parts) == ["distilled rows with 3 seeds", "distilled rows with 1 seed", "baselines",
                           "learning-rate pilots"]
    assert cpu.hours == pytest.approx(sum(r["cpu_seconds"] for r in rows) / 3600 + pilots)
    assert f"CPU time: {cpu.hours:.2f} h in all: distilled rows with 3 seeds" in report
    assert main(["study", "--out", str(out), "--report", "--against", str(out)]) == 0   # before/after
    head, _, *lines = [[c.strip() for c in line.strip("|").split("|")]
                       for line in capsys.readouterr().out.split("\n\n")[0].splitlines()]
    ours, seeds, previous = (head.index(c) for c in ("ours, paper's metric", "across seeds", "previous study"))
    assert len(lines) == len(rows) and all(line[previous] == (line[seeds] or line[ours]) for line in lines)
    assert main(["study", "--out", str(tmp_path), "--report"]) == 2
    assert f"file not found: {tmp_path / 'summary.json'}" in capsys.readouterr().err


def test_a_row_killed_mid_seed_continues_from_its_resume_point(tmp_path, monkeypatch):
    """Seed 1 of a distilled row dies after outer step 3 of 6: the re-run keeps seed 0, continues seed 1
    from its last resume point, and ends with the distilled data of a study that was never interrupted."""
    from distill_core import presets
    from distill_core.distiller import Distiller
    from safetensors.torch import load_file

    monkeypatch.delenv("DISTILL_DATA_DIR", raising=False)
    monkeypatch.setitem(presets.PRESETS["cpu"]["distill"], "save_every_minutes", 1e-9)   # a resume point per step
    tiny = {**TINY, "outer_steps": 6, "other_seeds": 2, "only": ("demo-sl",)}   # demo SL: not a headline row

    class Killed(Exception):
        pass

    straight = Study(StudyConfig(out=str(tmp_path / "straight"), **tiny), log=lambda s: None).run()
    train_step = Distiller.train_step

    def dies(self):
        if self.config.distill.seed == 1 and self.step == 3:
            raise Killed()
        return train_step(self)

    monkeypatch.setattr(Distiller, "train_step", dies)
    out = tmp_path / "killed"
    with pytest.raises(Killed):
        Study(StudyConfig(out=str(out), **tiny), log=lambda s: None).run()
    key = straight[0]["key"]
    seed0 = out / "results" / "seeds" / f"{key}.json"
    assert seed0.exists() and not (out / "results" / "seeds" / f"{key}-seed1.json").exists()
    assert json.loads((out / "runs" / f"{key}-seed1" / "state.json").read_text())["step"] == 3
    mtime = seed0.stat().st_mtime_ns
    monkeypatch.setattr(Distiller, "train_step", train_step)
    log: list[str] = []
    again = Study(StudyConfig(out=str(out), **tiny), log=log.append).run()
    assert any(f"{key}-seed1: continuing from its last resume point" in line for line in log)
    assert seed0.stat().st_mtime_ns == mtime                                 # seed 0 was not distilled again
    steps = [json.loads(x)["step"] for x in (out / "runs" / f"{key}-seed1" / "metrics.jsonl").read_text().splitlines()
             if json.loads(x)["type"] == "step"]
    assert steps == [1, 2, 3, 4, 5, 6]
    for name in (key, f"{key}-seed1"):
        a = load_file(str(tmp_path / "straight" / "runs" / name / "checkpoints" / "last.safetensors"))
        b = load_file(str(out / "runs" / name / "checkpoints" / "last.safetensors"))
        for t in a:
            torch.testing.assert_close(b[t], a[t], rtol=1e-5, atol=1e-6)
    assert again[0]["metrics"] == straight[0]["metrics"]


def test_processes_split_a_rows_seeds(tmp_path, monkeypatch):
    """`--seed K` distils only seed K; a seed another process holds is left to it; the row is written by the
    run that finds every seed finished, without distilling any of them twice."""
    monkeypatch.delenv("DISTILL_DATA_DIR", raising=False)
    tiny = {**TINY, "other_seeds": 2, "only": ("demo-sl",)}   # demo SL: two seeds, not a headline row
    key = "demo-sl-1x1"
    seeds = tmp_path / "results" / "seeds"
    log: list[str] = []
    assert Study(StudyConfig(out=str(tmp_path), only_seeds=(1,), **tiny), log=log.append).run() == []
    assert (seeds / f"{key}-seed1.json").exists() and not (seeds / f"{key}.json").exists()
    assert any("not written yet, seeds missing: 0 (not asked for)" in line for line in log)
    assert not (tmp_path / "results" / f"{key}.json").exists()
    seed1 = (seeds / f"{key}-seed1.json").stat().st_mtime_ns

    other = Study(StudyConfig(out=str(tmp_path), **tiny))
    with other._claim(key) as held:          # "another process" is distilling seed 0
        assert held
        log.clear()
        assert Study(StudyConfig(out=str(tmp_path), **tiny), log=log.append).run() == []
        assert any("seeds missing: 0 (another process is distilling it)" in line for line in log)
        assert not (seeds / f"{key}.json").exists()

    rows = Study(StudyConfig(out=str(tmp_path), **tiny), log=log.append).run()
    assert [r["key"] for r in rows] == [key]
    assert rows[0]["seeds"]["accuracy"]["seeds"] == 2
    assert (seeds / f"{key}-seed1.json").stat().st_mtime_ns == seed1      # seed 1 was not distilled again
    assert rows[0]["config"]["runs"] == [key, f"{key}-seed1"]
    assert rows[0]["metrics"]["accuracy"]["n"] == 2 * TINY["learners"]      # both seeds' learners, pooled
    with pytest.raises(UserError, match="numbered from 0"):
        plan(StudyConfig(only_seeds=(-1,)))


def test_summary_rewrites_wait_for_each_other(tmp_path, monkeypatch):
    """Processes sharing a study directory each rewrite summary.json: one that waits for another's
    rewrite reads the rows finished meanwhile, so its summary does not drop them."""
    import threading

    from distill_core.runs import write_json
    from distill_core.study import _file_lock

    monkeypatch.delenv("DISTILL_DATA_DIR", raising=False)
    study = Study(StudyConfig(out=str(tmp_path), **TINY))
    first, second = plan(study.config)[:2]
    def finished(row: StudyRow) -> None:
        write_json(study.result_path(row), {"key": row.key, "task": row.task, "setting": row.setting, "metrics": {}})

    finished(first)
    writer = threading.Thread(target=study.write_summary)
    with _file_lock(tmp_path / "results" / "summary.lock", wait=True) as held:   # another process rewrites
        assert held
        writer.start()
        writer.join(0.5)
        assert writer.is_alive() and not (tmp_path / "summary.json").exists()     # it waits for the lock
        finished(second)                                                          # a row finished meanwhile
    writer.join(30)
    assert not writer.is_alive()
    assert [r["key"] for r in load_summary(tmp_path / "summary.json")] == [first.key, second.key]
    with _file_lock(tmp_path / "results" / "summary.lock", wait=False) as held:   # and it let go
        assert held


def test_the_process_finishing_a_rows_last_seed_writes_it(tmp_path, monkeypatch):
    """Two processes split a row's seeds and each finishes while the other is still distilling: the seed
    the other one finished meanwhile counts, so the row is written by whichever ends last."""
    monkeypatch.delenv("DISTILL_DATA_DIR", raising=False)
    tiny = {**TINY, "other_seeds": 2, "only": ("demo-sl",)}
    key = "demo-sl-1x1"
    other_log: list[str] = []
    distil = Study._distill_seed

    def meanwhile(self, row, cfg, run_dir):
        if run_dir.name == f"{key}-seed1":
            # "the other process" distils seed 0 from start to end while this one holds seed 1
            Study(StudyConfig(out=str(tmp_path), only_seeds=(0,), **tiny), log=other_log.append).run()
        return distil(self, row, cfg, run_dir)

    monkeypatch.setattr(Study, "_distill_seed", meanwhile)
    rows = Study(StudyConfig(out=str(tmp_path), only_seeds=(1,), **tiny), log=lambda s: None).run()
    assert any("seeds missing: 1 (not asked for)" in line for line in other_log)   # seed 1 was not done yet
    assert [r["key"] for r in rows] == [key]
    assert rows[0]["config"]["runs"] == [key, f"{key}-seed1"]
    assert rows[0]["metrics"]["accuracy"]["n"] == 2 * TINY["learners"]


def test_a_multi_step_row_pilots_its_own_outer_lr(tmp_path, monkeypatch):
    """A T = 3 row chooses its outer lr in its own pilots (its setting, shape and budget) at the task's chosen
    inner-lr init, and distils with that choice; with grid_per_shape off it takes the task's 1x1 choice."""
    monkeypatch.delenv("DISTILL_DATA_DIR", raising=False)
    tiny = {**TINY, "grid_outer_lr": (0.01, 0.3), "grid_inner_lr_init": (0.1, 0.3)}
    study = Study(StudyConfig(out=str(tmp_path), **tiny), log=lambda s: None)
    row = StudyRow("demo", "SL+AL", 1, 3, True)
    own = study.grid_for(row)
    task = json.loads((tmp_path / "grid" / "demo.json").read_text())
    assert json.loads((tmp_path / "grid" / f"{row.key}.json").read_text()) == own
    assert own["row"] == row.key and own["inner_lr_init_from"] == "grid/demo.json"
    assert sorted(p["outer_lr"] for p in own["pilots"]) == [0.01, 0.3]
    assert {p["inner_lr_init"] for p in own["pilots"]} == {task["chosen"]["inner_lr_init"]}
    assert {(p["setting"], p["steps"]) for p in own["pilots"]} == {("SL+AL", TINY["outer_steps"])}   # the row's own
    assert {(p["setting"], p["steps"]) for p in task["pilots"]} == {("HL+AL", TINY["grid_steps"])}
    losses = {p["outer_lr"]: p["validation_loss"]["mean"] for p in own["pilots"]}
    assert own["chosen"]["outer_lr"] == min(losses, key=losses.get)
    result = study.run_row(row)
    assert result["config"]["grid"] == own["chosen"]
    assert result["config"]["distill"]["lr_embeds"] == own["chosen"]["outer_lr"]
    assert result["config"]["distilled"]["inner_steps"] == 3
    assert result["grid_file"] == f"grid/{row.key}.json"
    assert views.chosen_on_dev(result).endswith("(the row's own pilots)")
    assert Study(StudyConfig(out=str(tmp_path), grid_per_shape=False, **tiny)).grid_for(row)["chosen"] == task["chosen"]
