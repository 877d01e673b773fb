"""DistilledData: layout, exact inverse softplus, safetensors round trip, and refusing bad files."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from distill_core.distilled import DistilledConfig, DistilledData, inverse_softplus
from distill_core.errors import UserError
from conftest import tiny_learner


def make(**kw) -> DistilledData:
    cfg = DistilledConfig(**{"seq_len": 6, **kw})
    return DistilledData(cfg, 3, 12, 2, 2, label_names=["a", "b", "c"], meta={"task": "t"},
                         dtype=torch.float64, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("y", [1e-4, 1e-2, 0.1, 1.0, 5.0, 30.0])
def test_inverse_softplus_is_exact(y):
    x = inverse_softplus(y)
    assert float(F.softplus(torch.tensor(x, dtype=torch.float64))) == pytest.approx(y, rel=1e-12)


def test_inner_lr_starts_at_its_init():
    d = make(inner_steps=3, inner_lr_init=0.01)
    torch.testing.assert_close(d.inner_lrs(), torch.full((3,), 0.01, dtype=torch.float64))


def test_layout_and_step_rows():
    d = make(samples_per_class=4, inner_steps=2, different_data_per_step=True)
    assert d.num_samples == 12
    assert d.row_classes().tolist() == [0, 1, 2] * 4
    assert d.step_rows(0) == list(range(0, 6)) and d.step_rows(1) == list(range(6, 12))
    same = make(samples_per_class=2, inner_steps=3)
    assert same.step_rows(0) == same.step_rows(2) == list(range(6))


def test_labels_start_one_hot_and_soft_uses_softmax():
    d = make(label_type="soft")
    assert torch.equal(d.label_values, F.one_hot(d.row_classes(), 3).double())
    torch.testing.assert_close(d.label_targets(), F.softmax(d.label_values, -1))
    assert "labels" not in make(label_type="hard").learnable()
    assert torch.equal(make(label_type="unrestricted").label_targets(), d.label_values)


@pytest.mark.parametrize("attention", ["none", "cls", "all"])
@pytest.mark.parametrize("label_type", ["hard", "soft", "unrestricted"])
def test_save_load_round_trip_is_exact(tmp_path, attention, label_type):
    d = make(attention_labels=attention, label_type=label_type, inner_steps=2, samples_per_class=2,
             different_data_per_step=True)
    with torch.no_grad():
        for t in d.learnable().values():
            t.add_(torch.randn(t.shape, dtype=t.dtype))
    path = d.save(tmp_path / "d.safetensors")
    back = DistilledData.load(path, dtype=torch.float64)
    assert back.config == d.config and back.label_names == ["a", "b", "c"] and back.meta == {"task": "t"}
    for name, t in d.tensors().items():
        assert torch.equal(back.tensors()[name], t), name
    assert set(back.learnable()) == set(d.learnable())
    assert all(t.requires_grad for t in back.learnable().values())


def test_load_refuses_bad_files(tmp_path):
    not_st = tmp_path / "x.safetensors"
    not_st.write_bytes(b"\x80\x04this is a pickle, not safetensors")
    with pytest.raises(UserError, match="not a readable safetensors"):
        DistilledData.load(not_st)
    good = make().save(tmp_path / "good.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(UserError, match="not a readable safetensors"):
        DistilledData.load(corrupt)
    from safetensors.torch import save_file
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(UserError, match="not distilled data"):
        DistilledData.load(other)
    with pytest.raises(UserError, match="not found"):
        DistilledData.load(tmp_path / "missing.safetensors")


def test_load_refuses_another_model(tmp_path):
    learner = tiny_learner()
    d = make()  # hidden 12, 2 layers, 2 heads, but 3 labels
    path = d.save(tmp_path / "d.safetensors")
    with pytest.raises(UserError, match="another model or task: num_labels"):
        DistilledData.load(path, expect=learner.fingerprint())
    bigger = {**learner.fingerprint(), "hidden_size": 384, "num_labels": 3}
    with pytest.raises(UserError, match="hidden_size is 12 in the file but 384"):
        DistilledData.load(path, expect=bigger)


def test_save_is_atomic(tmp_path):
    d = make()
    path = d.save(tmp_path / "d.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["d.safetensors"]  # no temporary left behind
    assert path.stat().st_size > 0


@pytest.mark.parametrize("kw,match", [
    (dict(samples_per_class=3, inner_steps=2, different_data_per_step=True), "multiple of inner_steps"),
    (dict(label_type="fuzzy"), "label_type"),
    (dict(attention_labels="half"), "attention_labels"),
    (dict(inner_lr_init=0.0), "inner_lr_init"),
    (dict(seq_len=1), "seq_len"),
])
def test_config_validation(kw, match):
    with pytest.raises(UserError, match=match):
        DistilledConfig(**kw).validate()
    assert math.isfinite(inverse_softplus(0.1))
