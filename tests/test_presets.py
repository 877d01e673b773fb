"""One presets module: the CLI, the form and the study resolve the same config for the same preset;
explicit flags win; --help names a default for every setting."""

from __future__ import annotations

import argparse
from dataclasses import fields

import pytest

from distill_core.cli import SETTING_FLAGS, build_parser, run_config_from_args
from distill_core.data import DataConfig
from distill_core.distilled import DistilledConfig
from distill_core.distiller import DistillConfig, RunConfig
from distill_core.learner import ModelConfig
from distill_core.presets import BASE, PRESETS
from distill_core.study import Study, StudyConfig, StudyRow
from distill_core.views import form

SECTIONS = {"data": DataConfig, "model": ModelConfig, "distilled": DistilledConfig, "distill": DistillConfig}


def test_every_preset_sets_every_setting_and_the_dataclasses_take_their_defaults_from_presets():
    for name, preset in PRESETS.items():
        for section, cls in SECTIONS.items():
            assert set(preset[section]) == {f.name for f in fields(cls)}, (name, section)
    for section, cls in SECTIONS.items():
        made = cls()
        assert {f.name: getattr(made, f.name) for f in fields(cls)} == BASE[section]
    assert PRESETS["paper"]["distilled"]["init"] == "random" and PRESETS["paper"]["distilled"]["seq_len"] == 512
    assert PRESETS["cpu"]["distilled"]["init"] == "real"


def _cli(*argv: str) -> RunConfig:
    return run_config_from_args(build_parser().parse_args(["distill", *argv]))


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_cli_and_form_resolve_the_same_config_for_a_preset(preset, monkeypatch):
    monkeypatch.delenv("DISTILL_DATA_DIR", raising=False)
    cli = _cli("--preset", preset, "--task", "demo").to_dict()
    ui = form.config_from_values({"preset": preset, "task": "demo", **form.preset_widget_values(preset)}).to_dict()
    assert cli == ui and cli["preset"] == preset
    assert cli == RunConfig.from_preset(preset, {"data": {"task": "demo"}}).to_dict()


def test_the_study_starts_each_row_from_its_run_preset_and_names_it():
    study = Study(StudyConfig(run_preset="paper", out="/tmp/unused-study"))
    cfg = study.run_config(StudyRow("sst2", "HL+AL"), 0.01, 0.3, 300)
    paper = RunConfig.from_preset("paper")
    assert cfg.preset == "paper" and cfg.distilled.seq_len == paper.distilled.seq_len == 512
    assert cfg.distilled.init == "random" and cfg.distilled.label_type == "hard" and cfg.distill.outer_steps == 300
    assert cfg.data.eval_rows is None                      # the study reports on the whole evaluation split


def test_explicit_flags_win_over_the_preset():
    cfg = _cli("--preset", "paper", "--seq-len", "32", "--lr", "0.05", "--lr-labels", "0.2", "--no-baselines")
    assert cfg.distilled.seq_len == 32 and cfg.distilled.init == "random"           # the rest stays the paper's
    assert cfg.distill.lr_embeds == 0.05 and cfg.distill.lr_labels == 0.2 and not cfg.distill.baselines
    assert _cli("--eval-rows", "0").data.eval_rows is None and _cli().data.eval_rows == 300
    assert _cli("--pooling", "mean").model.pooling == "mean" and _cli().model.pooling == "cls"
    assert _cli("--dev-disjoint").data.dev_disjoint and not _cli().data.dev_disjoint


def test_help_names_a_default_for_every_setting():
    parser = build_parser()
    distill = next(a for a in parser._subparsers._group_actions[0].choices.values() if a.prog.endswith(" distill"))
    helps = {a.dest: a.help or "" for a in distill._actions if isinstance(a, argparse.Action)}
    covered = {key for _, key in SETTING_FLAGS.values()}
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            if f.name in ("task", "data_dir", "train_file", "eval_file", "text_columns", "label_column", "allow_hub",
                          "eval_at_start", "baselines", "lr_embeds") or section == "data" and f.name == "seed":
                continue                                   # flags of their own (--task, --no-hub, ...) say it
            assert f.name in covered, f"{section}.{f.name} has no flag"
    for dest, (section, key) in SETTING_FLAGS.items():
        if dest in helps:
            assert "default" in helps[dest], dest
    assert "default cpu 64, paper 512" in helps["seq_len"]
