"""Hostile inputs: each gives one clear line (a UserError, or `error: ...` with exit 2), writes nothing, no traceback."""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from distill_core.distilled import DistilledConfig, DistilledData
from distill_core.errors import UserError
from distill_core.paths import inside_allowed, run_name_in
from distill_core.preflight import check_run_config, check_uploads
from distill_core.views import form

REPO = Path(__file__).resolve().parent.parent


def _good() -> DistilledData:
    return DistilledData(DistilledConfig(seq_len=4), num_labels=2, hidden_size=6, num_layers=2, num_heads=2)


def _with_header(**changes) -> bytes:
    d = _good()
    header = json.loads(d.metadata()["distilled"])
    for key, value in changes.items():
        if key.startswith("config."):
            header["config"][key.split(".", 1)[1]] = value
        else:
            header[key] = value
    return save(d.tensors(), metadata={"distilled": json.dumps(header)})


def _with_tensor(name: str, value: torch.Tensor) -> bytes:
    d = _good()
    tensors = d.tensors()
    tensors[name] = value
    return save(tensors, metadata=d.metadata())


def _without(name: str) -> bytes:
    d = _good()
    tensors = {k: v for k, v in d.tensors().items() if k != name}
    return save(tensors, metadata=d.metadata())


def _huge_header_length() -> bytes:
    return struct.pack("<Q", 2 ** 60) + b"{}"


def _truncated() -> bytes:
    data = save(_good().tensors(), metadata=_good().metadata())
    return data[: len(data) - 40]


DISTILLED_FILES = [
    ("1 KB file claiming seq_len 10,000,000", lambda: _with_header(**{"config.seq_len": 10_000_000}), "seq_len=10000000"),
    ("hidden size 10^9", lambda: _with_header(hidden_size=10 ** 9), "hidden_size=1000000000"),
    ("negative num_labels", lambda: _with_header(num_labels=-3), "num_labels=-3"),
    ("boolean num_heads", lambda: _with_header(num_heads=True), "num_heads=True"),
    ("string num_layers", lambda: _with_header(num_layers="6"), "num_layers='6'"),
    ("shapes that disagree with the header", lambda: _with_header(**{"config.seq_len": 5}), "its own header says"),
    ("label names of the wrong length", lambda: _with_header(label_names=["a"]), "label_names"),
    ("a newer format", lambda: _with_header(version=999), "newer version"),
    ("attention mode it does not know", lambda: _with_header(**{"config.attention_labels": "diag"}),
     "config is invalid"),
    ("metadata that is not JSON", lambda: save(_good().tensors(), metadata={"distilled": "{not json"}),
     "not distilled data from this tool"),
    ("another tool's safetensors", lambda: save({"w": torch.zeros(2)}, metadata={"format": "pt"}),
     "not distilled data from this tool"),
    ("a missing tensor", lambda: _without("lr_raw"), "'lr_raw' is missing"),
    ("integer tensors", lambda: _with_tensor("lr_raw", torch.zeros(1, dtype=torch.int64)), "dtype I64"),
    ("NaN in the embeddings", lambda: _with_tensor("embeds", torch.full((2, 4, 6), float("nan"))), "NaN or inf"),
    ("inf in the attention labels", lambda: _with_tensor("attention_logits", torch.full((2, 2, 2, 4), float("inf"))),
     "NaN or inf"),
    ("a truncated file", _truncated, "not a readable safetensors file"),
    ("a header length of 2^60", _huge_header_length, "not a readable safetensors file"),
    ("a pickle renamed .safetensors", lambda: pickle.dumps({"embeds": [1, 2, 3]}), "not a readable safetensors file"),
    ("an empty file", lambda: b"", "not a readable safetensors file"),
    ("random bytes", lambda: os.urandom(4096), "not a readable safetensors file"),
]


@pytest.mark.parametrize("what, make, message", DISTILLED_FILES, ids=[d[0] for d in DISTILLED_FILES])
def test_hostile_distilled_files_are_refused_before_any_allocation(tmp_path, what, make, message):
    path = tmp_path / "x.safetensors"
    path.write_bytes(make())
    before = sorted(tmp_path.iterdir())
    with pytest.raises(UserError) as err:
        DistilledData.load(path)
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)
    assert sorted(tmp_path.iterdir()) == before


def test_paths_from_a_browser_cannot_leave_their_root(tmp_path):
    root, outside = tmp_path / "runs", tmp_path / "secret"
    root.mkdir()
    outside.mkdir()
    (outside / "config.json").write_text("{}")
    (root / "escape").symlink_to(outside)
    cases = [("../secret", "is not a run name"), (str(outside), "is not a run name"), ("a/b", "is not a run name"),
             ("..", "is not a run name"), ("", "is not a run name"), (".hidden", "is not a run name"),
             ("escape", "points outside")]
    for name, message in cases:
        with pytest.raises(UserError, match=message):
            run_name_in([root], name)
    allowed = [tmp_path / "data"]
    allowed[0].mkdir()
    (allowed[0] / "link").symlink_to(outside)
    for path, message in [(str(allowed[0] / ".." / "secret"), "outside the allowed"), ("/etc/passwd", "outside the allowed"),
                          (str(allowed[0] / "link" / "config.json"), "outside the allowed")]:
        with pytest.raises(UserError, match=message):
            inside_allowed(path, allowed, "the data directory")
    with pytest.raises(UserError, match="disabled on a served app"):
        inside_allowed(str(allowed[0]), [], "the train file path")
    assert inside_allowed(str(allowed[0] / "x.csv"), allowed, "the train file path") == (allowed[0] / "x.csv").resolve()
    assert sorted(p.name for p in root.iterdir()) == ["escape"]


UPLOADS = [
    (b"\xff\xfe\x00 not text", "not UTF-8"),
    (b'sentence,label\n"no closing quote,positive\nx,negative\n', "a quote that is never closed"),
    (b"sentence,label\na,b,c\n", "line 2 has 3 field(s)"),
    (b"sentence,label\nfine,\nbad,negative\n", "empty label"),
    (b"sentence,label\nonly,positive\n", "single class"),
]


@pytest.mark.parametrize("train, message", UPLOADS)
def test_hostile_uploads_give_one_line_naming_the_upload(train, message):
    cfg = form.config_from_values({"text_columns": "sentence", "label_column": "label"}, "upload")
    with pytest.raises(UserError) as err:
        check_uploads(cfg, {"train": ("evil.csv", train), "eval": ("e.csv", b"sentence,label\na,x\nb,y\n")})
    assert message in str(err.value) and "'evil.csv'" in str(err.value) and "\n" not in str(err.value)


def test_a_huge_csv_cell_is_read_and_cut_at_max_length():
    cfg = form.config_from_values({"text_columns": "sentence", "label_column": "label"}, "upload")
    big = b"sentence,label\n" + b"word " * 400_000 + b",positive\nshort,negative\n"   # a 2 MB cell
    check_uploads(cfg, {"train": ("big.csv", big), "eval": ("e.csv", b"sentence,label\na,positive\nb,negative\n")})


SETTINGS = [({"seq_len": 0}, "seq_len must be >= 2"), ({"outer_steps": -1}, "outer_steps must be >= 1"),
            ({"real_batch_size": 0}, "real_batch_size must be >= 1"), ({"lr_embeds": 1e9}, "lr_embeds must be in"),
            ({"eval_learners": 0}, "eval_learners must be >= 1"), ({"max_length": 100_000}, "max_length must be in"),
            ({"samples_per_class": 0}, "samples_per_class must be >= 1"),
            ({"save_every_minutes": -1.0}, "save_every_minutes must be in"),
            ({"recompute_copies": 1000}, "recompute_copies must be in"),
            ({"inner_lr_init": -1.0}, "inner_lr_init must be > 0"),
            ({"seq_len": 100_000}, "above the model's 512 max positions")]


@pytest.mark.parametrize("values, message", SETTINGS, ids=[next(iter(v)) for v, _ in SETTINGS])
def test_absurd_settings_are_refused_by_name(values, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        check_run_config(form.config_from_values({"task": "demo", **values}))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distill_core", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)


def test_the_cli_answers_hostile_input_with_one_line(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    cfg = form.config_from_values({"task": "demo", "seq_len": 4}).to_dict()
    (run / "config.json").write_text(json.dumps(cfg))
    (run / "checkpoints" / "last.safetensors").write_bytes(_with_header(**{"config.seq_len": 10_000_000}))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for args, message in [(("evaluate", str(run), "--learners", "1"), "seq_len=10000000"),
                          (("inspect", str(tmp_path / "nowhere")), "run directory not found"),
                          (("distill", "--resume", "--out", str(run), "--lr-embeds", "0.5", "--seq-len", "9"),
                           "refused: --lr-embeds (lr_embeds: 0.01 in the run, 0.5 asked); --seq-len")]:
        done = _cli(*args)
        lines = [x for x in done.stderr.splitlines() if x.strip()]
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
        assert lines[-1].startswith("error: ") and message in lines[-1], lines[-1]
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_a_bare_run_name_on_the_command_line_is_looked_up_inside_the_run_roots(tmp_path, monkeypatch):
    from distill_core.paths import cli_run_path

    (tmp_path / "runs" / "mine").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert cli_run_path("mine", [tmp_path / "runs"]) == tmp_path / "runs" / "mine"
    for name in ("x;rm -rf", ".hidden", "a b"):
        with pytest.raises(UserError, match="is not a run name"):
            cli_run_path(name, [tmp_path / "runs"])


def test_out_never_scatters_a_run_into_a_directory_that_holds_other_files(tmp_path):
    from distill_core.paths import cli_out_path

    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("mine")
    (tmp_path / "notes.txt").write_text("mine")
    runs = tmp_path / "runs"
    assert cli_out_path("fresh", runs, resume=False) == runs / "fresh"          # a name lands in the runs root
    assert cli_out_path(str(tmp_path / "new" / "run"), runs, resume=False) == tmp_path / "new" / "run"
    (tmp_path / "empty").mkdir()
    assert cli_out_path(str(tmp_path / "empty"), runs, resume=False) == tmp_path / "empty"
    for arg, message in [(str(home), "holds other files and no run"), (str(tmp_path / "notes.txt"), "is a file"),
                         (str(home / ".."), "holds other files and no run"), ("../x", None), ("x y", "not a run name")]:
        if message is None:   # a relative path is a path, not a name: taken as given
            assert cli_out_path(arg, runs, resume=False) == Path(arg)
            continue
        with pytest.raises(UserError, match=message):
            cli_out_path(arg, runs, resume=False)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    done = _cli("distill", "--task", "demo", "--outer-steps", "1", "--out", str(home))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "holds other files and no run" in done.stderr.splitlines()[-1]
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
