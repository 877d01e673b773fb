"""The engine's hypergradient against an explicitly unrolled autograd computation and finite differences."""

from __future__ import annotations

import gc
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from distill_core.data import RealBatch
from distill_core.distilled import DistilledConfig, DistilledData
from distill_core.inner import hypergradient, inner_loss
from distill_core.losses import attention_kl, soft_cross_entropy
from conftest import tiny_learner


def make_case(T: int, different: bool, label_type: str = "soft", attention: str = "cls", seed: int = 0,
              lr_groups: str = "one", pooling: str = "cls", feature_labels: str = "none"):
    learner = tiny_learner(seed=seed, pooling=pooling)
    spc = T if different else 1  # T=5 different data: recursion segments of uneven length
    cfg = DistilledConfig(seq_len=6, samples_per_class=spc, inner_steps=T, different_data_per_step=different,
                          label_type=label_type, attention_labels=attention, inner_lr_init=0.3,
                          inner_lr_groups=lr_groups, feature_labels=feature_labels, feature_loss_weight=0.7)
    g = torch.Generator().manual_seed(seed + 1)
    d = DistilledData(cfg, 2, learner.hidden_size, learner.num_layers, learner.num_heads,
                      dtype=torch.float64, generator=g)
    with torch.no_grad():  # move labels off one-hot so every part has a generic gradient
        d.label_values.add_(0.3 * torch.randn(d.label_values.shape, generator=g, dtype=torch.float64))
        if lr_groups != "one":   # groups (and steps) with lrs of their own, so a mixed-up group shows
            d.lr_raw.add_(0.5 * torch.randn(d.lr_raw.shape, generator=g, dtype=torch.float64))
        if d.feature_targets is not None:
            d.feature_targets.add_(0.5 * torch.randn(d.feature_targets.shape, generator=g, dtype=torch.float64))
    theta0 = learner.fresh_params(torch.Generator().manual_seed(seed + 2))
    ids = torch.randint(1, 40, (5, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    mask[3, 4:] = 0
    batch = RealBatch(ids, torch.zeros_like(ids), mask, torch.tensor([0, 1, 1, 0, 1]))
    return learner, d, theta0, batch


def assert_matches_reference(res, d: DistilledData, ref_loss: torch.Tensor) -> None:
    """Every learnable part of `res` equals autograd's gradient of the unrolled reference loss (float64)."""
    names = list(d.learnable())
    ref = torch.autograd.grad(ref_loss, [d.learnable()[n] for n in names])
    for n, r in zip(names, ref):
        assert r.abs().max() > 0, n  # a vacuous comparison would prove nothing
        torch.testing.assert_close(res.grads[n], r, rtol=1e-8, atol=1e-11, msg=lambda m: f"{n}: {m}")


def hugging_face_pass(learner, params, **inputs):
    """(logits, attentions) from Hugging Face's module: a pass independent of the engine's encoder."""
    out = learner.forward(params, output_attentions=True, eager=True, **inputs)
    return out.logits, out.attentions


def hugging_face_pooled_pass(learner, params, **inputs):
    """(logits, attentions, pooled output) from Hugging Face's encoder and pooler, then the linear head."""
    encoder = {k[5:]: v for k, v in params.items() if k.startswith("bert.")}
    with learner.attention_implementation("eager"):
        out = functional_call(learner.module.bert, encoder, args=(),
                              kwargs={**inputs, "output_attentions": True, "return_dict": True}, strict=False)
    logits = F.linear(out.pooler_output, params["classifier.weight"], params["classifier.bias"])
    return logits, out.attentions, out.pooler_output


def unrolled_loss(learner, d: DistilledData, theta0, batch: RealBatch, forward=hugging_face_pass) -> torch.Tensor:
    """The plain reference: keep every graph (create_graph=True) and backprop once, eager everywhere.
    forward(learner, params, **inputs) -> (logits, attentions[, pooled]) is the classifier's pass (the pooled
    output is read only with feature labels)."""
    cfg = d.config
    params = {k: v.detach().requires_grad_(True) for k, v in theta0.items()}
    lrs = F.softplus(d.lr_raw)
    group = d.lr_group_index(params)
    for t in range(cfg.inner_steps):
        b = d.step_batch(t)
        out = forward(learner, params, inputs_embeds=b.embeds)
        logits, attentions = out[0], out[1]
        loss = soft_cross_entropy(logits, b.targets)
        if cfg.attention_labels != "none":
            loss = loss + cfg.attention_loss_weight * attention_kl(b.attention_logits, attentions,
                                                                   cfg.attention_labels)
        if b.feature_targets is not None:
            loss = loss + cfg.feature_loss_weight * ((out[2] - b.feature_targets) ** 2).sum(-1).mean()
        keys = list(params)
        gs = torch.autograd.grad(loss, [params[k] for k in keys], create_graph=True, allow_unused=True)
        lr = (lambda k: lrs[t]) if group is None else (lambda k: lrs[t, group[k]])   # noqa: E731
        params = {k: params[k] - lr(k) * (0 if g is None else g) for k, g in zip(keys, gs)}
    logits = forward(learner, params, input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                     token_type_ids=batch.token_type_ids)[0]
    return soft_cross_entropy(logits, batch.labels)


def assert_matches_finite_differences(res, d: DistilledData, loss_at_current) -> None:
    """The hypergradient along a random direction of every learnable tensor against central differences
    of loss_at_current() (a float of the distilled data as it stands)."""
    g = torch.Generator().manual_seed(7)
    eps = 1e-6
    for name, tensor in d.learnable().items():
        direction = torch.randn(tensor.shape, generator=g, dtype=torch.float64)
        base = tensor.detach().clone()

        def loss_at(value):
            with torch.no_grad():
                tensor.copy_(value)
            return loss_at_current()

        plus, minus = loss_at(base + eps * direction), loss_at(base - eps * direction)
        loss_at(base)
        numeric = (plus - minus) / (2 * eps)
        analytic = float((res.grads[name] * direction).sum())
        assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-9), name


CASES = [(1, False), (3, False), (3, True), (5, True)]


@pytest.mark.parametrize("T,different", CASES)
@pytest.mark.parametrize("attention", ["cls", "all"])
@pytest.mark.parametrize("recompute", [False, True])
def test_hypergradient_matches_unrolled_autograd(T, different, attention, recompute):
    learner, d, theta0, batch = make_case(T, different, attention=attention)
    res = hypergradient(learner, theta0, d, [batch], recompute=recompute)
    ref_loss = unrolled_loss(learner, d, theta0, batch)
    names = list(d.learnable())
    ref = torch.autograd.grad(ref_loss, [d.learnable()[n] for n in names])
    assert res.real_loss == pytest.approx(float(ref_loss.detach()), rel=1e-10)
    assert set(res.grads) == {"embeds", "labels", "attention", "lr"}
    for n, r in zip(names, ref):
        assert r.abs().max() > 0, n  # a vacuous comparison would prove nothing
        torch.testing.assert_close(res.grads[n], r, rtol=1e-8, atol=1e-11, msg=lambda m: f"{n}: {m}")


@pytest.mark.parametrize("lr_groups", ["head", "layer"])
@pytest.mark.parametrize("T,different,recompute", [(1, False, False), (3, False, False), (3, True, True)])
def test_an_inner_lr_per_parameter_group_keeps_the_hypergradient_exact(lr_groups, T, different, recompute):
    """Beyond the paper: one learned lr per step and group (encoder / head, or per layer)."""
    learner, d, theta0, batch = make_case(T, different, lr_groups=lr_groups, seed=1)
    groups = d.lr_group_index(theta0)
    assert d.lr_raw.shape == (T, len(d.lr_groups)) and set(groups.values()) == set(range(len(d.lr_groups)))
    assert groups["classifier.weight"] == len(d.lr_groups) - 1 and groups["bert.encoder.layer.0.attention.self.query.weight"] == (
        0 if lr_groups == "head" else 1)
    res = hypergradient(learner, theta0, d, [batch], recompute=recompute)
    names = list(d.learnable())
    ref = torch.autograd.grad(unrolled_loss(learner, d, theta0, batch), [d.learnable()[n] for n in names])
    for n, r in zip(names, ref):
        assert r.abs().max() > 0, n
        torch.testing.assert_close(res.grads[n], r, rtol=1e-8, atol=1e-11, msg=lambda m: f"{n}: {m}")
    assert (res.grads["lr"] != 0).all()     # every step's every group has a gradient of its own


@pytest.mark.parametrize("copies", [0, 1, 3])
def test_recompute_schedules_give_the_exact_gradient(copies):
    """Every snapshot budget (pure recomputation, bisection then recomputation, bisection only) at T=7."""
    learner, d, theta0, batch = make_case(7, True)
    res = hypergradient(learner, theta0, d, [batch], recompute=True, copies=copies)
    names = list(d.learnable())
    ref = torch.autograd.grad(unrolled_loss(learner, d, theta0, batch), [d.learnable()[n] for n in names])
    for n, r in zip(names, ref):
        torch.testing.assert_close(res.grads[n], r, rtol=1e-8, atol=1e-11, msg=lambda m: f"{n}: {m}")
    assert torch.equal(theta0["classifier.weight"], learner.fresh_params(torch.Generator().manual_seed(2))
                       ["classifier.weight"]), "recomputation must not write into theta_0"
    assert all(torch.equal(learner.pretrained[k], learner.module.state_dict()[k]) for k in learner.inner_names)


@pytest.mark.parametrize("T,different,recompute", [(1, False, False), (3, True, True)])
def test_probability_targets_keep_the_hypergradient_exact(T, different, recompute):
    """A teacher's mix of gold and class probabilities as the outer target (--teacher-weight) is differentiated
    exactly, like gold labels."""
    learner, d, theta0, batch = make_case(T, different, seed=5)
    probs = torch.softmax(torch.randn(len(batch), 2, generator=torch.Generator().manual_seed(9), dtype=torch.float64), -1)
    soft = RealBatch(batch.input_ids, batch.token_type_ids, batch.attention_mask,
                     0.4 * F.one_hot(batch.labels, 2).to(torch.float64) + 0.6 * probs)
    res = hypergradient(learner, theta0, d, [soft], recompute=recompute)
    ref_loss = unrolled_loss(learner, d, theta0, soft)
    gold = hypergradient(learner, theta0, d, [batch], recompute=recompute)
    assert abs(res.real_loss - gold.real_loss) > 1e-5   # the targets reached the loss (float64: far above noise)
    assert res.real_loss == pytest.approx(float(ref_loss.detach()), rel=1e-10)
    names = list(d.learnable())
    ref = torch.autograd.grad(ref_loss, [d.learnable()[n] for n in names])
    for n, r in zip(names, ref):
        assert r.abs().max() > 0, n
        torch.testing.assert_close(res.grads[n], r, rtol=1e-8, atol=1e-11, msg=lambda m: f"{n}: {m}")


def test_micro_batches_give_the_same_gradient():
    learner, d, theta0, batch = make_case(1, False)
    whole = hypergradient(learner, theta0, d, [batch])
    halves = [RealBatch(batch.input_ids[s], batch.token_type_ids[s], batch.attention_mask[s], batch.labels[s])
              for s in (slice(0, 2), slice(2, 5))]
    split = hypergradient(learner, theta0, d, halves)
    assert split.real_loss == pytest.approx(whole.real_loss, rel=1e-12)
    for n in whole.grads:
        torch.testing.assert_close(split.grads[n], whole.grads[n], rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("T,different,recompute", [(1, False, False), (3, True, False), (3, True, True)])
def test_hypergradient_matches_finite_differences(T, different, recompute):
    learner, d, theta0, batch = make_case(T, different, seed=3)
    res = hypergradient(learner, theta0, d, [batch], recompute=recompute)
    assert_matches_finite_differences(res, d, lambda: float(unrolled_loss(learner, d, theta0, batch).detach()))


@pytest.mark.parametrize("T,different,recompute", [(1, False, False), (3, True, False), (3, True, True)])
def test_feature_labels_keep_the_hypergradient_exact(T, different, recompute):
    """Beyond the paper: a learned target of each sample's pooled output, mu * its squared distance in the
    inner loss; the reference reads the pooled output from Hugging Face's own pooler."""
    learner, d, theta0, batch = make_case(T, different, seed=4, feature_labels="pooled")
    res = hypergradient(learner, theta0, d, [batch], recompute=recompute)
    assert set(res.grads) == {"embeds", "labels", "attention", "features", "lr"}
    names = list(d.learnable())
    ref_loss = unrolled_loss(learner, d, theta0, batch, forward=hugging_face_pooled_pass)
    assert res.real_loss == pytest.approx(float(ref_loss.detach()), rel=1e-10)
    ref = torch.autograd.grad(ref_loss, [d.learnable()[n] for n in names])
    for n, r in zip(names, ref):
        assert r.abs().max() > 0, n
        torch.testing.assert_close(res.grads[n], r, rtol=1e-8, atol=1e-11, msg=lambda m: f"{n}: {m}")
    # the feature term is in the loss: without it the embeddings' gradient is another one
    plain = DistilledData.__new__(DistilledData)
    plain.__dict__.update(d.__dict__)
    plain.feature_targets = None
    assert not torch.allclose(hypergradient(learner, theta0, plain, [batch]).grads["embeds"], res.grads["embeds"])


@pytest.mark.parametrize("label_type", ["hard", "unrestricted"])
def test_label_types(label_type):
    learner, d, theta0, batch = make_case(1, False, label_type=label_type, attention="none")
    res = hypergradient(learner, theta0, d, [batch])
    ref_loss = unrolled_loss(learner, d, theta0, batch)
    names = list(d.learnable())
    assert ("labels" in names) == (label_type != "hard")
    ref = torch.autograd.grad(ref_loss, [d.learnable()[n] for n in names])
    for n, r in zip(names, ref):
        torch.testing.assert_close(res.grads[n], r, rtol=1e-8, atol=1e-11)


@pytest.mark.parametrize("attention", ["cls", "all"])
def test_released_gradient_values_are_not_saved_by_the_graph(attention):
    """_release_values frees G_t's memory before the second backward pass; that is exact only if no
    node of the graph saved G_t itself, so the graph's saved tensors must not share its storage."""
    learner, d, theta0, _ = make_case(2, True, attention=attention)
    assert learner.encoder_spec is not None
    p = {k: v.detach().requires_grad_(True) for k, v in theta0.items()}
    loss = inner_loss(learner, p, d.step_batch(1), attention, d.config.attention_loss_weight)
    saved: set[int] = set()

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.add(t.untyped_storage().data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        g = torch.autograd.grad(loss.total, list(p.values()), create_graph=True)
    assert saved, "the second-order graph saved nothing: the check would be vacuous"
    shared = [k for k, v in zip(p, g) if v.untyped_storage().data_ptr() in saved]
    assert not shared, f"the graph saved gradient values of {shared}"


def _live_tensors() -> int:
    with warnings.catch_warnings():   # touching every object wakes deprecated lazy attributes
        warnings.simplefilter("ignore")
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


@pytest.mark.parametrize("recompute", [False, True])
def test_hypergradient_leaves_nothing_for_the_garbage_collector(recompute):
    """A reference cycle would keep a parameter set (the adjoint, theta_T) alive until the next collection."""
    learner, d, theta0, batch = make_case(4, True)
    hypergradient(learner, theta0, d, [batch], recompute=recompute, copies=1)
    gc.collect()
    gc.disable()
    try:
        res = hypergradient(learner, theta0, d, [batch], recompute=recompute, copies=1)
        del res
        alive = _live_tensors()
        gc.collect()
        assert _live_tensors() == alive
    finally:
        gc.enable()


@pytest.mark.parametrize("T,different,recompute", [(1, False, False), (3, True, True)])
def test_a_token_norm_cap_keeps_the_hypergradient_exact(T, different, recompute):
    """embed_max_norm feeds the model capped token vectors; the hypergradient reaches the raw parameter
    through the cap, for capped and uncapped tokens alike."""
    learner, d, theta0, batch = make_case(T, different)
    norms = d.embeds.detach().norm(dim=-1)
    cap = float(norms.median())           # half the tokens above the cap, half below
    d.config.embed_max_norm = cap
    fed = d.model_embeds().detach()
    below = norms <= cap
    torch.testing.assert_close(fed[below], d.embeds.detach()[below], rtol=0, atol=0)
    torch.testing.assert_close(fed[~below].norm(dim=-1), torch.full_like(norms[~below], cap))
    res = hypergradient(learner, theta0, d, [batch], recompute=recompute)
    assert_matches_reference(res, d, unrolled_loss(learner, d, theta0, batch))
    # a capped token's gradient is orthogonal to it: the cap makes its length invisible to the model
    capped = res.grads["embeds"][~below]
    cosine = torch.nn.functional.cosine_similarity(capped, d.embeds.detach()[~below], dim=-1)
    assert cosine.abs().max() < 1e-8
