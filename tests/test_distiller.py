"""The outer loop with the bundled model: it learns, resumes exactly, stops cleanly, and survives NaN."""

from __future__ import annotations

import dataclasses
import json
import threading

import pytest
import torch

from distill_core.data import DataConfig, collate
from distill_core.distilled import DistilledConfig, DistilledData
from distill_core.distiller import DistillConfig, Distiller, RunConfig, prepare
from distill_core.inner import fine_tune, real_loss_and_grad
from distill_core.runs import RunDir

pytestmark = pytest.mark.slow


def demo_config(**distill) -> RunConfig:
    return RunConfig(data=DataConfig(task="demo", allow_hub=False, real_batch_size=16),
                     distilled=DistilledConfig(seq_len=8, inner_lr_init=0.1),
                     distill=DistillConfig(**{"outer_steps": 4, "eval_every": 0, "eval_learners": 1,
                                              "eval_at_start": False, "baselines": False, "lr_embeds": 0.05,
                                              "lr_labels": 0.05, "lr_attention": 0.05, "lr_inner_lr": 0.05,
                                              **distill}))


@pytest.fixture(scope="module")
def demo_prepared(bundled):
    return prepare(demo_config(), learner=bundled)


def test_short_distillation_on_sst2_lowers_the_real_loss(shared_data, bundled):
    cfg = RunConfig(data=DataConfig(task="sst2", data_dir=str(shared_data), train_rows=2000, eval_rows=100,
                                    allow_hub=False),
                    distilled=DistilledConfig(seq_len=16, init="random", inner_lr_init=0.1),
                    distill=DistillConfig(outer_steps=15, lr_embeds=0.1, lr_labels=0.1, lr_attention=0.1,
                                          lr_inner_lr=0.1, warmup_ratio=0.0, eval_at_start=False, eval_every=0, eval_learners=1,
                                          baselines=False))
    d = Distiller(cfg, prepared=prepare(cfg, learner=bundled))
    learner = d.prep.learner
    held = [collate(d.prep.train, list(range(i, i + 64))) for i in range(1000, 1256, 64)]  # never a seed's batch

    def held_loss() -> float:
        losses = []
        for s in range(3):
            theta = fine_tune(learner, learner.fresh_params(torch.Generator().manual_seed(100 + s)), d.distilled)
            losses.append(real_loss_and_grad(learner, theta, held, need_grad=False)[0])
        return sum(losses) / len(losses)

    before = held_loss()
    steps = []
    d.add_callback(lambda e: steps.append(e) if e["type"] == "step" else None)
    summary = d.run_loop()
    after = held_loss()
    assert summary["status"] == "done" and len(steps) == 15
    assert after < before - 0.002, (before, after)


def assert_resume_is_exact(tmp_path, prepared, **distill) -> Distiller:
    """Stop a 4-step run after step 2, resume it, and check it ends where an unbroken run does; the resumed
    Distiller comes back (its run in tmp_path / "b")."""
    straight = Distiller(demo_config(outer_steps=4, **distill), run_dir=tmp_path / "a", prepared=prepared)
    straight.run_loop()
    part = Distiller(demo_config(outer_steps=4, **distill), run_dir=tmp_path / "b", prepared=prepared)
    part.add_callback(lambda e: part.stop() if e["type"] == "step" and e["step"] == 2 else None)
    assert part.run_loop()["status"] == "stopped"
    assert json.loads((tmp_path / "b" / "state.json").read_text())["step"] == 2
    resumed = Distiller(demo_config(outer_steps=4, **distill), run_dir=tmp_path / "b", prepared=prepared,
                        resume=True)
    assert resumed.step == 2
    assert resumed.run_loop()["status"] == "done"
    for name, t in straight.distilled.learnable().items():
        torch.testing.assert_close(resumed.distilled.learnable()[name], t, rtol=1e-5, atol=1e-6)
    return resumed


def test_resume_continues_exactly(tmp_path, demo_prepared):
    resumed = assert_resume_is_exact(tmp_path, demo_prepared)
    records = [r for r in RunDir(tmp_path / "b").metrics() if r["type"] == "step"]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    cpu = [r["cpu_seconds"] for r in records]   # CPU time carries over the resume instead of starting again
    assert all(b > a for a, b in zip(cpu, cpu[1:])), cpu
    # the run's time stops with its loop: work the process does after it (scoring, say) is not the run's
    spent = resumed.cpu_seconds
    assert spent >= cpu[-1]
    for s in range(3):
        fine_tune(resumed.prep.learner, resumed.prep.learner.fresh_params(torch.Generator().manual_seed(s)),
                  resumed.distilled)
    assert resumed.cpu_seconds == spent


def test_run_directory_contents(tmp_path, demo_prepared):
    d = Distiller(demo_config(outer_steps=2, eval_every=1, eval_at_start=True, baselines=True),
                  run_dir=tmp_path / "r", prepared=demo_prepared)
    d.run_loop()
    run = RunDir(tmp_path / "r")
    assert run.config()["distilled"]["seq_len"] == 8 and run.config()["demo"] is True
    kinds = [r["type"] for r in run.metrics()]
    assert kinds[0] == "start" and kinds[-1] == "done" and kinds.count("eval") == 3
    assert {r["name"] for r in run.metrics() if r["type"] == "baseline"} == {"majority", "random-1-shot"}
    assert run.list_checkpoints() == ["step-000000", "step-000001", "step-000002", "best", "last"]
    loaded = DistilledData.load(run.checkpoint("last"), expect=demo_prepared.learner.fingerprint())
    torch.testing.assert_close(loaded.embeds, d.distilled.embeds.detach())
    assert run.results()["distillation"]["status"] == "done"


def test_non_finite_values_stop_the_run_and_keep_the_good_checkpoint(tmp_path, demo_prepared):
    cfg = demo_config(outer_steps=6, eval_at_start=True)
    cfg.distilled.inner_lr_init = 1e30  # the inner step overflows the learner: the real loss is not finite
    d = Distiller(cfg, run_dir=tmp_path / "nan", prepared=demo_prepared)
    summary = d.run_loop()
    assert summary["status"] == "error" and "non-finite" in summary["message"]
    run = RunDir(tmp_path / "nan")
    assert run.metrics()[-1]["type"] == "error"
    good = DistilledData.load(run.checkpoint("last"))  # loads: finite, from before the blow-up
    assert all(torch.isfinite(t).all() for t in good.learnable().values())


def test_stop_from_another_thread(tmp_path, demo_prepared):
    d = Distiller(demo_config(outer_steps=500), run_dir=tmp_path / "s", prepared=demo_prepared)
    started = threading.Event()
    d.add_callback(lambda e: started.set() if e["type"] == "step" else None)
    worker = threading.Thread(target=d.run_loop)
    worker.start()
    assert started.wait(120)
    d.stop()
    worker.join(120)
    assert not worker.is_alive() and d.step < 500
    assert RunDir(tmp_path / "s").state()["step"] == d.step


@pytest.mark.parametrize("schedule", ["linear", "constant"])
def test_outer_lr_schedule(demo_prepared, schedule):
    d = Distiller(demo_config(outer_steps=20, warmup_ratio=0.1, schedule=schedule), prepared=demo_prepared)
    factors = [d._lr_factor(s) for s in range(20)]
    assert factors[:2] == [0.5, 1.0]  # warm-up over 2 steps
    if schedule == "linear":
        assert factors[2] == 1.0 and factors[11] == pytest.approx(0.5) and factors[19] == pytest.approx(1 / 18)
    else:
        assert factors[2:] == [1.0] * 18
    lrs = []  # the optimiser really follows the schedule: lr after step s is base * factor(s)
    d.add_callback(lambda e: lrs.append(d.optimizer.param_groups[0]["lr"]) if e["type"] == "step" else None)
    d.add_callback(lambda e: d.stop() if e["type"] == "step" and e["step"] == 3 else None)
    d.run_loop()
    base = d.config.distill.lr_embeds
    assert lrs == pytest.approx([base * f for f in factors[1:4]])


def test_real_fill_init_lays_real_examples_of_the_class_end_to_end(demo_prepared):
    from distill_core.distiller import _new_distilled

    cfg = demo_config()
    cfg.distilled = dataclasses.replace(cfg.distilled, seq_len=48, init="real-fill")
    d = _new_distilled(cfg, demo_prepared)
    padded = _new_distilled(dataclasses.replace(cfg, distilled=dataclasses.replace(cfg.distilled, init="real")),
                            demo_prepared)
    train, words = demo_prepared.train, demo_prepared.learner.word_embeddings()
    pad = demo_prepared.learner.tokenizer.pad_token_id or 0
    for r, first in enumerate(d.meta["init_examples"]):
        ids = train.input_ids[first]
        assert len(ids) < 48                                  # one demo example would leave padding ...
        assert torch.equal(d.embeds[r, :len(ids)], words[torch.as_tensor(ids)])   # ... it still comes first
        assert torch.equal(padded.embeds[r, len(ids):], words[pad].expand(48 - len(ids), -1))
        # ... and the rest is real tokens, not padding: embeddings of this vocabulary, none of them [PAD]
        tail = d.embeds[r, len(ids):]
        nearest = torch.cdist(tail, words).argmin(dim=1)
        assert torch.equal(words[nearest], tail) and not (nearest == pad).any()
        # the tail parses as whole examples of the sample's own class, each without its [CLS]
        same = [list(train.input_ids[i])[1:] for i in range(len(train)) if train.labels[i] == train.labels[first]]
        rest = nearest.tolist()
        while rest:
            match = next(x for x in same if rest[:len(x)] == x[:len(rest)])
            rest = rest[len(match):]
