"""Data loading: registered tasks from a data dir, custom files, the demo set, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from distill_core.data import DataConfig, RealBatcher, collate, encode_split, load_task_data, split_by_length
from distill_core.errors import UserError

ROWS = [("a warm and witty little film", "pos"), ("the plot drags and the jokes fall flat", "neg"),
        ("a gorgeous score lifts every scene", "pos"), ("I checked my watch twice", "neg"),
        ("sharp writing and a brave lead", "pos"), ("noisy, dull and far too long", "neg")]


def write(tmp_path, name, rows, columns=("text", "label")):
    frame = pd.DataFrame(rows, columns=list(columns))
    path = tmp_path / name
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif suffix == ".jsonl":
        path.write_text("\n".join(json.dumps(dict(zip(columns, r))) for r in rows) + "\n")
    else:
        frame.to_parquet(path)
    return path


def test_demo_task_loads_without_anything_else():
    data = load_task_data(DataConfig(task="demo", data_dir=None, allow_hub=False))
    assert data.is_demo and data.spec.label_names == ("negative", "positive")
    assert len(data.train) >= 200 and len(data.eval) >= 50
    assert set(np.unique(data.train.labels)) == {0, 1}


def test_sst2_from_shared_data(shared_data):
    data = load_task_data(DataConfig(task="sst2", data_dir=str(shared_data), allow_hub=False, dev_fraction=0.0))
    assert len(data.train) == 67349 and len(data.eval) == 872 and data.dev is None
    assert int(data.train.labels.sum()) == 37569  # 55.78 % positive, as the data README says
    assert data.majority_label() == 1


def test_mrpc_pairs_and_caps(shared_data):
    data = load_task_data(DataConfig(task="mrpc", data_dir=str(shared_data), train_rows=100, allow_hub=False))
    assert len(data.train) == 100 and len(data.eval) == 408 and len(data.dev) == 183    # 5 % of 3,668
    assert len(data.train.texts[0]) == 2 and data.spec.metrics == ("accuracy", "f1", "glue")


@pytest.mark.parametrize("task", ["qnli", "ag_news"])
def test_task_without_train_split_is_refused(shared_data, task):
    with pytest.raises(UserError, match="no train split .* never trains on the evaluation split"):
        load_task_data(DataConfig(task=task, data_dir=str(shared_data), allow_hub=False))


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_custom_files_with_string_labels(tmp_path, suffix):
    train = write(tmp_path, f"train{suffix}", ROWS)
    ev = write(tmp_path, f"eval{suffix}", ROWS[:2])
    data = load_task_data(DataConfig(task=None, train_file=str(train), eval_file=str(ev), text_columns=["text"],
                                     label_column="label"))
    assert data.spec.label_names == ("neg", "pos")
    assert data.train.labels.tolist() == [1, 0, 1, 0, 1, 0]
    assert data.eval.texts[0] == ("a warm and witty little film",)


def test_custom_integer_labels_and_pairs(tmp_path):
    rows = [("q one", "s one", 3), ("q two", "s two", 7), ("q three", "s three", 3)]
    train = write(tmp_path, "t.csv", rows, ("q", "s", "y"))
    data = load_task_data(DataConfig(task=None, train_file=str(train), eval_file=str(train),
                                     text_columns=["q", "s"], label_column="y"))
    assert data.spec.label_names == ("3", "7") and data.train.labels.tolist() == [0, 1, 0]
    assert data.train.texts[1] == ("q two", "s two")


@pytest.mark.parametrize("case,match", [
    ("unknown_task", "unknown task 'sst3'"),
    ("missing_file", "data file not found"),
    ("missing_column", "missing column\\(s\\) 'sentence'"),
    ("bad_label", "outside the task's labels"),
    ("empty", "the split is empty"),
    ("single_class", "single class"),
    ("bad_suffix", "unsupported data file type"),
    ("unreadable", "could not read"),
    ("no_label_column", "needs --label-column"),
])
def test_bad_input_names_the_problem(tmp_path, case, match):
    train = write(tmp_path, "train.csv", ROWS)
    kw = dict(task=None, train_file=str(train), eval_file=str(train), text_columns=["text"], label_column="label")
    if case == "unknown_task":
        kw = dict(task="sst3")
    elif case == "missing_file":
        kw["eval_file"] = str(tmp_path / "nope.csv")
    elif case == "missing_column":
        kw["text_columns"] = ["sentence"]
    elif case == "bad_label":
        kw["eval_file"] = str(write(tmp_path, "ev.csv", [("fine", "meh")]))
    elif case == "empty":
        (tmp_path / "empty.csv").write_text("text,label\n")
        kw["eval_file"] = str(tmp_path / "empty.csv")
    elif case == "single_class":
        kw["train_file"] = kw["eval_file"] = str(write(tmp_path, "one.csv", [r for r in ROWS if r[1] == "pos"]))
    elif case == "bad_suffix":
        (tmp_path / "x.xlsx").write_text("nope")
        kw["train_file"] = str(tmp_path / "x.xlsx")
    elif case == "unreadable":
        (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
        kw["train_file"] = str(tmp_path / "bad.parquet")
    elif case == "no_label_column":
        kw["label_column"] = None
    with pytest.raises(UserError, match=match):
        load_task_data(DataConfig(**kw))


def test_registered_task_label_out_of_range(tmp_path):
    (tmp_path / "sst2").mkdir()
    pd.DataFrame({"sentence": ["good", "bad"], "label": [0, 5]}).to_csv(tmp_path / "sst2" / "train.csv", index=False)
    pd.DataFrame({"sentence": ["ok"], "label": [1]}).to_csv(tmp_path / "sst2" / "validation.csv", index=False)
    with pytest.raises(UserError, match=r"train.csv: 1 label\(s\) in column 'label' outside"):
        load_task_data(DataConfig(task="sst2", data_dir=str(tmp_path), allow_hub=False))


def test_micro_batches_cover_the_batch_once(bundled):
    data = load_task_data(DataConfig(task="demo", allow_hub=False))
    enc = encode_split(data.train, bundled.tokenizer, 128)
    batcher = RealBatcher(enc, 32, seed=0, micro_batch_tokens=128)
    idx = batcher.next_indices()
    chunks = split_by_length(enc, idx, 128)
    assert sorted(i for c in chunks for i in c) == sorted(idx)
    assert len(chunks) > 1
    whole = collate(enc, idx)
    assert whole.input_ids.shape[1] % 8 == 0 and int(whole.attention_mask.sum()) == sum(len(enc.input_ids[i]) for i in idx)
    # an epoch visits every example once
    b2 = RealBatcher(enc, 50, seed=1)
    seen = [i for _ in range(len(enc) // 50) for i in b2.next_indices()]
    assert len(set(seen)) == len(seen)


def test_word_dropout_thins_real_examples_keeps_special_tokens_and_resumes(bundled):
    data = load_task_data(DataConfig(task="demo", allow_hub=False))
    enc = encode_split(data.train, bundled.tokenizer, 128)
    special = frozenset(bundled.tokenizer.all_special_ids)
    whole = RealBatcher(enc, 32, seed=3, micro_batch_tokens=None)
    thinned = RealBatcher(enc, 32, seed=3, micro_batch_tokens=None, word_dropout=0.3, keep_ids=special)
    full, thin = whole.next()[0], thinned.next()[0]
    # the same rows (a batch is sorted by length, so compare as a multiset), only their words differ
    assert sorted(full.labels.tolist()) == sorted(thin.labels.tolist())
    kept, total = int(thin.attention_mask.sum()), int(full.attention_mask.sum())
    words = total - 2 * len(full)                  # each row: [CLS] ... [SEP]
    assert 0.2 * words < total - kept < 0.4 * words   # about 30 % of the words dropped, none of the specials
    for row, mask in zip(thin.input_ids.tolist(), thin.attention_mask.tolist()):
        ids = [t for t, m in zip(row, mask) if m]
        assert ids[0] == bundled.tokenizer.cls_token_id and ids[-1] == bundled.tokenizer.sep_token_id
    # the dropout draws resume with the batcher: a restored batcher thins the next batch the same way
    state = thinned.state()
    again = RealBatcher(enc, 32, seed=3, micro_batch_tokens=None, word_dropout=0.3, keep_ids=special)
    again.load_state(state)
    assert thinned.next()[0].input_ids.tolist() == again.next()[0].input_ids.tolist()
    # and no dropout is the paper's batch, untouched
    assert RealBatcher(enc, 32, seed=3, micro_batch_tokens=None).next()[0].input_ids.tolist() == full.input_ids.tolist()
