"""distill_core.views: offline bertviz HTML, figures, tables and the Distill form spec (no Streamlit)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from distill_core.distilled import DistilledConfig, DistilledData
from distill_core.distiller import RunConfig
from distill_core.runs import RunDir, write_json
from distill_core.views import attention, bertviz_html, curves, export, form, intro, runs, tokens

K, H, L = 3, 4, 10


def dists(seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(K, H, L)) * 2
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def events() -> list[dict]:
    """Records exactly as the distiller writes them to metrics.jsonl."""
    acc = lambda m, s: {"accuracy": {"mean": m, "std": s, "n": 3}}  # noqa: E731
    out = [{"type": "start", "step": 0, "outer_steps": 4, "demo": True},
           {"type": "eval", "step": 0, "metrics": acc(50.0, 1.0)},
           {"type": "baseline", "name": "majority", "metrics": acc(50.0, 0.0)},
           {"type": "baseline", "name": "random-1-shot", "metrics": acc(55.0, 4.0)}]
    for s in range(1, 5):
        out.append({"type": "step", "step": s, "real_loss": 0.7 - s / 100, "inner_lrs": [0.1 + s / 1000],
                    "labels": [[0.73 - s / 100, 0.27 + s / 100], [0.27, 0.73]], "seconds": 1.0, "elapsed": s})
        if s % 2 == 0:
            out.append({"type": "eval", "step": s, "metrics": acc(50.0 + 5 * s, 2.0)})
    return out


# --- bertviz, offline ------------------------------------------------------------------------------
def test_cls_comparison_keeps_the_top_label_mass_positions_in_order():
    label, actual = dists(0), dists(1)
    comp = bertviz_html.cls_comparison(label, actual, [f"t{i}" for i in range(L)], max_positions=4)
    mass = label.mean(axis=(0, 1))
    assert list(comp.positions) == sorted(np.argsort(-mass)[:4])
    assert comp.rows == [bertviz_html.LABEL_ROW, bertviz_html.MODEL_ROW]
    assert comp.attention.shape == (K, H, 2, 4)
    np.testing.assert_allclose(comp.attention[:, :, 0], label[..., comp.positions])   # not renormalised
    np.testing.assert_allclose(comp.attention[:, :, 1], actual[..., comp.positions])
    assert comp.tokens[0] == f"{comp.positions[0]} t{comp.positions[0]}"
    assert "4 of 10 positions" in comp.note and "6 positions cut" in comp.note
    assert [t.shape for t in comp.as_layers()] == [(1, H, 2, 4)] * K


def test_cls_comparison_without_labels_and_input_checks():
    comp = bertviz_html.cls_comparison(None, dists(1), list("abcdefghij"), max_positions=50)
    assert comp.rows == [bertviz_html.MODEL_ROW] and comp.note == "All 10 positions shown."
    with pytest.raises(ValueError, match="9 tokens for 10"):
        bertviz_html.cls_comparison(None, dists(1), list("abcdefghi"))
    with pytest.raises(ValueError, match="max_positions"):
        bertviz_html.cls_comparison(None, dists(1), list("abcdefghij"), max_positions=0)


@pytest.mark.parametrize("build", [bertviz_html.head_view_html, bertviz_html.model_view_html])
def test_bertviz_views_are_self_contained_with_no_cdn(build):
    comp = bertviz_html.cls_comparison(dists(0), dists(1), [f"<t{i}>" for i in range(L)], max_positions=6)
    page = build(comp)
    assert bertviz_html.external_urls(page) == []
    for cdn in ("cdnjs", "require.min.js", "cdn.jsdelivr", "unpkg", "<script src"):
        assert cdn not in page
    assert "require.config(" not in page and "window.requirejs" in page
    assert 'version="5.7.0"' in page.replace(" ", "")       # d3 v5.7.0 from mpld3
    assert "jQuery v3" in page                               # jquery from xstatic-jquery
    assert "[CLS] label" in page and "<t3>" not in page.split("<script>")[0]   # the note is escaped
    assert bertviz_html.view_height(comp, "head") > 100 and bertviz_html.view_height(comp, "model") > 100


@pytest.mark.parametrize("build", [bertviz_html.head_view_html, bertviz_html.model_view_html])
def test_bertviz_views_follow_the_theme(build):
    comp = bertviz_html.cls_comparison(dists(0), dists(1), [f"t{i}" for i in range(L)])
    dark, light = build(comp, dark=True), build(comp, dark=False)
    assert 'data-theme="dark"' in dark and "color-scheme: dark" in dark and "#0e1117" in dark
    assert 'data-theme="light"' in light and "color-scheme: light" in light and "#0e1117" not in light
    assert 'data-theme="light"' in build(comp)                  # light unless told otherwise
    if build is bertviz_html.model_view_html:           # bertviz's own switch, where it has one
        assert '"display_mode": "dark"' in dark and '"display_mode": "light"' in light


def test_external_urls_ignores_xml_namespaces_only():
    assert bertviz_html.external_urls('x="http://www.w3.org/2000/svg"') == []
    assert bertviz_html.external_urls('<script src="https://cdnjs.cloudflare.com/a.js">') != []
    assert bertviz_html.external_urls("'//unpkg.com/d3'") != []


# --- figures -----------------------------------------------------------------------------------
def test_accuracy_figure_draws_band_curve_and_baselines():
    fig = curves.accuracy_figure(events(), total_steps=4)
    names = [t.name for t in fig.data]
    assert "distilled (accuracy)" in names and "majority 50.0" in names and "random-1-shot 55.0 ± 4.0" in names
    curve = next(t for t in fig.data if t.name == "distilled (accuracy)")
    assert list(curve.x) == [0, 2, 4] and list(curve.y) == [50.0, 60.0, 70.0]
    band = next(t for t in fig.data if t.fill == "toself")
    assert max(band.y) == 72.0 and min(band.y) == 49.0
    empty = curves.accuracy_figure([e for e in events() if e["type"] != "eval"], total_steps=4)
    assert "waiting" in empty.layout.annotations[0].text


def test_eval_points_keep_the_last_value_of_a_repeated_step():
    ev = events() + [{"type": "eval", "step": 4, "metrics": {"accuracy": {"mean": 80.0, "std": 0.5, "n": 3}}}]
    assert curves.eval_points(ev) == ([0, 2, 4], [50.0, 60.0, 80.0], [1.0, 2.0, 0.5])


def test_training_figure_plots_loss_inner_lr_and_labels():
    fig = curves.training_figure(events(), ["negative", "positive"])
    names = [t.name for t in fig.data]
    assert names[:2] == ["real loss", "lr step 1"]
    assert "sample 0 (negative) → negative" in names and len(names) == 2 + 4
    np.testing.assert_allclose(fig.data[1].y, [0.101, 0.102, 0.103, 0.104])


def test_every_subplot_has_a_y_axis_title():
    fig = curves.training_figure(events())
    assert [fig.layout[f"yaxis{i}"].title.text for i in ("", 2, 3)] == ["loss", "learning rate", "label value"]
    kl = attention.kl_figure(np.ones((K, H)), np.ones((K, H)))
    assert kl.layout.yaxis.title.text == kl.layout.yaxis2.title.text == "layer"


def test_smooth_is_a_trailing_mean():
    assert curves.smooth([1, 2, 3, 4, 10], 2) == [1.0, 1.5, 2.5, 3.5, 7.0]
    assert curves.smooth([1, 2, 3, 4, 10], 3) == pytest.approx([1.0, 1.5, 2.0, 3.0, 17 / 3])
    assert curves.smooth([3, 1], 0) == curves.smooth([3, 1], 1) == [3.0, 1.0] and curves.smooth([], 5) == []
    with pytest.raises(ValueError, match="window"):
        curves.smooth([1.0], -1)


def test_training_figure_draws_a_smoothed_loss_over_the_faint_raw_one():
    fig = curves.training_figure(events(), smooth=2)
    raw, smoothed = fig.data[0], fig.data[1]
    assert raw.name == "real loss" and raw.opacity < 1 and smoothed.name == "real loss, mean of 2 steps"
    np.testing.assert_allclose(smoothed.y, [0.69, 0.685, 0.675, 0.665])
    with pytest.raises(ValueError, match="smooth"):
        curves.training_figure(events(), smooth=-1)


def test_downsample_keeps_first_last_and_evenly_spaced_points():
    steps = [{"step": s} for s in range(1, 1001)]
    kept = curves.downsample(steps, 10)
    assert len(kept) == 10 and kept[0]["step"] == 1 and kept[-1]["step"] == 1000
    gaps = np.diff([e["step"] for e in kept])
    assert gaps.max() - gaps.min() <= 1
    assert curves.downsample(steps[:5], 10) == steps[:5] and curves.downsample([], 10) == []
    with pytest.raises(ValueError, match="max_points"):
        curves.downsample(steps, 1)


def test_long_runs_are_downsampled_before_plotting():
    n, cap = 60_000, 600
    long = [{"type": "step", "step": s, "real_loss": 1 / s, "inner_lrs": [0.1, 0.2], "labels": [[0.9, 0.1], [0.2, 0.8]]}
            for s in range(1, n + 1)]
    long += [{"type": "eval", "step": s, "metrics": {"accuracy": {"mean": 50.0, "std": 1.0, "n": 1}}}
             for s in range(0, n + 1, 2)]
    for fig in (curves.training_figure(long, max_points=cap), curves.training_figure(long, smooth=100)):
        assert all(len(t.x) <= cap for t in fig.data) and all(t.x[-1] == n and t.x[0] == 1 for t in fig.data)
    for fig in (curves.accuracy_figure(long), curves.compare_figure({"a": long})):
        line = next(t for t in fig.data if t.fill != "toself" and str(t.name).startswith(("distilled", "a")))
        band = next(t for t in fig.data if t.fill == "toself")
        assert len(line.x) <= cap and line.x[-1] == n and len(band.x) == 2 * len(line.x)


def test_compare_figure_and_live_numbers():
    fig = curves.compare_figure({"a": events(), "b": events()[:2]})
    assert {t.name for t in fig.data if t.fill != "toself"} == {"a", "b"}
    live = curves.live_numbers(events())
    assert live["score"]["mean"] == 70.0 and live["score_step"] == 4
    assert live["inner_lrs"] == pytest.approx([0.104]) and live["real_loss"] == pytest.approx(0.66)


def test_kl_figure_and_head_rows_figure():
    fig = attention.kl_figure(np.ones((K, H)), np.full((K, H), 2.0))
    assert [t.type for t in fig.data] == ["heatmap", "heatmap"]
    assert fig.data[0].zmax == pytest.approx(np.log10(2 + attention.KL_EPS))
    assert fig.data[1].colorbar.ticktext == ("1", "2")                  # the bar is labelled with real KL
    rows = attention.head_rows_figure(dists(0), dists(1), dists(2), list("abcdefghij"), 1, 2)
    assert [t.name for t in rows.data] == ["label", "model before", "model after"]


def test_kl_heatmap_is_not_flattened_by_an_outlier_and_hovers_the_true_kl():
    rng = np.random.default_rng(0)
    before, after = rng.uniform(0.1, 0.5, (K, H)), rng.uniform(0.05, 0.3, (K, H))
    before[1, 2] = 1e4
    fig = attention.kl_figure(before, after)
    zmin, zmax = fig.data[0].zmin, fig.data[0].zmax
    assert fig.data[1].zmin == zmin and fig.data[1].zmax == zmax      # one scale for both panels
    z = np.concatenate([np.ravel(t.z) for t in fig.data])
    rest = np.delete(z, 1 * H + 2)                                    # every cell but the outlier
    spread = (rest.max() - rest.min()) / (zmax - zmin)
    assert spread > 0.9, spread                                       # a linear scale would give < 0.01%
    assert z.max() > zmax and fig.data[1].colorbar.ticktext[-1].startswith("≥")
    assert fig.data[0].customdata[1][2] == 1e4 and "%{customdata" in fig.data[0].hovertemplate
    np.testing.assert_allclose(np.asarray(fig.data[1].customdata), after)
    tick_kl = [float(t.lstrip("≤≥ ")) for t in fig.data[1].colorbar.ticktext]
    np.testing.assert_allclose(np.log10(np.array(tick_kl) + attention.KL_EPS), fig.data[1].colorbar.tickvals,
                               atol=0.02)                               # tick text = the KL at that colour


def test_figures_leave_the_background_to_the_theme():
    figs = [curves.accuracy_figure(events()), curves.training_figure(events(), dark=True),
            attention.kl_figure(np.ones((K, H)), np.ones((K, H))), intro.intro_figure(dark=True)]
    for fig in figs:
        assert fig.layout.paper_bgcolor is None and fig.layout.plot_bgcolor is None
    lr_colors = {t.line.color for t in curves.training_figure(events(), dark=True).data if t.name.startswith("lr")}
    assert "#222222" not in lr_colors


def test_intro_explains_one_distilled_sample():
    text = intro.INTRO_MARKDOWN.lower()
    for words in ("attention labels", "inner learning rate", "embeddings", "[cls]", "kl", "soft"):
        assert words in text, words
    for dark in (False, True):
        fig = intro.intro_figure(dark=dark)
        texts = " ".join(a.text for a in fig.layout.annotations)
        assert "embeddings" in texts and "label" in texts and "[CLS] attention labels" in texts
        assert len(fig.layout.shapes) > 40
    assert intro.intro_figure(dark=True).layout.annotations[0].font.color != \
        intro.intro_figure(dark=False).layout.annotations[0].font.color


def test_figure_html_export_is_standalone():
    page = export.figure_html(curves.accuracy_figure(events()))
    assert page.lstrip().lower().startswith("<!doctype html>") and "Plotly.newPlot" in page
    assert '<script src="http' not in page and len(page) > 1_000_000     # plotly.js is inlined
    assert isinstance(export.png_available(), bool)


# --- tokens ------------------------------------------------------------------------------------
def test_token_tables_and_weighted_line():
    nearest = [[("good", 0.9), ("fine", 0.8)], [("<b>", 0.5), ("x", 0.4)]]
    frame = tokens.nearest_frame(nearest, np.array([0.7, 0.3]))
    assert list(frame.columns) == ["position", "label mass", "#1", "#2"] and frame["#1"][0] == "good  (0.90)"
    line = tokens.weighted_line_html(["good", "<b>"], np.array([0.7, 0.3]))
    assert "&lt;b&gt;" in line and "<b>" not in line
    table = tokens.checkpoint_frame({"step-0": ["a", "b"], "step-2": ["a", "c"], "best": ["a", "c"]})
    assert list(table["changed"]) == [0, 1, 0]
    fig = tokens.change_figure({"step-0": ["a", "b"], "step-2": ["x", "c"]}, {"step-0": 0, "step-2": 2})
    assert list(fig.data[0].y) == [0, 2]
    dark = tokens.weighted_line_html(["good", "<b>"], np.array([0.7, 0.3]), dark=True)
    assert "#111" in line and "#111" not in dark and "#eee" in dark


def test_sample_caption_names_the_class():
    assert tokens.sample_caption(0, ["negative", "positive"]) == "sample 0 · class negative"
    assert tokens.sample_caption(3, ["negative", "positive"]) == "sample 3 · class positive"   # row r: class r % C
    assert tokens.sample_caption(2, None) == "sample 2"


# --- runs ---------------------------------------------------------------------------------------
def test_run_summary_and_settings_side_by_side(tmp_path):
    made = []
    for name, seq_len in (("a", 16), ("b", 32)):
        cfg = form.config_from_values({"task": "demo", "seq_len": seq_len})
        run = RunDir(tmp_path / name)
        write_json(run.config_path, {**cfg.to_dict(), "demo": True})
        for e in events() + [{"type": "done", "step": 4}]:
            run.append_metrics(e)
        made.append(run)
    row = runs.run_summary(made[0])
    assert row["status"] == "done" and row["step"] == 4 and row["final accuracy"] == "70.0 ± 2.0"
    assert row["L"] == 16 and row["demo"] is True
    frame = runs.settings_frame(made)
    assert list(frame.index) == ["distilled.seq_len"] and list(frame.loc["distilled.seq_len"]) == ["16", "32"]
    assert len(runs.runs_table(made)) == 2


def test_runs_table_says_how_each_score_was_measured_and_never_none(tmp_path):
    cfg = form.config_from_values({"task": "sst2"}).to_dict()
    run = RunDir(tmp_path / "measured")
    write_json(run.config_path, cfg)
    start = {"type": "start", "step": 0, "outer_steps": 4, "eval_rows": 300, "eval_learners": 10}
    for e in [start] + events()[1:]:
        run.append_metrics(e)
    run.update_results(evaluation={"checkpoint": "best", "learners": 20, "eval_rows": 872, "seed": 1234, "step": 4,
                                   "metrics": {"accuracy": {"mean": 81.25, "std": 1.5, "n": 20}}})
    bare = RunDir(tmp_path / "bare")                 # no metrics, no results: every score cell is missing
    write_json(bare.config_path, {**cfg, "distill": {**cfg["distill"], "outer_steps": None}})
    broken = RunDir(tmp_path / "broken")
    broken.path.mkdir()
    broken.config_path.write_text("{not json")
    table = runs.runs_table([run, bare, broken])
    row = table.iloc[0]
    assert row["final accuracy"] == "70.0 ± 2.0" and row["final measured on"] == "10 learners · 300 rows · validation"
    assert row["evaluated accuracy"] == "81.2 ± 1.5"
    assert row["evaluated measured on"] == "20 learners · 872 rows · validation · best (step 4)"
    cells = [str(v) for v in table.to_numpy().ravel()]
    assert not any(c in ("None", "nan", "NaN", "<NA>") for c in cells), cells
    assert table.iloc[1]["final accuracy"] == runs.MISSING and table.iloc[1]["of"] == runs.MISSING
    frame = runs.settings_frame([run, bare])
    assert list(frame.loc["distill.outer_steps"])[1] == runs.MISSING and "None" not in frame.to_numpy()
    assert runs.measured_on(1, None, None) == "1 learner" and runs.measured_on() == runs.MISSING


def test_distilled_json_holds_every_tensor():
    d = DistilledData(DistilledConfig(seq_len=4), num_labels=2, hidden_size=6, num_layers=2, num_heads=3)
    data = json.loads(runs.distilled_json(d))
    assert data["config"]["seq_len"] == 4 and len(data["label_targets"]) == 2
    assert np.asarray(data["tensors"]["embeds"]).shape == (2, 4, 6)
    assert np.asarray(data["tensors"]["attention_logits"]).shape == (2, 2, 3, 4)


# --- the Distill form -----------------------------------------------------------------------------
def test_form_offers_every_setting_of_the_method():
    assert form.missing_settings() == []
    assert len({f.key for f in form.FIELDS}) == len(form.FIELDS)
    assert {f.section for f in form.FIELDS} == set(form.SECTIONS)


def test_form_defaults_are_valid_and_sized_for_a_cpu(monkeypatch):
    monkeypatch.delenv("DISTILL_DATA_DIR", raising=False)
    cfg = form.config_from_values({})
    cfg.validate()
    assert cfg.data.task == "demo" and cfg.data.eval_rows == 300 and cfg.preset == "cpu"
    assert cfg.distill.eval_at_start and cfg.distill.eval_learners <= 5 and cfg.distill.eval_every <= 25
    assert cfg.distilled.seq_len <= 64 and cfg.distill.max_minutes is None and cfg.data.train_rows is None


def test_form_default_task_follows_the_data_dir(tmp_path, monkeypatch):
    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "train.parquet").write_bytes(b"")
    monkeypatch.setenv("DISTILL_DATA_DIR", str(tmp_path))
    assert form.default_task() == "sst2" and form.defaults()["data_dir"] == str(tmp_path)


def test_form_round_trips_a_saved_config():
    cfg = form.config_from_values({"task": "demo", "seq_len": 24, "label_type": "hard", "eval_rows": 0,
                                   "max_minutes": 5.0, "different_data_per_step": True, "samples_per_class": 2,
                                   "inner_steps": 2})
    back = form.config_from_values(form.values_from_config(cfg.to_dict()))
    assert back.to_dict() == cfg.to_dict()
    assert RunConfig.from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()


def test_form_custom_files():
    cfg = form.config_from_values({"train_path": " a.csv ", "eval_path": "b.csv", "text_columns": "q, s",
                                   "label_column": "y"}, "files")
    assert (cfg.data.task, cfg.data.train_file, cfg.data.text_columns, cfg.data.label_column) == \
        (None, "a.csv", ["q", "s"], "y")
    cfg.validate()


def test_inner_lrs_read_the_same_with_one_lr_per_step_and_one_per_group():
    from distill_core.views.curves import format_inner_lrs, lr_lines

    assert format_inner_lrs([0.3, 0.1234]) == "0.3, 0.123"
    assert format_inner_lrs([[0.1, 2.5]], ["encoder", "head"]) == "encoder 0.1, head 2.5"
    assert format_inner_lrs([[0.1, 2.5], [0.2, 1.0]], ["encoder", "head"]) == (
        "step 1: encoder 0.1, head 2.5; step 2: encoder 0.2, head 1")
    assert lr_lines([0.3, 0.1]) == [("lr step 1", (0,)), ("lr step 2", (1,))]
    assert lr_lines([[0.1, 2.5]], ["encoder", "head"]) == [("lr encoder", (0, 0)), ("lr head", (0, 1))]
    from distill_core.views.curves import training_figure

    steps = [{"type": "step", "step": s, "real_loss": 0.7, "inner_lrs": [[0.1, 0.3 + s]],
              "inner_lr_groups": ["encoder", "head"], "labels": None} for s in range(1, 4)]
    traces = {t.name: list(t.y) for t in training_figure(steps).data if t.name and t.name.startswith("lr")}
    assert traces == {"lr encoder": [0.1, 0.1, 0.1], "lr head": [1.3, 2.3, 3.3]}
