"""The training levers beyond the paper: a bounded inner lr keeps the gradient exact, and a meta-batch
of K draws is the mean of the K hypergradients that K steps of meta-batch 1 would have drawn."""

from __future__ import annotations

import pytest
import torch

from distill_core.distilled import DistilledConfig, DistilledData
from distill_core.distiller import Distiller
from distill_core.errors import UserError
from distill_core.inner import hypergradient
from test_distiller import assert_resume_is_exact, demo_config, demo_prepared  # noqa: F401  (fixture)
from test_hypergradient import assert_matches_reference, make_case, unrolled_loss


@pytest.mark.parametrize("T,different", [(1, False), (3, True)])
def test_a_bounded_inner_lr_keeps_the_hypergradient_exact(T, different, monkeypatch):
    learner, d, theta0, batch = make_case(T, different)
    bounded = DistilledData(DistilledConfig(**{**d.config.__dict__, "inner_lr_max": 0.5}), 2, learner.hidden_size,
                            learner.num_layers, learner.num_heads, dtype=torch.float64)
    with torch.no_grad():
        for name, t in bounded.learnable().items():
            if name != "lr":
                t.copy_(d.learnable()[name])
        bounded.label_values.copy_(d.label_values)
    torch.testing.assert_close(bounded.inner_lrs(), torch.full((T,), 0.3, dtype=torch.float64))
    with torch.no_grad():
        bounded.lr_raw.add_(torch.linspace(-0.4, 0.7, T, dtype=torch.float64))   # different lrs per step
    res = hypergradient(learner, theta0, bounded, [batch])
    # The reference unrolls with the bound written out, not with the code under test.
    import torch.nn.functional as F

    monkeypatch.setattr(F, "softplus", lambda raw: 0.5 * torch.sigmoid(raw))
    assert_matches_reference(res, bounded, unrolled_loss(learner, bounded, theta0, batch))


def test_the_bound_holds_however_far_the_raw_parameter_moves():
    cfg = DistilledConfig(seq_len=4, inner_lr_init=0.3, inner_lr_max=1.0)
    d = DistilledData(cfg, 2, 8, 1, 2)
    with torch.no_grad():
        d.lr_raw.fill_(50.0)
    assert float(d.inner_lrs().detach()[0]) <= 1.0
    assert DistilledConfig(inner_lr_max=0).inner_lr_max is None   # 0 says "unbounded" (CLI, form)
    for bad in (0.2, 0.3, 1000.0):
        with pytest.raises(UserError, match="inner_lr_max"):
            DistilledConfig(inner_lr_init=0.3, inner_lr_max=bad).validate()


def test_meta_batch_averages_one_draw_of_each_stream(demo_prepared):  # noqa: F811
    three = Distiller(demo_config(meta_batch=3), prepared=demo_prepared)
    learner = demo_prepared.learner
    fresh = [three._stream(j) for j in range(3)]           # the streams' states before the step
    draws = [hypergradient(learner, learner.fresh_params(gen), three.distilled, batcher.next())
             for batcher, gen in fresh]
    mean = three.meta_hypergradient()
    assert mean.real_loss == pytest.approx(sum(r.real_loss for r in draws) / 3, rel=1e-6)
    for name in mean.grads:
        want = sum(r.grads[name] for r in draws) / 3
        assert want.abs().max() > 0, name
        torch.testing.assert_close(mean.grads[name], want, rtol=1e-4, atol=1e-7)
    assert not torch.allclose(draws[0].grads["embeds"], draws[1].grads["embeds"])   # the streams differ
    one = Distiller(demo_config(meta_batch=1), prepared=demo_prepared)           # stream 0 is meta-batch 1's
    torch.testing.assert_close(one.meta_hypergradient().grads["embeds"], draws[0].grads["embeds"])
    with pytest.raises(UserError, match="meta_batch"):
        demo_config(meta_batch=0).validate()


def test_the_average_is_what_a_run_validates_saves_and_returns_and_it_resumes(tmp_path, demo_prepared):  # noqa: F811
    from safetensors.torch import load_file

    cfg = dict(average=0.9, outer_steps=4, save_every_minutes=1e-9)
    straight = Distiller(demo_config(**cfg), run_dir=tmp_path / "a", prepared=demo_prepared)
    raw_seen = []
    straight.add_callback(lambda e: raw_seen.append(straight.distilled.embeds.detach().clone())
                          if e["type"] == "step" else None)
    straight.run_loop()
    # the average, by hand, of the iterates the optimiser produced (decay min(0.9, (1 + t) / (10 + t)))
    init = Distiller(demo_config(**cfg), prepared=demo_prepared).distilled.embeds.detach().clone()
    want = init
    for t, raw in enumerate(raw_seen):
        decay = min(0.9, (1 + t) / (10 + t))
        want = decay * want + (1 - decay) * raw
    torch.testing.assert_close(straight.distilled.embeds.detach(), want, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(want, raw_seen[-1])                       # the average is not the last iterate
    # code that steps the loop itself (the study's pilots, the benches) gets the average from served(),
    # while the raw iterate stays in place for the next step
    stepped = Distiller(demo_config(**cfg), prepared=demo_prepared)
    for _ in range(4):
        stepped.train_step()
    torch.testing.assert_close(stepped.served().embeds.detach(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(stepped.distilled.embeds.detach(), raw_seen[-1], rtol=1e-5, atol=1e-6)
    saved = load_file(str(tmp_path / "a" / "checkpoints" / "last.safetensors"))
    torch.testing.assert_close(saved["embeds"], want, rtol=1e-5, atol=1e-6)
    # stopped after step 2 and resumed: the same average at the end
    part = Distiller(demo_config(**cfg), run_dir=tmp_path / "b", prepared=demo_prepared)
    part.add_callback(lambda e: part.stop() if e["type"] == "step" and e["step"] == 2 else None)
    part.run_loop()
    resumed = Distiller(demo_config(**cfg), run_dir=tmp_path / "b", prepared=demo_prepared, resume=True)
    resumed.run_loop()
    torch.testing.assert_close(resumed.distilled.embeds.detach(), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(UserError, match="average"):
        demo_config(average=1.0).validate()


def test_an_inner_lr_per_parameter_group_is_learned_saved_and_resumed(tmp_path, demo_prepared):  # noqa: F811
    """`inner_lr_groups` head: the encoder's and the head's lrs start alike, learn apart, and a run stopped
    after step 2 and resumed ends where the straight run ends; the file keeps the (T, G) lrs."""
    from dataclasses import replace

    from distill_core.inner import fine_tune

    def cfg():
        c = demo_config(outer_steps=4, save_every_minutes=1e-9)
        c.distilled = replace(c.distilled, inner_lr_groups="head")
        return c

    straight = Distiller(cfg(), run_dir=tmp_path / "a", prepared=demo_prepared)
    events = []
    straight.add_callback(lambda e: events.append(e) if e["type"] == "step" else None)
    straight.run_loop()
    lrs = straight.distilled.inner_lrs().detach()
    assert lrs.shape == (1, 2) and events[-1]["inner_lr_groups"] == ["encoder", "head"]
    assert events[-1]["inner_lrs"] == lrs.tolist() and abs(float(lrs[0, 0] - lrs[0, 1])) > 1e-4   # learned apart
    saved = DistilledData.load(tmp_path / "a" / "checkpoints" / "last.safetensors")
    torch.testing.assert_close(saved.inner_lrs(), lrs)
    assert saved.lr_groups == ["encoder", "head"]
    part = Distiller(cfg(), run_dir=tmp_path / "b", prepared=demo_prepared)
    part.add_callback(lambda e: part.stop() if e["type"] == "step" and e["step"] == 2 else None)
    part.run_loop()
    resumed = Distiller(cfg(), run_dir=tmp_path / "b", prepared=demo_prepared, resume=True)
    resumed.run_loop()
    torch.testing.assert_close(resumed.distilled.inner_lrs().detach(), lrs, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(resumed.distilled.embeds.detach(), straight.distilled.embeds.detach(),
                               rtol=1e-5, atol=1e-6)
    # evaluation fine-tunes with each group's own lr: a head lr of 0 leaves the head where it started
    with torch.no_grad():
        saved.lr_raw[0, 1] = -60.0        # softplus(-60) ~ 1e-26
    learner = demo_prepared.learner
    theta0 = learner.fresh_params(torch.Generator().manual_seed(0))
    theta = fine_tune(learner, theta0, saved)
    assert torch.equal(theta["classifier.weight"], theta0["classifier.weight"])
    assert not torch.equal(theta["bert.encoder.layer.0.attention.self.query.weight"],
                           theta0["bert.encoder.layer.0.attention.self.query.weight"])
    with pytest.raises(UserError, match="inner_lr_groups"):
        DistilledConfig(inner_lr_groups="per-head").validate()


def test_a_bf16_real_pass_stays_close_to_float32_and_leaves_a_float64_learner_exact(demo_prepared):  # noqa: F811
    """`real_precision` bfloat16 autocasts the real-batch pass only: the hypergradient moves (the autocast is
    applied) but keeps its direction, a run steps with it, and a float64 learner (the exactness tests') ignores it."""
    d = Distiller(demo_config(real_precision="bfloat16", outer_steps=2), prepared=demo_prepared)
    learner = demo_prepared.learner
    real = d.batcher.next()
    theta0 = learner.fresh_params(torch.Generator().manual_seed(0))
    fp32 = hypergradient(learner, theta0, d.distilled, real)
    bf16 = hypergradient(learner, theta0, d.distilled, real, real_precision="bfloat16")
    assert bf16.real_loss == pytest.approx(fp32.real_loss, rel=0.02) and bf16.real_loss != fp32.real_loss
    for name, want in fp32.grads.items():
        got = bf16.grads[name]
        cosine = float(got.flatten() @ want.flatten() / (got.norm() * want.norm()))
        assert cosine > 0.99, (name, cosine)
    assert any(not torch.equal(bf16.grads[n], fp32.grads[n]) for n in fp32.grads)
    d.run_loop()
    assert d.step == 2 and torch.isfinite(d.distilled.embeds).all()

    learner64, d64, theta64, batch = make_case(1, False)
    exact = hypergradient(learner64, theta64, d64, [batch])
    ignored = hypergradient(learner64, theta64, d64, [batch], real_precision="bfloat16")
    for name, want in exact.grads.items():
        assert torch.equal(ignored.grads[name], want), name
    with pytest.raises(UserError, match="real_precision"):
        demo_config(real_precision="float16").validate()


def test_feature_labels_start_at_the_models_pooled_output_learn_save_and_steer_evaluation(tmp_path, demo_prepared):  # noqa: F811
    """`feature_labels` pooled (beyond the paper): the targets start at the model's own pooled output (a
    feature loss of zero, so a run starts as one without them), the outer loop moves them, the file keeps
    them, and the learners of evaluation are fine-tuned toward them."""
    from dataclasses import replace

    from distill_core.inner import fine_tune, inner_loss

    cfg = demo_config(outer_steps=3)
    cfg.distilled = replace(cfg.distilled, feature_labels="pooled")
    run = Distiller(cfg, run_dir=tmp_path / "a", prepared=demo_prepared)
    learner = demo_prepared.learner
    start = run.distilled.feature_targets.detach().clone()
    assert start.shape == (2, learner.hidden_size) and start.abs().max() > 0.01
    theta0 = learner.fresh_params(torch.Generator().manual_seed(5))
    at_start = inner_loss(learner, theta0, run.distilled.step_batch(0, detach=True), "cls", 1.0, feature_weight=1.0)
    assert float(at_start.features) < 1e-9
    run.run_loop()
    moved = run.distilled.feature_targets.detach()
    assert not torch.allclose(moved, start)
    saved = DistilledData.load(tmp_path / "a" / "checkpoints" / "last.safetensors")
    torch.testing.assert_close(saved.feature_targets, moved)
    tuned = fine_tune(learner, theta0, saved)
    with torch.no_grad():
        saved.feature_targets.add_(0.5)
    assert not torch.equal(fine_tune(learner, theta0, saved)["bert.pooler.dense.weight"],
                           tuned["bert.pooler.dense.weight"])
    with pytest.raises(UserError, match="feature_labels"):
        DistilledConfig(feature_labels="hidden").validate()
    with pytest.raises(UserError, match="feature_loss_weight"):
        DistilledConfig(feature_labels="pooled", feature_loss_weight=-1.0).validate()


def test_word_dropout_thins_the_outer_batches_of_a_run(demo_prepared):  # noqa: F811
    """`real_word_dropout` reaches the run's real batches (the same rows, fewer tokens), the run steps with it,
    and the setting is checked."""
    whole = Distiller(demo_config(outer_steps=2), prepared=demo_prepared)
    thinned = Distiller(demo_config(real_word_dropout=0.3, outer_steps=2), prepared=demo_prepared)
    a, b = whole.batcher.next(), thinned.batcher.next()
    assert sorted(sum((x.labels.tolist() for x in a), [])) == sorted(sum((x.labels.tolist() for x in b), []))
    tokens = [sum(int((x.input_ids != 0).sum()) for x in s) for s in (a, b)]   # [PAD] is 0, packed or padded
    assert tokens[1] < 0.9 * tokens[0]
    thinned.run_loop()
    assert thinned.step == 2 and torch.isfinite(thinned.distilled.embeds).all()
    for bad in (-0.1, 0.6, "0.1"):
        with pytest.raises(UserError, match="real_word_dropout"):
            demo_config(real_word_dropout=bad).validate()


@pytest.mark.parametrize("noise", [{"synthetic_noise": 0.3}, {"model_noise": 0.05}])
def test_noise_levers_perturb_the_step_not_the_data_and_resume_exactly(tmp_path, demo_prepared, noise):  # noqa: F811
    """Synthetic-embedding and pre-trained-weight noise change the hypergradient, leave the clean data and
    the pre-trained weights as they were, and draw the same noise after a resume as an unbroken run."""
    learner = demo_prepared.learner
    weights = {k: v.clone() for k, v in learner.pretrained.items()}
    clean, noisy = (Distiller(demo_config(**n), prepared=demo_prepared) for n in ({}, noise))
    before = noisy.distilled.embeds.detach().clone()
    g_clean, g_noisy = clean.meta_hypergradient().grads, noisy.meta_hypergradient().grads
    assert torch.equal(noisy.distilled.embeds, before)
    assert all(torch.equal(learner.pretrained[k], v) for k, v in weights.items())
    assert not torch.allclose(g_noisy["embeds"], g_clean["embeds"], rtol=1e-3, atol=0)
    # the draw is a function of (seed, stream, step): the same step draws the same noise
    again = Distiller(demo_config(**noise), prepared=demo_prepared)
    torch.testing.assert_close(again.meta_hypergradient().grads["embeds"], g_noisy["embeds"], rtol=0, atol=0)

    assert_resume_is_exact(tmp_path, demo_prepared, **noise)
    name = next(iter(noise))
    for bad in (-0.1, 1.5, "0.1"):
        with pytest.raises(UserError, match=name):
            demo_config(**{name: bad}).validate()
