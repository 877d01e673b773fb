"""MRPC like the paper: the GLUE score is the mean of accuracy and F1, per learner, and the Results view compares it."""

from __future__ import annotations

import numpy as np
import pytest

from distill_core.evaluation import compute_metrics, majority_baseline
from distill_core.views.results import glue_score, paper_value, results_frame


def test_the_glue_score_is_the_mean_of_accuracy_and_f1_on_a_hand_example():
    labels, preds = np.array([1, 1, 1, 0]), np.array([1, 1, 0, 0])
    m = compute_metrics(preds, labels, ("accuracy", "f1", "glue"))
    assert m["accuracy"] == pytest.approx(75.0) and m["f1"] == pytest.approx(80.0)      # tp 2, fp 0, fn 1
    assert m["glue"] == pytest.approx(77.5)


def test_our_mrpc_majority_row_is_the_papers_74_8(shared_data):
    from distill_core.data import DataConfig, load_task_data

    task = load_task_data(DataConfig(task="mrpc", data_dir=str(shared_data), allow_hub=False))

    class _Labels:            # majority_baseline reads only the labels of the split it scores
        labels = __import__("torch").as_tensor(task.eval.labels)

        def __len__(self):
            return len(task.eval.labels)

    res = majority_baseline(task.train.labels, _Labels(), task.spec.metrics, task.spec.num_labels)["metrics"]
    assert round(res["accuracy"]["mean"], 1) == 68.4 and round(res["f1"]["mean"], 1) == 81.2
    assert round(res["glue"]["mean"], 1) == 74.8 == paper_value({"task": "mrpc", "setting": "majority"})


def test_the_results_table_shows_the_papers_metric_beside_the_paper():
    rows = [{"task": "mrpc", "setting": "HL+AL", "metrics": {"accuracy": {"mean": 70.0, "std": 1.0, "n": 100},
                                                             "f1": {"mean": 80.0, "std": 1.0, "n": 100}}},
            {"task": "sst2", "setting": "HL+AL", "metrics": {"accuracy": {"mean": 80.0, "std": 1.0, "n": 100}}}]
    frame = results_frame(rows)
    assert list(frame["ours, paper's metric"]) == ["75.0", "80.0 ± 1.0"]
    assert glue_score(rows[0]["metrics"])["mean"] == 75.0 and list(frame["paper (BERT-base)"]) == ["76.4", "90.1"]


def test_the_results_table_gives_the_spread_across_distillation_seeds_in_the_papers_metric():
    from distill_core.evaluation import aggregate_seeds

    # two seeds of two learners each: per-seed GLUE means 75 and 79, so 77 ± 2.83 (sample std) across seeds
    per_seed = [[{"accuracy": 70.0, "f1": 80.0, "glue": 75.0}, {"accuracy": 70.0, "f1": 80.0, "glue": 75.0}],
                [{"accuracy": 74.0, "f1": 84.0, "glue": 79.0}, {"accuracy": 74.0, "f1": 84.0, "glue": 79.0}]]
    mrpc = {"task": "mrpc", "setting": "SL+AL", "seeds": aggregate_seeds(per_seed),
            "metrics": {"accuracy": {"mean": 72.0, "std": 2.0, "n": 4}, "f1": {"mean": 82.0, "std": 2.0, "n": 4},
                        "glue": {"mean": 77.0, "std": 2.0, "n": 4}}}
    once = {"task": "sst2", "setting": "HL", "seeds": aggregate_seeds(per_seed[:1]),
            "metrics": {"accuracy": {"mean": 70.0, "std": 0.0, "n": 2}}}
    long = {"task": "sst2", "setting": "HL+AL", "tag": "long", "metrics": {"accuracy": {"mean": 80.0, "std": 1.0, "n": 3}}}
    frame = results_frame([mrpc, once, long])
    assert list(frame["across seeds"]) == ["77.0 ± 2.8 (2 seeds)", "", ""]
    assert list(frame["setting"]) == ["SL+AL", "HL", "HL+AL (long)"]


def test_the_before_after_table_puts_the_same_row_of_an_earlier_study_beside_ours():
    from distill_core.evaluation import aggregate_seeds

    acc = lambda mean: {"accuracy": {"mean": mean, "std": 1.0, "n": 100}}   # noqa: E731
    ours = [{"task": "sst2", "setting": "HL+AL", "metrics": acc(76.0)},
            {"task": "sst2", "setting": "HL+AL", "tag": "long", "metrics": acc(81.0)},
            {"task": "sst2", "setting": "SL+AL", "samples_per_class": 3, "inner_steps": 3, "same_data": False,
             "metrics": acc(78.0)},
            {"task": "mrpc", "setting": "SL+AL", "metrics": {"accuracy": {"mean": 70.0, "std": 1.0, "n": 100},
                                                            "f1": {"mean": 80.0, "std": 1.0, "n": 100}}}]
    per_seed = [[{"accuracy": 72.0}], [{"accuracy": 76.0}]]
    earlier = [{"task": "sst2", "setting": "HL+AL", "metrics": acc(74.3), "seeds": aggregate_seeds(per_seed)},
               {"task": "sst2", "setting": "SL+AL", "samples_per_class": 3, "inner_steps": 3, "same_data": True,
                "metrics": acc(60.0)},       # same shape, other data rule: another row
               {"task": "mrpc", "setting": "SL+AL", "metrics": {"accuracy": {"mean": 68.0, "std": 1.0, "n": 100},
                                                               "f1": {"mean": 81.0, "std": 1.0, "n": 100}}}]
    frame = results_frame(ours, earlier)
    # across seeds where the earlier row had several (74 ± 2.8), "–" where it had no such row, GLUE for MRPC
    assert list(frame["previous study"]) == ["74.0 ± 2.8 (2 seeds)", "–", "–", "74.5"]
    assert "previous study" not in results_frame(ours).columns


def test_the_results_table_says_what_the_dev_split_chose_for_each_row():
    from distill_core.views.results import chosen_on_dev

    acc = {"accuracy": {"mean": 80.0, "std": 1.0, "n": 100}}
    distilled = {"task": "sst2", "setting": "HL+AL", "metrics": acc, "config": {
        "grid": {"outer_lr": 0.03, "inner_lr_init": 0.3},
        "scored": [{"checkpoint": "best", "step": 2625}, {"checkpoint": "last", "step": 4500}]}}
    tuned = {"task": "sst2", "setting": "random-1-shot-tuned", "metrics": acc,
             "config": {"lr": 0.01, "grid": [0.01, 0.1, 1.0]}}
    plain = {"task": "sst2", "setting": "random-1-shot", "metrics": acc, "config": {"lr": 0.3, "lr_from": "grid"}}
    full = {"task": "sst2", "setting": "full", "metrics": acc,
            "config": {"per_learner": [{"epochs": 1.47, "stopped_early": True}, {"epochs": 0.98, "stopped_early": True},
                                       {"epochs": 2.06, "stopped_early": False}]}}
    capped = {**full, "config": {"per_learner": [{"epochs": 3.0, "stopped_early": False}] * 3}}
    assert [chosen_on_dev(r) for r in (distilled, tuned, plain, full)] == [
        "outer lr 0.03, inner-lr init 0.3; best-on-dev checkpoints (steps 2625, 4500)",
        "inner lr 0.01 of 0.01, 0.1, 1", "inner lr 0.3, the distilled rows' init",
        "stopped on dev after 1.0-2.1 epochs"]
    assert chosen_on_dev(capped) == "best dev check of 3.0 epochs (the cap; none stopped early)"
    assert chosen_on_dev({"task": "sst2", "setting": "majority", "metrics": acc}) == ""
    assert list(results_frame([distilled, full])["chosen on dev"]) == [chosen_on_dev(distilled), chosen_on_dev(full)]
