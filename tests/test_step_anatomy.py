"""Step anatomy: learners scored with each part's inner-step move undone, on the bundled model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from distill_core.data import DataConfig
from distill_core.distilled import DistilledConfig, DistilledData, inverse_softplus
from distill_core.distiller import RunConfig, prepare
from distill_core.errors import UserError
from distill_core.evaluation import EvalConfig, evaluate_distilled
from distill_core.step_anatomy import (ALL_BUT, ATTENTION_LOSS_ONLY, ENCODER_ONLY, EVERY_MOVE, HEAD_ONLY,
                                       LABEL_LOSS_ONLY, StepAnatomy, move_variants,
                                       parameter_group, parameter_groups, relative_moves, step_anatomy)
from distill_core.views.anatomy import anatomy_caption, anatomy_figure, anatomy_lines

REPO = Path(__file__).resolve().parent.parent
STUDY_RUN = REPO / "docs" / "reproduction" / "runs" / "sst2-sl-al-1x1-long"


@pytest.fixture(scope="module")
def demo(bundled):
    prep = prepare(RunConfig(data=DataConfig(task="demo", allow_hub=False), distilled=DistilledConfig(seq_len=8)),
                   learner=bundled)
    d = DistilledData(DistilledConfig(seq_len=8, attention_labels="cls", inner_lr_init=0.5), 2, bundled.hidden_size,
                      bundled.num_layers, bundled.num_heads, label_names=["negative", "positive"],
                      generator=torch.Generator().manual_seed(0))
    return prep, d


def test_every_parameter_has_a_part_and_the_parts_come_in_model_order(bundled):
    groups = parameter_groups(bundled, bundled.inner_names)
    assert groups == ["embeddings"] + [f"layer {i}" for i in range(bundled.num_layers)] + ["pooler", "head"]
    assert all(parameter_group(k, bundled) == "head" for k in bundled.head_names)
    assert parameter_group("bert.encoder.layer.11.output.dense.weight", bundled) == "layer 11"
    names = [n for n, _ in move_variants(groups)]
    assert names[:3] == [EVERY_MOVE, HEAD_ONLY, ENCODER_ONLY]
    assert names[3:] == [ALL_BUT + g for g in groups if g != "head"]
    kept = dict(move_variants(groups))
    assert kept[HEAD_ONLY] == {"head"} and "head" not in kept[ENCODER_ONLY]
    assert kept[ALL_BUT + "layer 0"] == set(groups) - {"layer 0"}


def test_every_move_is_the_learner_evaluation_scores_and_nothing_moved_is_zero(bundled, demo):
    prep, d = demo
    a = step_anatomy(bundled, d, prep.eval, prep.task.spec.metrics, learners=2, seed=7)
    ev = evaluate_distilled(bundled, d, prep.eval, prep.task.spec.metrics, EvalConfig(learners=2, seed=7))
    assert a.variants[EVERY_MOVE]["accuracy"] == ev["metrics"]["accuracy"]
    assert set(a.variants) == {n for n, _ in move_variants(a.groups)} | {LABEL_LOSS_ONLY, ATTENTION_LOSS_ONLY}
    assert a.eval_rows == len(prep.eval) and a.learners == 2
    assert all(v["mean"] > 0 for v in a.relative_move.values())
    theta0 = bundled.fresh_params(torch.Generator().manual_seed(0))
    assert set(relative_moves(bundled, theta0, theta0).values()) == {0.0}
    again = StepAnatomy.from_dict(json.loads(json.dumps(a.to_dict())))
    assert again == a
    assert "with every move" in anatomy_caption(a) and len(anatomy_lines(a)) > len(a.variants)
    assert len(anatomy_figure(a).data) == 2


def test_without_a_step_every_variant_scores_the_same(bundled, demo):
    prep, d = demo
    still = d.clone()
    with torch.no_grad():
        still.lr_raw.fill_(inverse_softplus(1e-12))   # the step moves nothing that a float32 can see
    a = step_anatomy(bundled, still, prep.eval, prep.task.spec.metrics, learners=1)
    scores = {v["accuracy"]["mean"] for v in a.variants.values()}
    assert len(scores) == 1


def test_bad_settings_are_refused(bundled, demo):
    prep, d = demo
    with pytest.raises(UserError, match="learners must be >= 1"):
        step_anatomy(bundled, d, prep.eval, prep.task.spec.metrics, learners=0)
    with pytest.raises(UserError, match="stopped after 0 of 1"):
        step_anatomy(bundled, d, prep.eval, prep.task.spec.metrics, learners=1, should_stop=lambda: True)


def test_the_study_s_sst2_data_teaches_through_the_encoder_not_the_head(bundled, shared_data):
    """The finding the docs report, on the study's own SST-2 SL+AL seed-0 data: the head's move alone
    leaves a learner near chance, the encoder's alone keeps nearly all of it, and layer 0's move matters
    more than the last layer's."""
    cfg = RunConfig.from_dict(json.loads((STUDY_RUN / "config.json").read_text()))
    cfg.data.data_dir, cfg.data.eval_rows, cfg.data.train_rows = str(shared_data), 300, 500   # train is not read
    prep = prepare(cfg, learner=bundled)
    d = DistilledData.load(STUDY_RUN / "checkpoints" / "last.safetensors", expect=prep.learner.fingerprint())
    a = step_anatomy(prep.learner, d, prep.eval, prep.task.spec.metrics, learners=1)
    every = a.variants[EVERY_MOVE]["accuracy"]["mean"]
    assert every > 78
    assert a.variants[HEAD_ONLY]["accuracy"]["mean"] < 60
    assert a.drop(ENCODER_ONLY) < 3
    assert a.drop(ALL_BUT + "layer 0") > a.drop(ALL_BUT + "layer 5") + 3
    assert a.relative_move["pooler"]["mean"] > a.relative_move["layer 5"]["mean"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    from distill_core.cli import main

    out = tmp_path_factory.mktemp("anatomy") / "r"
    assert main(["distill", "--task", "demo", "--no-hub", "--seq-len", "8", "--real-batch", "4", "--max-length", "16",
                 "--outer-steps", "2", "--eval-every", "1", "--eval-learners", "1", "--no-baselines",
                 "--out", str(out)]) == 0
    return out


def test_the_cli_measures_records_and_refuses(demo_run, capsys):
    from distill_core.cli import main
    from distill_core.runs import RunDir
    from distill_core.step_anatomy import recorded_anatomy

    capsys.readouterr()
    assert main(["inspect", str(demo_run), "--anatomy", "--learners", "1", "--eval-rows", "40"]) == 0
    text = capsys.readouterr().out
    assert "with every move" in text and "all but layer 0" in text and "relative move" in text
    assert main(["inspect", str(demo_run), "--anatomy", "--learners", "2", "--split", "dev",
                 "--checkpoint", "step-000001", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    run = RunDir(demo_run)
    assert set(run.results()["anatomy"]) == {"last|validation|1|seed 1234", "step-000001|dev|2|seed 1234"}
    assert printed == run.results()["anatomy"]["step-000001|dev|2|seed 1234"]
    assert printed["eval_rows"] == len(prepare(RunConfig.from_dict(run.config())).dev)
    step = run.results()["anatomy"]["last|validation|1|seed 1234"]["step"]
    assert [a.learners for a in recorded_anatomy(run, "last", step)] == [1]
    assert recorded_anatomy(run, "last", step + 1) == []              # `last` moved on: not this data any more
    before = run.results()
    assert main(["inspect", str(demo_run), "--anatomy", "--split", "test"]) == 2
    assert main(["inspect", str(demo_run), "--anatomy", "--learners", "0"]) == 2
    assert "--learners must be >= 1" in capsys.readouterr().err
    assert run.results() == before                                    # a refused call writes nothing


def test_the_job_runs_it_away_from_the_ui(demo_run):
    from distill_core import jobs
    from distill_core.runs import RunDir

    run = RunDir(demo_run)
    registry = jobs.JobRegistry()
    job = jobs.start_anatomy(run, "best", 1, "dev", registry, in_process=True)
    assert job.join(120)
    snap = job.snapshot(events=False)
    assert snap.status == "done" and snap.done_units == 1, snap.message
    assert "best|dev|1|seed 1234" in run.results()["anatomy"]
    with pytest.raises(UserError, match="no checkpoint 'nope'"):
        jobs.start_anatomy(run, "nope", 1, "dev", registry, in_process=True)
    with pytest.raises(UserError, match="learners must be >= 1"):
        jobs.start_anatomy(run, "best", 0, "dev", registry, in_process=True)


def test_fine_tune_on_named_loss_terms(bundled, demo):
    from distill_core.inner import LOSS_TERMS, fine_tune

    _, d = demo
    theta0 = bundled.fresh_params(torch.Generator().manual_seed(3))
    method = fine_tune(bundled, theta0, d)
    every = fine_tune(bundled, theta0, d, LOSS_TERMS)
    assert all(torch.equal(method[k], every[k]) for k in method)          # every term is the method's step
    none = fine_tune(bundled, theta0, d, ())
    assert all(torch.equal(none[k], theta0[k]) for k in theta0)           # no term: no move
    task = fine_tune(bundled, theta0, d, ("task",))
    attention = fine_tune(bundled, theta0, d, ("attention",))
    head = bundled.head_names[0]
    assert torch.equal(attention[head], theta0[head])                     # attention labels never reach the head
    assert not torch.equal(task[head], theta0[head])
    moved = [k for k in theta0 if k not in bundled.head_names and not torch.equal(attention[k], theta0[k])]
    assert moved and not any(".pooler." in k for k in moved)              # the pooler sits above every attention
    with pytest.raises(ValueError, match="unknown inner-loss terms"):
        fine_tune(bundled, theta0, d, ("attention", "labels"))


def test_the_headline_metric_is_the_task_s_and_must_be_one_of_its_metrics(bundled, demo):
    prep, d = demo
    metrics = ("accuracy", "f1", "glue")
    a = step_anatomy(bundled, d, prep.eval, metrics, learners=1, metric="glue")
    assert a.metric == "glue" and set(a.variants[EVERY_MOVE]) == set(metrics)
    assert "glue" in anatomy_caption(a)
    with pytest.raises(UserError, match="metric 'mcc' is not one of"):
        step_anatomy(bundled, d, prep.eval, metrics, learners=1, metric="mcc")
