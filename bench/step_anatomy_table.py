"""Step anatomies of several runs (recorded by `python -m distill_core inspect RUN --anatomy`) as one
Markdown table, and optionally all of them in one JSON file.

  python bench/step_anatomy_table.py RUN [RUN ...] [--checkpoint last] [--json OUT]

A column per run (its most-learners record of the checkpoint), a row per variant: the headline metric,
mean ± std over learners; then a row per part with how far the step moved it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str]) -> None:
    from distill_core.distilled import DistilledData
    from distill_core.runs import RunDir, atomic_write_bytes
    from distill_core.step_anatomy import recorded_anatomy

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("--checkpoint", default="last")
    p.add_argument("--json", help="also write every run's record to this file")
    a = p.parse_args(argv)
    found = {}
    for path in a.runs:
        run = RunDir(Path(path)).require()
        # the checkpoint's own step, as the Attention page reads it: a record of an older `last` is stale
        step = DistilledData.load(run.checkpoint(a.checkpoint)).meta.get("step")
        records = recorded_anatomy(run, a.checkpoint, step)
        if not records:
            sys.exit(f"{path}: no anatomy of checkpoint {a.checkpoint!r}; run `python -m distill_core inspect "
                     f"{path} --anatomy --checkpoint {a.checkpoint}` first")
        found[run.name] = records[0]
    names = list(found)
    metric = found[names[0]].metric
    if any(r.metric != metric for r in found.values()):
        sys.exit("these runs' headline metrics differ (" + ", ".join(f"{n}: {r.metric}" for n, r in found.items())
                 + "); make one table per task")
    variants = list(dict.fromkeys(v for r in found.values() for v in r.variants))
    groups = list(dict.fromkeys(g for r in found.values() for g in r.groups))
    print("| " + " | ".join([f"{metric} (learners, rows)"] + [f"`{n}`" for n in names]) + " |")
    print("|" + "---|" * (len(names) + 1))
    print("| " + " | ".join(["learners × rows"] + [f"{r.learners} × {r.eval_rows} {r.split}"
                                                     for r in found.values()]) + " |")
    for v in variants:
        cells = [f"{r.variants[v][metric]['mean']:.1f} ± {r.variants[v][metric]['std']:.1f}" if v in r.variants
                 else "–" for r in found.values()]
        print("| " + " | ".join([v] + cells) + " |")
    for g in groups:
        cells = [f"{r.relative_move[g]['mean']:.3f}" if g in r.relative_move else "–" for r in found.values()]
        print("| " + " | ".join([f"move of {g}"] + cells) + " |")
    if a.json:
        atomic_write_bytes(Path(a.json), (json.dumps({n: r.to_dict() for n, r in found.items()}, indent=1)
                                          + "\n").encode())


if __name__ == "__main__":
    main(sys.argv[1:])
