"""Command line: `python -m distill_core distill|evaluate|baseline|study|inspect` for headless runs."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from .errors import UserError

__all__ = ["main", "build_parser"]


def _add_data_args(p: argparse.ArgumentParser) -> None:
    from .data import DataConfig

    g = p.add_argument_group("data")
    g.add_argument("--task", help="registered task: sst2, mrpc, qnli, ag_news, rte, mnli, qqp, demo")
    g.add_argument("--data-dir", help="directory with <task>/<split>.parquet|csv|tsv|jsonl (env DISTILL_DATA_DIR); "
                                      "the Hugging Face hub is tried next")
    g.add_argument("--train-file", help="custom data: train file (csv/tsv/jsonl/parquet), instead of --task")
    g.add_argument("--eval-file", help="custom data: evaluation file")
    g.add_argument("--text-column", action="append", default=[],
                   help="custom data: text column; give twice for sentence pairs")
    g.add_argument("--label-column", help="custom data: label column (strings or integers)")
    g.add_argument("--max-length", type=int, default=128, help="max tokens per real example (default 128)")
    g.add_argument("--real-batch", type=int, default=32, help="real mini-batch size of the outer loss (default 32)")
    g.add_argument("--train-rows", type=int, help="use at most this many random train rows")
    g.add_argument("--eval-rows", type=int, help="use at most this many random evaluation rows")
    g.add_argument("--no-hub", action="store_true", help="never try the Hugging Face hub")
    dc = DataConfig()
    g.add_argument("--dev-fraction", type=float, default=dc.dev_fraction,
                   help="share of train held out (stratified, seeded) as the dev split that periodic validation, "
                        f"best and grids use; 0: none, select on the evaluation split (default {dc.dev_fraction})")
    g.add_argument("--dev-max-rows", type=int, default=dc.dev_max_rows,
                   help=f"at most this many dev rows (default {dc.dev_max_rows})")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default=None,
                   help="BERT-family checkpoint (hub name or path); default: the bundled all-MiniLM-L6-v2")
    g.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps")
    g.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16"])
    g.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")


def _data_config(a):
    from .data import DataConfig

    return DataConfig(task=None if a.train_file else a.task, data_dir=a.data_dir, train_file=a.train_file,
                      eval_file=a.eval_file, text_columns=list(a.text_column), label_column=a.label_column,
                      max_length=a.max_length, real_batch_size=a.real_batch, train_rows=a.train_rows,
                      eval_rows=a.eval_rows, allow_hub=not a.no_hub, seed=getattr(a, "seed", 0),
                      dev_fraction=a.dev_fraction, dev_max_rows=a.dev_max_rows)


def _model_config(a):
    from .learner import BUNDLED_MODEL, ModelConfig

    return ModelConfig(name=a.model or BUNDLED_MODEL, device=a.device, dtype=a.dtype)


def build_parser() -> argparse.ArgumentParser:
    from .distilled import DistilledConfig
    from .distiller import DistillConfig

    dd, oc = DistilledConfig(), DistillConfig()
    parser = argparse.ArgumentParser(prog="python -m distill_core",
                                     description="Dataset distillation with attention labels for BERT classifiers.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("distill", help="learn distilled data (the outer loop)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_data_args(p)
    _add_model_args(p)
    g = p.add_argument_group("distilled data")
    g.add_argument("--seq-len", type=int, default=dd.seq_len, help="positions L of each synthetic sample")
    g.add_argument("--samples-per-class", type=int, default=dd.samples_per_class)
    g.add_argument("--inner-steps", type=int, default=dd.inner_steps, help="T inner SGD steps")
    g.add_argument("--different-data-per-step", action="store_true",
                   help="step t uses its own share of the samples (samples-per-class must be a multiple of T)")
    g.add_argument("--label-type", choices=["hard", "soft", "unrestricted"], default=dd.label_type)
    g.add_argument("--attention-labels", choices=["none", "cls", "all"], default=dd.attention_labels)
    g.add_argument("--attention-weight", type=float, default=dd.attention_loss_weight, help="lambda of L_attn")
    g.add_argument("--inner-lr-init", type=float, default=dd.inner_lr_init)
    g.add_argument("--init", choices=["random", "real"], default=dd.init,
                   help="random normal (the paper) or word embeddings of real train examples")
    g.add_argument("--attention-init", choices=["random", "model"], default=dd.attention_init,
                   help="attention labels start random N(0,1) (the paper) or at the pre-trained model's own "
                        "attention on the initial sample (KL 0 at the start)")
    g = p.add_argument_group("outer loop")
    g.add_argument("--outer-steps", type=int, default=oc.outer_steps)
    g.add_argument("--optimizer", choices=["adam", "adamw"], default=oc.optimizer)
    g.add_argument("--lr", type=float,
                   help="outer learning rate of every part that has no --lr-<part> of its own")
    g.add_argument("--lr-embeds", type=float, help=f"outer lr of the embeddings (default {oc.lr_embeds})")
    g.add_argument("--lr-labels", type=float, help=f"outer lr of the labels (default {oc.lr_labels})")
    g.add_argument("--lr-attention", type=float, help=f"outer lr of the attention labels (default {oc.lr_attention})")
    g.add_argument("--lr-inner-lr", type=float,
                   help=f"outer lr of the learned inner lr (softplus-parametrised; default {oc.lr_inner_lr})")
    g.add_argument("--weight-decay", type=float, default=oc.weight_decay)
    g.add_argument("--warmup-ratio", type=float, default=oc.warmup_ratio)
    g.add_argument("--schedule", choices=["linear", "constant"], default=oc.schedule,
                   help="after warm-up: linear decay to 0 (the paper) or constant")
    g.add_argument("--grad-clip", type=float, default=oc.grad_clip, help="0 disables")
    g.add_argument("--eval-every", type=int, default=oc.eval_every, help="0: only at start and end")
    g.add_argument("--eval-learners", type=int, default=oc.eval_learners)
    g.add_argument("--eval-precision", choices=["float32", "bfloat16"], default=oc.eval_precision,
                   help="bfloat16: score under bf16 autocast (faster on CPUs with bf16 units; fine-tuning stays fp32)")
    g.add_argument("--no-eval-at-start", action="store_true")
    g.add_argument("--no-baselines", action="store_true", help="skip majority/random-k-shot baselines")
    g.add_argument("--max-minutes", type=float, help="wall-clock budget; the run stops cleanly when spent")
    g.add_argument("--save-every-minutes", type=float, default=oc.save_every_minutes,
                   help="also commit a resume point this often (0: only at evaluations and at the end)")
    g.add_argument("--inner-memory", choices=["auto", "store", "recompute"], default=oc.inner_memory,
                   help="keep every inner step's parameters (fast) or recompute them (memory flat in T); "
                        "auto recomputes for T > 5")
    g.add_argument("--recompute-copies", type=int, default=oc.recompute_copies,
                   help="recompute mode: parameter copies kept besides theta_0; 0 uses the least memory "
                        "(about 1.2x that of T=1) but recomputes the most steps")
    g.add_argument("--seed", type=int, default=oc.seed)
    g.add_argument("--seeds", type=int, default=1,
                   help="distil this many times, with seeds --seed, --seed+1, ..., into OUT-seedN each; "
                        "evaluate them together with `evaluate OUT-seed0 OUT-seed1 ...`")
    g.add_argument("--out", help="run directory (default: $DISTILL_RUNS_DIR or runs/, plus a generated name)")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last resume point; flags that do not change the method "
                        f"({', '.join('--' + f.replace('_', '-') for f in RESUME_OVERRIDES)}) apply, others are "
                        "refused")

    p = sub.add_parser("evaluate", help="fine-tune N fresh learners on a run's distilled data",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("run", nargs="+",
                   help="run directory (or a run name), or a distilled-data .safetensors file (its header names "
                        "the task and model; --data-dir says where the data is); several runs (the seeds of one "
                        "setting) print, besides each, the mean and std over seeds and the pooled learner std")
    p.add_argument("--learners", type=int, default=100)
    p.add_argument("--checkpoint", default="last", help="last, best or step-NNNNNN (runs only)")
    p.add_argument("--split", help="the task's evaluation split (default) or dev (the selection split the run "
                                   "validated on)")
    p.add_argument("--seed", type=int, default=1234, help="head seeds seed..seed+N-1")
    p.add_argument("--data-dir", help="override the run's data directory")
    p.add_argument("--eval-rows", type=int,
                   help="score on this many random evaluation rows (default: the whole evaluation split, "
                        "whatever cap the run used for its periodic validation)")
    p.add_argument("--precision", choices=["float32", "bfloat16"], default="float32",
                   help="bfloat16: score under bf16 autocast (faster on CPUs with bf16 units)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int)

    p = sub.add_parser("baseline", help="majority, random real k-shot, or full-data fine-tuning",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_data_args(p)
    _add_model_args(p)
    p.add_argument("--kind", required=True, choices=["majority", "random-kshot", "random-kshot-tuned", "full"],
                   help="random-kshot-tuned: the inner lr is chosen on the dev split's loss over --lr-grid, "
                        "per (k, inner steps), then scored like random-kshot")
    p.add_argument("--lr-grid", type=float, nargs="+", help="random-kshot-tuned: inner lrs to try "
                   "(default 0.01 0.03 0.1 0.3 1.0)")
    p.add_argument("--learners", type=int, default=20)
    p.add_argument("--k", type=int, default=1, help="random-kshot: real examples per class")
    p.add_argument("--inner-steps", type=int, default=1, help="random-kshot: SGD steps")
    p.add_argument("--different-data-per-step", action="store_true")
    p.add_argument("--inner-lr", type=float, default=DistilledConfig().inner_lr_init, help="random-kshot: SGD lr")
    p.add_argument("--precision", choices=["float32", "bfloat16"], default="float32",
                   help="random-kshot: score under bf16 autocast")
    p.add_argument("--full-steps", type=int, default=500, help="full: AdamW steps of --real-batch examples")
    p.add_argument("--full-lr", type=float, default=5e-5)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--out", help="also write the result JSON to this file")

    from .study import add_parser as add_study_parser

    add_study_parser(sub)

    p = sub.add_parser("inspect", help="nearest tokens, labels, learned lrs and attention KL of a run")
    p.add_argument("run", help="run directory")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--checkpoint", default="last")
    p.add_argument("--data-dir", help="override the run's data directory")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--device", default="auto")
    return parser


def _set_threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def run_config_from_args(a):
    """The RunConfig that `distill`'s flags describe (also used by the bench scripts)."""
    from .distilled import DistilledConfig
    from .distiller import DistillConfig, RunConfig

    defaults = DistillConfig()
    lrs = {}
    for part in ("lr_embeds", "lr_labels", "lr_attention", "lr_inner_lr"):  # own flag, then --lr, then default
        own = getattr(a, part)
        lrs[part] = own if own is not None else a.lr if a.lr is not None else getattr(defaults, part)
    return RunConfig(
        data=_data_config(a), model=_model_config(a),
        distilled=DistilledConfig(seq_len=a.seq_len, samples_per_class=a.samples_per_class,
                                  inner_steps=a.inner_steps, different_data_per_step=a.different_data_per_step,
                                  label_type=a.label_type, attention_labels=a.attention_labels,
                                  attention_loss_weight=a.attention_weight, inner_lr_init=a.inner_lr_init,
                                  init=a.init, attention_init=a.attention_init),
        distill=DistillConfig(outer_steps=a.outer_steps, optimizer=a.optimizer, weight_decay=a.weight_decay,
                              warmup_ratio=a.warmup_ratio, schedule=a.schedule, grad_clip=a.grad_clip, eval_every=a.eval_every,
                              eval_learners=a.eval_learners, eval_precision=a.eval_precision, eval_at_start=not a.no_eval_at_start,
                              baselines=not a.no_baselines, max_minutes=a.max_minutes, seed=a.seed,
                              save_every_minutes=a.save_every_minutes,
                              inner_memory=a.inner_memory, recompute_copies=a.recompute_copies, **lrs))


# Settings --resume may change: they change how long, where and how often, never what is learned.
RESUME_OVERRIDES = ("outer_steps", "device", "threads", "eval_every", "eval_learners", "eval_precision",
                    "save_every_minutes", "max_minutes", "inner_memory", "recompute_copies", "data_dir")
# flag dest -> (config section, field) where the names differ
_DEST_FIELDS = {"real_batch": ("data", "real_batch_size"), "attention_weight": ("distilled", "attention_loss_weight"),
                "model": ("model", "name"), "no_eval_at_start": ("distill", "eval_at_start"),
                "no_baselines": ("distill", "baselines"), "no_hub": ("data", "allow_hub"),
                "text_column": ("data", "text_columns"), "train_file": ("data", "train_file")}


def explicit_flags(argv: list[str], parser: argparse.ArgumentParser) -> set[str]:
    """The dests of the `distill` options written on the command line (defaults do not count)."""
    sub = next(a for a in parser._subparsers._group_actions[0].choices.values() if a.prog.endswith(" distill"))
    found = set()
    for token in argv:
        opt = token.split("=", 1)[0]
        action = sub._option_string_actions.get(opt)
        if action is not None:
            found.add(action.dest)
    return found


def resume_config(saved, asked, explicit: set[str]):
    """The saved run's config with the allowed overrides applied; refuses method changes, listing them."""
    sections = {"data": saved.data, "model": saved.model, "distilled": saved.distilled, "distill": saved.distill}
    asked_sections = {"data": asked.data, "model": asked.model, "distilled": asked.distilled,
                      "distill": asked.distill}
    refused = []
    for dest in sorted(explicit - {"resume", "out", "threads"}):
        targets = [(sec, f) for sec, obj in sections.items() for f in obj.__dataclass_fields__ if f == dest]
        if dest in _DEST_FIELDS:
            targets = [_DEST_FIELDS[dest]]
        elif dest == "lr":
            targets = [("distill", f) for f in ("lr_embeds", "lr_labels", "lr_attention", "lr_inner_lr")]
        for sec, f in targets:
            old, new = getattr(sections[sec], f), getattr(asked_sections[sec], f)
            if old == new:
                continue
            if f in RESUME_OVERRIDES:
                setattr(sections[sec], f, new)
            else:
                refused.append(f"--{dest.replace('_', '-')} ({f}: {old!r} in the run, {new!r} asked)")
    if refused:
        raise UserError("--resume cannot change the method of a run; refused: " + "; ".join(refused) +
                        f". Allowed: {', '.join('--' + f.replace('_', '-') for f in RESUME_OVERRIDES)}")
    saved.validate()
    return saved


def _cmd_distill(a, argv: list[str] | None = None) -> int:
    from .distiller import RunConfig
    from .runs import RunDir, default_runs_dir, new_run_name, write_json

    _set_threads(a.threads)
    cfg = run_config_from_args(a)
    if a.resume and not a.out:
        raise UserError("--resume needs --out naming the run directory")
    if a.resume:
        run = RunDir(Path(a.out)).require()
        cfg = resume_config(RunConfig.from_dict(run.config()), cfg, explicit_flags(argv or [], build_parser()))
        write_json(run.config_path, {**run.config(), **cfg.to_dict()})   # the run records what it became
    out = Path(a.out) if a.out else default_runs_dir() / new_run_name(cfg.data.task or "custom")
    if a.seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {a.seeds}")
    if a.seeds > 1 and a.resume:
        raise UserError("--resume continues one run; resume each seed's run (OUT-seedN) on its own")
    if a.seeds == 1:
        return _distill_one(cfg, out, a.resume)
    import copy

    status = 0
    for k in range(a.seeds):   # the data seed (dev split, caps) stays: only the distillation's seed moves
        seeded = copy.deepcopy(cfg)
        seeded.distill.seed = cfg.distill.seed + k
        status = max(status, _distill_one(seeded, out.with_name(f"{out.name}-seed{seeded.distill.seed}"), False))
    return status


def _distill_one(cfg, out: Path, resume: bool) -> int:
    """One distillation with a progress bar; Ctrl-C and SIGTERM stop it cleanly after the current step."""
    from tqdm import tqdm

    from .distiller import Distiller

    distiller = Distiller(cfg, run_dir=out, resume=resume)
    bar = tqdm(total=cfg.distill.outer_steps, initial=distiller.step, desc="distill", unit="step",
               file=sys.stderr, dynamic_ncols=True)
    metric = distiller.prep.task.spec.primary_metric
    last_acc = {}

    def on_event(e: dict) -> None:
        if e["type"] == "step":
            bar.update(1)
            bar.set_postfix(loss=f"{e['real_loss']:.3f}", lr=f"{e['inner_lrs'][0]:.3g}", **last_acc)
        elif e["type"] == "eval":
            m = e["metrics"][metric]
            last_acc[metric[:3]] = f"{m['mean']:.1f}±{m['std']:.1f}"
            bar.write(f"step {e['step']}: {metric} {m['mean']:.2f} ± {m['std']:.2f} (n={m['n']}, {e['seconds']:.0f}s)")
        elif e["type"] == "baseline":
            m = e["metrics"][metric]
            bar.write(f"baseline {e['name']}: {metric} {m['mean']:.2f} ± {m['std']:.2f}")
        elif e["type"] == "error":
            bar.write(f"error: {e['message']} (the last good checkpoint is kept)")

    distiller.add_callback(on_event)
    previous = signal.getsignal(signal.SIGINT)

    def on_interrupt(signum, frame):  # first Ctrl-C stops cleanly after the current step
        bar.write("stopping after this step (Ctrl-C again to abort)")
        distiller.stop()
        signal.signal(signal.SIGINT, previous)

    signal.signal(signal.SIGINT, on_interrupt)
    signal.signal(signal.SIGTERM, lambda *_: (bar.write("SIGTERM: stopping after this step"), distiller.stop()))
    summary = distiller.run_loop()
    bar.close()
    if distiller.prep.task.is_demo:
        print("note: this run used the built-in demo dataset; its numbers say nothing about real benchmarks",
              file=sys.stderr)
    print(json.dumps({"run": str(out), **summary}))
    return 1 if summary["status"] == "error" else 0


def _load_for_run(run_path: str, checkpoint: str, data_dir: str | None, device: str, eval_rows: int | None = None):
    """A run's config, prepared data/learner and the chosen distilled checkpoint."""
    from .distilled import DistilledData
    from .distiller import RunConfig, prepare
    from .runs import RunDir

    from .paths import cli_run_path
    from .runs import default_runs_dir

    import os

    study = os.environ.get("DISTILL_STUDY_DIR") or Path(__file__).resolve().parent.parent / "docs" / "reproduction"
    study_runs = Path(study) / "runs"
    run = RunDir(cli_run_path(run_path, [default_runs_dir(), study_runs])).require()
    cfg = RunConfig.from_dict(run.config())
    if data_dir:
        cfg.data.data_dir = data_dir
    cfg.data.eval_rows = eval_rows
    cfg.model.device = device
    path = run.checkpoint(checkpoint)
    if not path.exists():
        raise UserError(f"{run.path} has no checkpoint {checkpoint!r}; available: "
                        f"{', '.join(run.list_checkpoints()) or 'none'}")
    prep = prepare(cfg)
    distilled = DistilledData.load(path, device=prep.learner.device, dtype=prep.learner.dtype,
                                   expect=prep.learner.fingerprint())
    return run, cfg, prep, distilled


def _load_bare_file(path: Path, data_dir: str | None, device: str, eval_rows: int | None):
    """A distilled-data file on its own: its header names the task and the model."""
    from .data import DataConfig
    from .distilled import DistilledData
    from .distiller import RunConfig, prepare
    from .learner import ModelConfig

    meta = DistilledData.load(path).meta
    if not meta.get("task") or meta.get("task") == "custom":
        raise UserError(f"{path} does not name a registered task in its header; evaluate its run directory instead")
    cfg = RunConfig(data=DataConfig(task=meta["task"], data_dir=data_dir, eval_rows=eval_rows),
                    model=ModelConfig(name=meta.get("model") or ModelConfig().name, device=device))
    prep = prepare(cfg)
    distilled = DistilledData.load(path, device=prep.learner.device, dtype=prep.learner.dtype,
                                   expect=prep.learner.fingerprint())
    return None, cfg, prep, distilled


def _cmd_evaluate(a) -> int:
    from .evaluation import aggregate_seeds

    _set_threads(a.threads)
    if len(a.run) == 1:
        print(json.dumps(_evaluate_one(a, a.run[0])["metrics"]))
        return 0
    results = [_evaluate_one(a, r) for r in a.run]
    aggregate = aggregate_seeds([r["per_learner"] for r in results])
    print(json.dumps({"runs": a.run, "per_run": [r["metrics"] for r in results], "across_seeds": aggregate}))
    return 0


def _evaluate_one(a, run_arg: str) -> dict:
    from tqdm import tqdm

    from .evaluation import EvalConfig, evaluate_distilled

    target = Path(run_arg)
    if target.is_file() and target.suffix == ".safetensors":
        run, cfg, prep, distilled = _load_bare_file(target, a.data_dir, a.device, a.eval_rows)
    else:
        run, cfg, prep, distilled = _load_for_run(run_arg, a.checkpoint, a.data_dir, a.device, a.eval_rows)
    eval_name = prep.task.spec.eval_split if not cfg.data.is_custom else "evaluation file"
    split = a.split or eval_name
    if split == "dev":
        if prep.dev is None:
            raise UserError("this run has no dev split (made before it, or with dev_fraction 0)")
        encoded = prep.dev
    elif split in (eval_name, prep.task.spec.eval_split):
        encoded = prep.eval
    else:
        raise UserError(f"--split must be dev or {eval_name}, got {split!r}")
    bar = tqdm(total=a.learners, desc="evaluate", unit="learner", file=sys.stderr, dynamic_ncols=True)
    result = evaluate_distilled(prep.learner, distilled, encoded, prep.task.spec.metrics,
                                EvalConfig(learners=a.learners, seed=a.seed, precision=a.precision),
                                progress=lambda done, total: bar.update(1))
    bar.close()
    if run is not None:
        run.add_evaluation({"checkpoint": a.checkpoint, "learners": a.learners, "seed": a.seed,
                            "precision": a.precision, "eval_rows": len(encoded), "split": split,
                            "metrics": result["metrics"], "per_learner": result["per_learner"],
                            "seconds": result["seconds"], "step": distilled.meta.get("step"),
                            "demo": prep.task.is_demo})
    return result


def _cmd_baseline(a) -> int:
    from tqdm import tqdm

    from .distiller import RunConfig, prepare
    from .evaluation import EvalConfig, full_finetune_baseline, majority_baseline, random_kshot_baseline

    _set_threads(a.threads)
    cfg = RunConfig(data=_data_config(a), model=_model_config(a))
    cfg.data.validate()
    prep = prepare(cfg)
    spec = prep.task.spec
    if a.kind == "majority":
        result = majority_baseline(prep.task.train.labels, prep.eval, spec.metrics, spec.num_labels)
    elif a.kind == "random-kshot-tuned":
        from .evaluation import KSHOT_LR_GRID, tuned_kshot_baseline

        if prep.dev is None:
            raise UserError("random-kshot-tuned needs a dev split (--dev-fraction > 0 and a train split of 50+ rows)")
        bar = tqdm(total=a.learners, desc="random-kshot-tuned", unit="learner", file=sys.stderr)
        result = tuned_kshot_baseline(prep.learner, prep.train, prep.dev, prep.eval, spec.metrics, a.k,
                                      a.inner_steps, a.different_data_per_step, tuple(a.lr_grid or KSHOT_LR_GRID),
                                      config=EvalConfig(learners=a.learners, seed=a.seed, precision=a.precision),
                                      progress=lambda d, t: bar.update(1))
        bar.close()
        result.pop("per_learner", None)
        result["dev_loss"] = {str(k): v for k, v in result["dev_loss"].items()}
    elif a.kind == "random-kshot":
        if a.k < 1 or a.inner_steps < 1 or a.learners < 1:
            raise UserError("--k, --inner-steps and --learners must be >= 1")
        bar = tqdm(total=a.learners, desc="random-kshot", unit="learner", file=sys.stderr)
        result = random_kshot_baseline(prep.learner, prep.train, prep.eval, spec.metrics, a.k, a.inner_steps,
                                       a.inner_lr, a.different_data_per_step, EvalConfig(learners=a.learners, seed=a.seed, precision=a.precision),
                                       progress=lambda d, t: bar.update(1))
        bar.close()
        result.pop("per_learner", None)
    else:
        if a.full_steps < 1:
            raise UserError("--full-steps must be >= 1")
        bar = tqdm(total=a.full_steps, desc="full fine-tuning", unit="batch", file=sys.stderr)
        result = full_finetune_baseline(prep.learner, prep.train, prep.eval, spec.metrics, steps=a.full_steps,
                                        batch_size=a.real_batch, lr=a.full_lr, seed=a.seed,
                                        progress=lambda d, t: bar.update(1))
        bar.close()
    record = {"kind": a.kind, "task": spec.name, "demo": spec.is_demo, "eval_rows": len(prep.eval), **result}
    if a.out:
        from .runs import write_json

        write_json(Path(a.out), record)
    print(json.dumps(record["metrics"]))
    return 0


def _cmd_inspect(a) -> int:
    from .inspection import inspect_summary

    if a.top_k < 1:
        raise UserError("--top-k must be >= 1")
    run, cfg, prep, distilled = _load_for_run(a.run, a.checkpoint, a.data_dir, a.device)
    summary = inspect_summary(prep.learner, distilled, a.top_k)
    if a.json:
        print(json.dumps(summary))
        return 0
    print(f"run {run.path}  checkpoint {a.checkpoint} (step {distilled.meta.get('step')})  "
          f"task {prep.task.spec.name}{'  [demo data]' if prep.task.is_demo else ''}")
    print("learned inner lrs: " + ", ".join(f"{x:.4g}" for x in summary["inner_lrs"]))
    for s in summary["samples"]:
        print(f"\nsample {s['sample']} (class {s['class']}), label target {s['label_target']}")
        print("  decoded: " + s["decoded"])
        if "top_attended_positions" in s:
            print("  most attended by the [CLS] labels: " +
                  ", ".join(f"#{p['position']} {p['token']} ({p['mass']:.3f})" for p in s["top_attended_positions"]))
            print(f"  KL(label||model) mean over layers/heads: before {s['kl_before_mean']:.3f}, "
                  f"after the inner step {s['kl_after_mean']:.3f}")
        for i, pos in enumerate(s["nearest"][: min(len(s["nearest"]), 12)]):
            print(f"  pos {i:3d}: " + "  ".join(f"{t} {c:.2f}" for t, c in pos))
        if len(s["nearest"]) > 12:
            print(f"  ... {len(s['nearest']) - 12} more positions (use --json for all)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .study import cmd_study

    handler = {"distill": lambda a: _cmd_distill(a, argv if argv is not None else sys.argv[1:]),
               "evaluate": _cmd_evaluate, "baseline": _cmd_baseline,
               "inspect": _cmd_inspect, "study": cmd_study}[args.command]
    try:
        return handler(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
