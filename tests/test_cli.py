"""The command line end to end (tiny settings), and one clear error line for every bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from distill_core.cli import main
from distill_core.distilled import DistilledConfig, DistilledData

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
TINY = ["--seq-len", "8", "--eval-learners", "2", "--eval-rows", "40", "--real-batch", "16", "--threads", "2"]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "distill_core", *args], capture_output=True, text=True,
                          cwd=cwd or REPO, env=env, timeout=600)


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def test_documented_forms_end_to_end(tmp_path, shared_data):
    out = tmp_path / "sst2-demo"
    r = run_cli("distill", "--task", "sst2", "--data-dir", str(shared_data), "--samples-per-class", "1",
                "--inner-steps", "1", "--seq-len", "8", "--label-type", "soft", "--attention-labels", "cls",
                "--outer-steps", "3", "--eval-every", "2", "--eval-learners", "2", "--eval-rows", "40",
                "--train-rows", "400", "--out", str(out))
    assert r.returncode == 0, r.stderr
    summary = last_json(r.stdout)
    assert summary["status"] == "done" and summary["step"] == 3
    assert {p.name for p in (out / "checkpoints").iterdir()} >= {"last.safetensors", "best.safetensors"}
    assert (out / "metrics.jsonl").exists() and (out / "config.json").exists()

    r = run_cli("evaluate", str(out), "--learners", "3")
    assert r.returncode == 0, r.stderr
    metrics = last_json(r.stdout)
    assert set(metrics) == {"accuracy"} and metrics["accuracy"]["n"] == 3
    assert 0 <= metrics["accuracy"]["mean"] <= 100 and metrics["accuracy"]["std"] >= 0
    results = json.loads((out / "results.json").read_text())
    assert results["evaluation"]["metrics"] == metrics and results["evaluation"]["eval_rows"] == 872  # the whole split

    r = run_cli("inspect", str(out), "--top-k", "5")
    assert r.returncode == 0, r.stderr
    assert "sample 0 (class negative)" in r.stdout and "sample 1 (class positive)" in r.stdout
    assert "decoded:" in r.stdout and "learned inner lrs" in r.stdout
    assert r.stdout.count("Word order: this sample's token vectors") == 2     # one per sample


@pytest.mark.parametrize("kind,extra", [
    ("majority", []),
    ("random-kshot", ["--learners", "2"]),
    ("full", ["--full-steps", "2", "--train-rows", "200"]),
])
def test_baselines(capsys, shared_data, kind, extra):
    code = main(["baseline", "--task", "sst2", "--data-dir", str(shared_data), "--kind", kind, "--eval-rows", "60",
                 *extra])
    assert code == 0
    metrics = last_json(capsys.readouterr().out)
    assert 0 <= metrics["accuracy"]["mean"] <= 100
    if kind == "majority":
        assert metrics["accuracy"]["std"] == 0.0


def test_majority_baseline_on_full_validation(capsys, shared_data):
    assert main(["baseline", "--task", "sst2", "--data-dir", str(shared_data), "--kind", "majority"]) == 0
    # 444 of the 872 validation sentences are positive, the train majority class
    assert last_json(capsys.readouterr().out)["accuracy"]["mean"] == pytest.approx(100 * 444 / 872)


def test_custom_data_multi_step_real_init(tmp_path, capsys):
    words_pos = ["bright", "lovely", "clever", "moving", "fresh", "charming"]
    words_neg = ["dull", "clumsy", "tired", "bland", "muddled", "sour"]
    rows = [(f"a {w} story with a {v} ending", "up") for w in words_pos for v in words_pos[:3]] + \
           [(f"a {w} story with a {v} ending", "down") for w in words_neg for v in words_neg[:3]]
    pd.DataFrame(rows, columns=["review", "verdict"]).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame(rows[::4], columns=["review", "verdict"]).to_json(tmp_path / "eval.jsonl", orient="records",
                                                                  lines=True)
    out = tmp_path / "custom"
    code = main(["distill", "--train-file", str(tmp_path / "train.csv"), "--eval-file", str(tmp_path / "eval.jsonl"),
                 "--text-column", "review", "--label-column", "verdict", "--samples-per-class", "3",
                 "--inner-steps", "3", "--different-data-per-step", "--init", "real", "--outer-steps", "2",
                 "--eval-every", "0", "--no-baselines", "--out", str(out), *TINY])
    assert code == 0
    assert last_json(capsys.readouterr().out)["status"] == "done"
    d = DistilledData.load(out / "checkpoints" / "last.safetensors")
    assert d.label_names == ["down", "up"] and d.num_samples == 6 and d.inner_lrs().shape == (3,)
    assert len(d.meta["init_examples"]) == 6


def _bad_cases(tmp_path: Path, shared_data: Path) -> dict[str, tuple[list[str], str]]:
    good = tmp_path / "good.csv"
    pd.DataFrame({"text": ["fine", "awful", "great", "poor"], "label": ["pos", "neg", "pos", "neg"]}).to_csv(good, index=False)
    one_class = tmp_path / "one.csv"
    pd.DataFrame({"text": ["fine", "great"], "label": ["pos", "pos"]}).to_csv(one_class, index=False)
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    odd = tmp_path / "odd.csv"
    pd.DataFrame({"text": ["meh"], "label": ["so-so"]}).to_csv(odd, index=False)
    custom = ["--text-column", "text", "--label-column", "label"]
    d = ["--data-dir", str(shared_data)]
    return {
        "unknown task": (["distill", "--task", "sst3"], "unknown task 'sst3'"),
        "missing file": (["distill", "--train-file", str(tmp_path / "no.csv"), "--eval-file", str(good), *custom],
                         "data file not found"),
        "wrong column": (["distill", "--train-file", str(good), "--eval-file", str(good), "--text-column", "body",
                          "--label-column", "label"], "missing column(s) 'body'"),
        "labels outside": (["distill", "--train-file", str(good), "--eval-file", str(odd), *custom],
                           "outside the task's labels"),
        "empty split": (["distill", "--train-file", str(good), "--eval-file", str(empty), *custom], "split is empty"),
        "single class": (["distill", "--train-file", str(one_class), "--eval-file", str(good), *custom],
                         "single class"),
        "seq-len too long": (["distill", "--task", "sst2", *d, "--seq-len", "1024"], "above the model's 512"),
        "incompatible": (["distill", "--task", "sst2", *d, "--samples-per-class", "3", "--inner-steps", "2",
                          "--different-data-per-step"], "multiple of inner_steps"),
        "no train split": (["distill", "--task", "qnli", *d, "--no-hub"], "no train split"),
        "not a run": (["evaluate", str(tmp_path)], "not a run directory"),
    }


def test_bad_input_gives_one_clear_line(tmp_path, capsys, shared_data):
    for name, (argv, message) in _bad_cases(tmp_path, shared_data).items():
        runs_before = set(tmp_path.rglob("*"))
        code = main([*argv, "--out", str(tmp_path / "never")] if argv[0] == "distill" else argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, name
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], (name, err)
        assert set(tmp_path.rglob("*")) == runs_before, f"{name}: something was written"
        assert not (tmp_path / "never").exists()


def test_bad_distilled_files(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["distill", "--task", "demo", "--outer-steps", "1", "--eval-every", "0", "--no-baselines",
                 "--no-eval-at-start", "--out", str(out), *TINY]) == 0
    capsys.readouterr()
    last = out / "checkpoints" / "last.safetensors"
    good = last.read_bytes()
    last.write_bytes(b"PK\x03\x04 definitely not safetensors")
    assert main(["evaluate", str(out), "--learners", "1"]) == 2
    assert "not a readable safetensors file" in capsys.readouterr().err
    # distilled data of another model (hidden 12, 2 layers) under the same name
    DistilledData(DistilledConfig(seq_len=8), 2, 12, 2, 2).save(last)
    assert main(["evaluate", str(out), "--learners", "1"]) == 2
    err = capsys.readouterr().err
    assert "made for another model or task: hidden_size is 12 in the file but 384" in err
    last.write_bytes(good)
    assert main(["evaluate", str(out), "--learners", "1", "--checkpoint", "step-999"]) == 2
    assert "no checkpoint 'step-999'" in capsys.readouterr().err
    assert main(["evaluate", str(out), "--learners", "1"]) == 0


def test_subprocess_error_has_no_traceback(tmp_path):
    r = run_cli("distill", "--task", "sst3")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: unknown task 'sst3'")


def test_help_documents_every_setting():
    r = run_cli("distill", "--help")
    assert r.returncode == 0
    for flag in ("--seq-len", "--samples-per-class", "--inner-steps", "--different-data-per-step", "--label-type",
                 "--attention-labels", "--inner-lr-init", "--init", "--outer-steps", "--eval-every", "--eval-learners",
                 "--lr-embeds", "--lr-inner-lr", "--warmup-ratio", "--grad-clip", "--resume", "--data-dir",
                 "--train-file", "--text-column", "--label-column", "--model", "--device", "--max-minutes"):
        assert flag in r.stdout, flag
    assert torch.__version__


def test_lr_flags_combine():
    from distill_core.cli import build_parser, run_config_from_args

    cfg = run_config_from_args(build_parser().parse_args(
        ["distill", "--task", "demo", "--lr", "0.03", "--lr-inner-lr", "0.1"]))
    assert (cfg.distill.lr_embeds, cfg.distill.lr_attention, cfg.distill.lr_inner_lr) == (0.03, 0.03, 0.1)
    default = run_config_from_args(build_parser().parse_args(["distill", "--task", "demo"]))
    assert default.distill.lr_embeds == type(default.distill)().lr_embeds


def test_evaluate_takes_runs_files_checkpoints_and_splits_and_keeps_every_result(tmp_path, capsys):
    from distill_core.cli import main
    from distill_core.runs import RunDir

    out = tmp_path / "r"
    assert main(["distill", "--task", "demo", "--no-hub", "--seq-len", "8", "--real-batch", "4", "--max-length", "16",
                 "--outer-steps", "2", "--eval-every", "1", "--eval-learners", "1", "--no-baselines",
                 "--out", str(out)]) == 0
    capsys.readouterr()
    run = RunDir(out)
    assert main(["evaluate", str(out), "--learners", "2"]) == 0
    assert main(["evaluate", str(out), "--learners", "2", "--split", "dev", "--checkpoint", "step-000001"]) == 0
    keys = set(run.results()["evaluations"])
    assert keys == {"last|validation|2|seed 1234", "step-000001|dev|2|seed 1234"}   # the first was not overwritten
    assert run.results()["evaluation"]["split"] == "dev"
    before = run.results()
    capsys.readouterr()
    assert main(["evaluate", str(out / "checkpoints" / "last.safetensors"), "--learners", "1"]) == 0
    assert "accuracy" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert run.results() == before                                   # a bare file writes nothing into the run
    assert main(["evaluate", str(out), "--learners", "1", "--split", "test"]) == 2
