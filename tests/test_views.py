"""distill_core.views: offline bertviz HTML, figures, tables and the Distill form spec (no Streamlit)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from distill_core.distilled import DistilledConfig, DistilledData
from distill_core.distiller import RunConfig
from distill_core.runs import RunDir, write_json
from distill_core.views import attention, bertviz_html, curves, export, form, runs, tokens

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


def test_compare_figure_and_live_numbers():
    fig = curves.compare_figure({"a": events(), "b": events()[:2]})
    assert {t.name for t in fig.data if t.fill != "toself"} == {"a", "b"}
    live = curves.live_numbers(events())
    assert live["score"]["mean"] == 70.0 and live["score_step"] == 4
    assert live["inner_lrs"] == pytest.approx([0.104]) and live["real_loss"] == pytest.approx(0.66)


def test_kl_figure_and_head_rows_figure():
    fig = attention.kl_figure(np.ones((K, H)), np.full((K, H), 2.0))
    assert [t.type for t in fig.data] == ["heatmap", "heatmap"] and fig.data[0].zmax == 2.0
    rows = attention.head_rows_figure(dists(0), dists(1), dists(2), list("abcdefghij"), 1, 2)
    assert [t.name for t in rows.data] == ["label", "model before", "model after"]


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
    assert cfg.data.task == "demo" and cfg.data.eval_rows == form.DEFAULT_EVAL_ROWS
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
