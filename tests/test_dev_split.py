"""The selection split: carved from train, stratified, seeded, never in real batches; selection never reads
the evaluation split."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from distill_core.data import DataConfig, load_task_data, Split
from distill_core.dev_split import carve_dev
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


def _tree_rows() -> Split:
    """Sentences with every word-run phrase of theirs as rows too, as SST-2's train split is laid out."""
    sentences = [("a gripping and tender film", 1), ("a dull and lifeless mess", 0), ("the cast is wonderful", 1),
                 ("the plot is a mess", 0), ("tender moments abound", 1), ("nothing works at all", 0)]
    rows, labels = [], []
    for text, label in sentences:
        words = text.split()
        for i in range(len(words)):
            for j in range(i + 1, len(words) + 1):
                rows.append((" ".join(words[i:j]),))
                labels.append(label)
    return Split(rows, np.array(labels), "tree")


def test_a_disjoint_dev_split_takes_whole_rows_and_drops_what_lies_inside_them():
    split = _tree_rows()
    kept, dev = carve_dev(split, 2, 0.05, 2000, seed=0, disjoint=True)
    again, dev_again = carve_dev(split, 2, 0.05, 2000, seed=0, disjoint=True)
    whole = {t for (t,) in split.texts if not any(t != s and f" {t} " in f" {s} " for (s,) in split.texts)}
    assert whole == {"a gripping and tender film", "a dull and lifeless mess", "the cast is wonderful",
                     "the plot is a mess", "tender moments abound", "nothing works at all"}
    assert {t for (t,) in dev.texts} <= whole and set(dev.labels.tolist()) == {0, 1}
    for (d,) in dev.texts:                                      # nothing inside a dev row is trained on
        assert not any(f" {t} " in f" {d} " for (t,) in kept.texts)
    assert (kept.texts, dev.texts) == (again.texts, dev_again.texts)
    assert len(kept) + len(dev) < len(split)                    # the dev sentences' phrases left training
    # by row, the same share draws phrases that sit inside sentences training keeps
    _, plain = carve_dev(split, 2, 0.3, 2000, seed=0)
    assert any(t not in whole for (t,) in plain.texts)


def test_containment_is_by_whole_words_and_a_split_with_no_free_row_is_refused():
    from distill_core.dev_split import uncontained_rows

    # "good" is not inside "goodness me" (whole words); "bad" is inside "bad things"; a duplicate never counts
    texts = ["good", "goodness me", "bad", "bad things", "x y", "x"]
    assert uncontained_rows(texts).tolist() == [True, True, False, True, True, False]
    assert uncontained_rows(["same", "same", "other"]).tolist() == [False, False, True]
    # a pair's two texts (joined by a tab, as carve_dev joins them) never let a run of words match across them
    assert uncontained_rows(["y z", "x y\tz q"]).tolist() == [True, True]
    dups = Split([("a",), ("a",), ("b",), ("b",)], np.array([0, 0, 1, 1]), "dups.csv")
    with pytest.raises(UserError, match="dups.csv.*dev_disjoint"):
        carve_dev(dups, 2, 0.5, 10, seed=0, disjoint=True)


def test_the_disjoint_dev_split_of_sst2_is_whole_sentences_unseen_in_training(shared_data):
    cfg = DataConfig(task="sst2", data_dir=str(shared_data), allow_hub=False, dev_disjoint=True)
    task = load_task_data(cfg)
    assert len(task.dev) == 2000
    assert abs(task.dev.labels.mean() - task.train.labels.mean()) < 0.03
    words = sorted(len(t[0].split()) for t in task.dev.texts)
    assert words[len(words) // 2] >= 15                          # sentences, like validation (median 19)
    words_of = lambda t: f" {' '.join(t[0].split())} "              # noqa: E731  (SST-2 rows end in a space)
    joined = "\n".join(words_of(t) for t in task.train.texts)
    assert not any(words_of(t) in joined for t in task.dev.texts[::20])
    # carved by row, most dev rows sit inside a train row: the leak the option closes
    plain = load_task_data(dataclasses.replace(cfg, dev_disjoint=False))
    joined = "\n".join(words_of(t) for t in plain.train.texts)
    assert sum(words_of(t) in joined for t in plain.dev.texts[::20]) >= 0.8 * len(plain.dev.texts[::20])
