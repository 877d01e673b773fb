"""How much each pooling of the frozen pre-trained model already separates a task's classes.

  python bench/pooling_probe.py --task sst2 --data-dir ../shared/data [--train-rows 3000] [--json]

For the pooler at [CLS] (what the paper's head reads), the raw [CLS] vector and the mean of the last
layer over the tokens (what sentence-transformers checkpoints such as the bundled model were trained
with): a logistic-regression probe fitted on random train rows and the class-mean prototype direction
(the direction one SGD step from a zero head would take), both scored on the evaluation split. No
fine-tuning: it says what the frozen features hold, not what distillation reaches.
"""

from __future__ import annotations

import sys

from _common import emit


def main(argv: list[str]) -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="sst2")
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--train-rows", type=int, default=3000)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--threads", type=int)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression

    from distill_core.data import DataConfig, load_task_data
    from distill_core.learner import load_learner

    if args.threads:
        torch.set_num_threads(args.threads)
    task = load_task_data(DataConfig(task=args.task, data_dir=args.data_dir, allow_hub=False, dev_fraction=0.0))
    learner = load_learner(num_labels=task.spec.num_labels, device="cpu")
    bert, tok = learner.module.bert, learner.tokenizer
    rng = np.random.default_rng(0)
    train_idx = rng.permutation(len(task.train.labels))[: args.train_rows]

    def features(texts: list) -> dict[str, np.ndarray]:
        out: dict[str, list] = {"pooler at [CLS]": [], "raw [CLS]": [], "mean of the last layer": []}
        for i in range(0, len(texts), 64):
            chunk = texts[i:i + 64]
            columns = [list(c) for c in zip(*chunk)]   # one list per text column (two for sentence pairs)
            enc = tok(*columns, padding=True, truncation=True, max_length=args.max_length, return_tensors="pt")
            with torch.no_grad():
                h = bert(**enc).last_hidden_state
            keep = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
            out["pooler at [CLS]"].append(torch.tanh(bert.pooler.dense(h[:, 0])))
            out["raw [CLS]"].append(h[:, 0])
            out["mean of the last layer"].append((h * keep).sum(1) / keep.sum(1))
        return {k: torch.cat(v).numpy() for k, v in out.items()}

    train_texts = [task.train.texts[i] for i in train_idx]
    y_train = np.asarray(task.train.labels)[train_idx]
    y_eval = np.asarray(task.eval.labels)
    f_train, f_eval = features(train_texts), features(list(task.eval.texts))
    rows = []
    for name in f_train:
        x, xe = f_train[name], f_eval[name]
        mu, sd = x.mean(0), x.std(0) + 1e-6
        probe = LogisticRegression(C=0.1, max_iter=2000).fit((x - mu) / sd, y_train)
        row = {"pooling": name, "probe": round(100 * probe.score((xe - mu) / sd, y_eval), 1),
               "feature_std": round(float(x.std(0).mean()), 4)}
        if task.spec.num_labels == 2:
            direction = x[y_train == 1].mean(0) - x[y_train == 0].mean(0)
            threshold = np.median(x @ direction)
            row["prototype"] = round(100 * float(((xe @ direction > threshold) == y_eval).mean()), 1)
        rows.append(row)
    result = {"bench": "pooling_probe", "task": args.task, "train_rows": int(len(train_idx)),
              "eval_rows": int(len(y_eval)), "eval_source": task.eval.source, "rows": rows}
    if not args.json:
        for r in rows:
            print(f"{r['pooling']:>24}: probe {r['probe']:.1f}"
                  + (f", prototype {r['prototype']:.1f}" if "prototype" in r else "")
                  + f", feature std {r['feature_std']}", file=sys.stderr)
    emit(result)


if __name__ == "__main__":
    main(sys.argv[1:])
