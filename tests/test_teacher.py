"""Teacher targets for the outer loss (--teacher-weight, beyond the paper): trained once, cached for exactly
the split and recipe they were made for, mixed with the gold labels, and drawn by the distiller's batches."""

from __future__ import annotations

import json

import pytest
import torch

from distill_core.data import EncodedSplit
from distill_core.distiller import DistillConfig, Distiller
from distill_core.errors import UserError
from distill_core.teacher import TeacherRecipe, mixed_targets, teacher_targets, train_fingerprint
from test_distiller import demo_config, demo_prepared  # noqa: F401  (fixture)

RECIPE = TeacherRecipe(steps=16, batch_size=32, lr=1e-4)


def test_a_teacher_is_trained_once_and_cached_for_its_split(demo_prepared, tmp_path):  # noqa: F811
    learner, train = demo_prepared.learner, demo_prepared.train
    first = teacher_targets(learner, train, RECIPE, cache_dir=tmp_path)
    assert not first.info["cached"] and first.info["cpu_seconds"] > 0
    assert first.probs.shape == (len(train), 2)
    torch.testing.assert_close(first.probs.sum(-1), torch.ones(len(train)))
    majority = float(torch.bincount(train.labels).max()) / len(train)
    # 16 batches of ordinary fine-tuning already beat the majority class on the demo's train rows
    assert first.info["train_accuracy"] > majority + 0.1
    assert first.info["train_accuracy"] == pytest.approx(
        float((first.probs.argmax(-1) == train.labels).float().mean()), abs=1e-4)

    again = teacher_targets(learner, train, RECIPE, cache_dir=tmp_path)
    assert again.info["cached"] and again.info["cpu_seconds"] == first.info["cpu_seconds"]
    torch.testing.assert_close(again.probs, first.probs, rtol=0, atol=0)

    fewer = EncodedSplit(train.input_ids[1:], train.token_type_ids[1:], train.labels[1:])
    assert train_fingerprint(fewer) != train_fingerprint(train)
    other = teacher_targets(learner, fewer, RECIPE, cache_dir=tmp_path)
    assert not other.info["cached"] and other.probs.shape[0] == len(train) - 1
    assert len(list(tmp_path.glob("teacher-*.safetensors"))) == 2


def test_a_torn_cache_file_is_trained_again_not_trusted(demo_prepared, tmp_path):  # noqa: F811
    learner, train = demo_prepared.learner, demo_prepared.train
    made = teacher_targets(learner, train, RECIPE, cache_dir=tmp_path)
    path = tmp_path / made.info["path"].rsplit("/", 1)[-1]
    path.write_bytes(path.read_bytes()[:100])
    again = teacher_targets(learner, train, RECIPE, cache_dir=tmp_path)
    assert not again.info["cached"]
    torch.testing.assert_close(again.probs, made.probs)     # same recipe and seed: the same teacher


def test_mixed_targets_are_distributions_between_gold_and_teacher():
    labels = torch.tensor([0, 1, 1])
    probs = torch.tensor([[0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])
    torch.testing.assert_close(mixed_targets(labels, probs, 0.0), torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]))
    torch.testing.assert_close(mixed_targets(labels, probs, 1.0), probs)
    half = mixed_targets(labels, probs, 0.5)
    torch.testing.assert_close(half[0], torch.tensor([0.6, 0.4]))
    torch.testing.assert_close(half.sum(-1), torch.ones(3))


def test_the_distiller_draws_teacher_targets_and_reports_the_teacher(demo_prepared, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("DISTILL_TEACHER_DIR", str(tmp_path))
    events = []
    d = Distiller(demo_config(teacher_weight=0.7, teacher_steps=RECIPE.steps), prepared=demo_prepared,
                  callbacks=[events.append])
    gold = demo_prepared.train.labels
    assert d.outer_train.labels.dtype == torch.float32 and d.outer_train.labels.shape == (len(gold), 2)
    teacher = teacher_targets(demo_prepared.learner, demo_prepared.train,
                              TeacherRecipe(steps=RECIPE.steps), cache_dir=tmp_path)   # the cached one
    torch.testing.assert_close(d.outer_train.labels, mixed_targets(gold, teacher.probs, 0.7))
    batch = d.batcher.next()
    assert all(b.labels.dtype == torch.float32 for b in batch)
    d.run_loop()
    start = next(e for e in events if e["type"] == "start")
    assert start["teacher"]["steps"] == RECIPE.steps and start["teacher"]["cpu_seconds"] > 0
    json.dumps(start)   # the event reaches metrics.jsonl as JSON

    plain = Distiller(demo_config(), prepared=demo_prepared)
    assert plain.outer_train is demo_prepared.train and plain.teacher is None


@pytest.mark.parametrize("field,value", [("teacher_weight", 1.5), ("teacher_weight", -0.1),
                                         ("teacher_steps", 0), ("teacher_steps", 2.5)])
def test_bad_teacher_settings_are_refused_by_name(field, value):
    with pytest.raises(UserError, match=field):
        DistillConfig(**{field: value}).validate()
