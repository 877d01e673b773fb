"""The selection split: carved from train, stratified, seeded, never in real batches; selection never reads
the evaluation split."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from distill_core.data import DataConfig, carve_dev, load_task_data, Split
from distill_core.distiller import Distiller, prepare
from distill_core.errors import UserError
from test_distiller import demo_config

pytestmark = pytest.mark.slow


def test_the_dev_split_is_stratified_seeded_and_disjoint(shared_data):
    cfg = DataConfig(task="sst2", data_dir=str(shared_data), allow_hub=False)
    task = load_task_data(cfg)
    again = load_task_data(cfg)
    other = load_task_data(dataclasses.replace(cfg, seed=1))
    assert len(task.dev) == 2000                                  # 5 % of 67,349, capped at 2,000
    assert task.dev.texts == again.dev.texts                      # the same seed carves the same rows
    assert task.dev.texts != other.dev.texts
    train, dev, evaluation = set(task.train.texts), set(task.dev.texts), set(task.eval.texts)
    assert len(task.train) + len(task.dev) == 67_349
    # SST-2 repeats a few phrases across rows, so compare rows by position, and texts only as a sanity check
    assert len(dev & evaluation) <= 2 and len(dev - train) >= 1900
    assert abs(task.dev.labels.mean() - task.train.labels.mean()) < 0.002   # stratified


def test_carve_dev_takes_each_class_in_proportion_and_keeps_every_row_once():
    labels = np.array([0] * 90 + [1] * 10)
    split = Split([(f"t{i}",) for i in range(100)], labels, "x")
    kept, dev = carve_dev(split, 2, 0.2, 2000, seed=3)
    assert len(dev) == 20 and int((dev.labels == 1).sum()) == 2
    assert sorted(kept.texts + dev.texts) == sorted(split.texts) and not set(kept.texts) & set(dev.texts)


def test_train_min_words_keeps_long_rows_before_the_dev_split_is_carved(shared_data):
    cfg = DataConfig(task="sst2", data_dir=str(shared_data), allow_hub=False, train_min_words=10)
    task = load_task_data(cfg)
    words = [len(t[0].split()) for t in task.train.texts + task.dev.texts]
    assert min(words) >= 10
    assert len(task.train) + len(task.dev) == 25_152              # SST-2's train rows of 10 words or more
    assert len(task.eval) == 872 and min(len(t[0].split()) for t in task.eval.texts) < 10   # evaluation untouched
    with pytest.raises(UserError, match="train_min_words=500"):
        load_task_data(dataclasses.replace(cfg, train_min_words=500))
    with pytest.raises(UserError, match="train_min_words must be >= 1"):
        load_task_data(dataclasses.replace(cfg, train_min_words=0))


class _Untouchable:
    """Stands in for the evaluation split: any use fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"selection read the evaluation split ({name})")

    def __len__(self):
        raise AssertionError("selection read the evaluation split (len)")


def test_periodic_validation_best_and_baselines_never_read_the_evaluation_split(tmp_path, bundled):
    cfg = demo_config(outer_steps=4, eval_every=2, eval_at_start=True, baselines=True)
    prep = prepare(cfg, learner=bundled)
    assert prep.dev is not None and prep.selection_name == "dev"
    real_batches = set()
    prep = dataclasses.replace(prep, eval=_Untouchable())
    d = Distiller(cfg, run_dir=tmp_path / "r", prepared=prep)
    original = d.batcher.next_indices

    def spy():
        idx = original()
        real_batches.update(idx)
        return idx

    d.batcher.next_indices = spy
    assert d.run_loop()["status"] == "done"
    events = d.run.metrics()
    assert {e["split"] for e in events if e["type"] in ("eval", "baseline")} == {"dev"}
    assert next(e for e in events if e["type"] == "start")["eval_split"] == "dev"
    dev_texts = set(prep.task.dev.texts)
    assert len(set(prep.task.train.texts) | dev_texts) == len(prep.task.train) + len(prep.task.dev)  # demo: unique
    assert real_batches and not {prep.task.train.texts[i] for i in real_batches} & dev_texts
