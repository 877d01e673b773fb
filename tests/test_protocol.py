"""Fair baselines and distillation seeds: the tuned k-shot lr is the argmin of dev loss; seed aggregates by hand."""

from __future__ import annotations

import math

import pytest
import torch

from distill_core.evaluation import EvalConfig, aggregate_seeds, tuned_kshot_baseline

pytestmark = pytest.mark.slow


def test_seed_aggregates_on_a_hand_example():
    per_seed = [[{"accuracy": 80.0}, {"accuracy": 82.0}],         # mean 81, var 1
                [{"accuracy": 70.0}, {"accuracy": 76.0}]]         # mean 73, var 9
    agg = aggregate_seeds(per_seed)["accuracy"]
    assert agg["mean"] == pytest.approx(77.0)
    assert agg["std"] == pytest.approx(math.sqrt(((81 - 77) ** 2 + (73 - 77) ** 2) / 1))   # ddof=1 over seeds
    assert agg["pooled_std"] == pytest.approx(math.sqrt((1 + 9) / 2))
    assert agg["seeds"] == 2 and agg["learners"] == [2, 2]


def test_the_tuned_kshot_baseline_picks_the_argmin_of_dev_loss(bundled):
    from distill_core.distiller import prepare
    from test_distiller import demo_config

    prep = prepare(demo_config(), learner=bundled)
    grid = (0.001, 0.3, 30.0)
    res = tuned_kshot_baseline(bundled, prep.train, prep.dev, prep.eval, prep.task.spec.metrics, k=1, inner_steps=1,
                               grid=grid, tune_learners=2, config=EvalConfig(learners=2))
    losses = res["dev_loss"]
    assert set(losses) == set(grid) and len({round(v, 6) for v in losses.values()}) == 3   # the grid points differ
    assert res["lr"] == min(grid, key=losses.get) and res["tuned_on"] == "dev"
    assert res["metrics"]["accuracy"]["n"] == 2


def test_seeds_distil_different_data_and_evaluate_together(tmp_path, capsys):
    import json

    from distill_core.cli import main
    from distill_core.distilled import DistilledData

    out = tmp_path / "s"
    assert main(["distill", "--task", "demo", "--no-hub", "--seq-len", "8", "--real-batch", "4", "--max-length", "16",
                 "--outer-steps", "2", "--eval-every", "0", "--eval-learners", "1", "--no-baselines", "--no-eval-at-start",
                 "--seeds", "2", "--seed", "5", "--out", str(out)]) == 0
    runs = [tmp_path / "s-seed5", tmp_path / "s-seed6"]
    a, b = (DistilledData.load(r / "checkpoints" / "last.safetensors").embeds for r in runs)
    assert not torch.allclose(a, b)                                   # each seed distils its own data
    dev = [json.loads((r / "config.json").read_text())["data"]["seed"] for r in runs]
    assert dev[0] == dev[1]                                           # the same dev split for every seed
    capsys.readouterr()
    assert main(["evaluate", *map(str, runs), "--learners", "2"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    per_run = [m["accuracy"]["mean"] for m in report["per_run"]]
    assert report["across_seeds"]["accuracy"]["mean"] == pytest.approx(sum(per_run) / 2)
    assert report["across_seeds"]["accuracy"]["seeds"] == 2


def test_full_data_fine_tuning_selects_on_dev_stops_early_and_reports_epochs(bundled):
    from distill_core.distiller import prepare
    from distill_core.evaluation import converged_finetune_baseline
    from test_distiller import demo_config

    prep = prepare(demo_config(), learner=bundled)
    res = converged_finetune_baseline(bundled, prep.train, prep.dev, prep.eval, prep.task.spec.metrics, epochs=2.0,
                                      batch_size=16, learners=2, check_every=3, patience=1)
    total = math.ceil(2.0 * len(prep.train) / 16)
    assert res["metrics"]["accuracy"]["n"] == 2 and res["selected_on"] == "dev" and len(res["learners"]) == 2
    for run in res["learners"]:
        assert run["best_step"] % 3 == 0 or run["best_step"] == total
        assert run["best_step"] <= run["steps"] <= total and run["epochs"] == pytest.approx(run["steps"] * 16 / len(prep.train))
        assert run["stopped_early"] == (run["steps"] < total)
        # patience 1: a stop comes at the first check after the best one
        assert not run["stopped_early"] or run["steps"] == run["best_step"] + 3
    # interrupted after learner 0: a re-run keeps it and trains only learner 1, to the same scores
    kept: list[dict] = []
    first = converged_finetune_baseline(bundled, prep.train, prep.dev, prep.eval, prep.task.spec.metrics, epochs=2.0,
                                        batch_size=16, learners=1, check_every=3, patience=1,
                                        on_learner=lambda i, part: kept.append(part))
    assert len(kept) == 1 and kept[0]["scores"] == first["per_learner"][0] == res["per_learner"][0]
    trained: list[int] = []
    resumed = converged_finetune_baseline(bundled, prep.train, prep.dev, prep.eval, prep.task.spec.metrics,
                                          epochs=2.0, batch_size=16, learners=2, check_every=3, patience=1,
                                          finished=kept, on_learner=lambda i, part: trained.append(i))
    assert trained == [1] and resumed["per_learner"] == res["per_learner"]
    assert resumed["learners"][0] == kept[0]["run"]
