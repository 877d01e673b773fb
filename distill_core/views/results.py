"""The reproduction study as tables and bar charts, beside the paper's published numbers."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

__all__ = ["PAPER", "PAPER_METRIC", "across_seeds", "chosen_on_dev", "glue_score", "paper_value", "previous_score", "row_label", "format_score", "results_frame", "results_figure", "markdown_table",
           "time_to_accuracy_figure"]

# METHOD.md "Published results" (BERT-base-uncased, mean over 100 fine-tunings; accuracy %, but MRPC's
# column is the GLUE score, the mean of accuracy and F1: its majority row 74.8 = (68.4 + 81.2) / 2);
# keys: (task, setting, samples per class, inner steps, same data).
PAPER: dict[tuple, float] = {
    **{("sst2", s, 1, 1, True): v for s, v in
       {"majority": 50.9, "HL": 81.6, "SL": 82.5, "HL+AL": 90.1, "SL+AL": 89.0, "full": 92.7}.items()},
    **{("mrpc", s, 1, 1, True): v for s, v in
       {"majority": 74.8, "HL": 74.8, "SL": 74.8, "HL+AL": 76.4, "SL+AL": 78.8, "full": 88.6}.items()},
    **{("qnli", s, 1, 1, True): v for s, v in
       {"majority": 50.5, "HL": 68.6, "SL": 76.4, "HL+AL": 85.9, "SL+AL": 86.4, "full": 91.8}.items()},
    **{("ag_news", s, 1, 1, True): v for s, v in
       {"majority": 25.0, "HL": 87.4, "SL": 88.4, "HL+AL": 93.2, "SL+AL": 93.0, "full": 94.6}.items()},
    ("sst2", "SL+AL", 1, 3, True): 89.8, ("sst2", "SL+AL", 1, 5, True): 85.8,
    ("sst2", "SL+AL", 3, 3, False): 90.4, ("sst2", "SL+AL", 5, 5, False): 90.7,
    ("mrpc", "SL+AL", 1, 3, True): 74.8, ("mrpc", "SL+AL", 3, 3, False): 80.3,
}
_SINGLE = ("majority", "full")  # baselines without a samples/steps shape


def paper_value(row: dict) -> float | None:
    setting = row["setting"]
    if setting in _SINGLE:
        return PAPER.get((row["task"], setting, 1, 1, True))
    return PAPER.get((row["task"], setting, row.get("samples_per_class", 1), row.get("inner_steps", 1),
                      bool(row.get("same_data", True))))


def row_label(row: dict) -> str:
    """'HL+AL', or 'SL+AL 3×3 diff' where the shape is not one sample, one step; a budget tag in brackets
    ('HL+AL (long)'), and the distilled data's average where the row ran with one ('SL+AL (average 0.98)'),
    so that rows of two recipes in one study are told apart."""
    spc, t = row.get("samples_per_class", 1), row.get("inner_steps", 1)
    average = ((row.get("config") or {}).get("distill") or {}).get("average")
    notes = [n for n in (row.get("tag"), f"average {average:g}" if average else "") if n]
    tag = f" ({', '.join(notes)})" if notes else ""
    if row["setting"] in _SINGLE or (spc, t) == (1, 1):
        return row["setting"] + tag
    return f"{row['setting']} {spc}×{t} {'same' if row.get('same_data', True) else 'diff'}" + tag


PAPER_METRIC = {"mrpc": "glue", "qqp": "glue"}   # the paper's column per task (default: accuracy)


def glue_score(metrics: dict) -> dict | None:
    """The GLUE score of a row: stored per learner where evaluated so; else the mean of the two means
    (exactly the mean of per-learner scores; their std is not known then, so none is given)."""
    if "glue" in metrics:
        return metrics["glue"]
    if "accuracy" in metrics and "f1" in metrics:
        return {"mean": (metrics["accuracy"]["mean"] + metrics["f1"]["mean"]) / 2, "n": 1}
    return None


def format_score(metric: dict | None) -> str:
    if not metric:
        return "–"
    return f"{metric['mean']:.1f}" if metric.get("n", 1) == 1 else f"{metric['mean']:.1f} ± {metric['std']:.1f}"


def across_seeds(row: dict) -> str:
    """The paper's metric across distillation seeds: mean ± std (sample std) of the per-seed learner means,
    with the number of seeds; '' for rows distilled once or not distilled."""
    metric = PAPER_METRIC.get(row["task"], "accuracy")
    seeds = (row.get("seeds") or {}).get(metric)
    if not seeds or seeds.get("seeds", 1) < 2:
        return ""
    return f"{seeds['mean']:.1f} ± {seeds['std']:.1f} ({seeds['seeds']} seeds)"


def _paper_metric_score(row: dict) -> dict | None:
    """A row's score in its task's paper column: accuracy, or the GLUE score (MRPC)."""
    m = row.get("metrics", {})
    return (glue_score(m) if "f1" in m else None) if PAPER_METRIC.get(row["task"]) == "glue" else m.get("accuracy")


def _row_key(row: dict) -> tuple:
    """What makes two studies' rows the same row: task, setting, shape and budget tag."""
    return (row["task"], row["setting"], row.get("samples_per_class", 1), row.get("inner_steps", 1),
            bool(row.get("same_data", True)), row.get("tag", ""))


def _num(x: float) -> str:
    return f"{x:g}"


def chosen_on_dev(row: dict) -> str:
    """What the selection split decided for a row, in a few words: the grid's lrs and the scored
    checkpoint of distilled rows, the tuned k-shot lr, the full-data epochs; '' where nothing was chosen."""
    c = row.get("config") or {}
    if row["setting"] == "full" and c.get("per_learner"):
        epochs = [l["epochs"] for l in c["per_learner"]]
        span = f"{min(epochs):.1f}" if f"{min(epochs):.1f}" == f"{max(epochs):.1f}" else f"{min(epochs):.1f}-{max(epochs):.1f}"
        if not any(l.get("stopped_early") for l in c["per_learner"]):
            return f"best dev check of {span} epochs (the cap; none stopped early)"
        return f"stopped on dev after {span} epochs"
    if row["setting"].endswith("-tuned") and "lr" in c:
        return f"inner lr {_num(c['lr'])} of {', '.join(_num(v) for v in c.get('grid', []))}"
    if row["setting"].startswith("random-") and "lr_from" in c:
        return f"inner lr {_num(c['lr'])}, the distilled rows' init"
    grid = c.get("grid")
    if isinstance(grid, dict) and "outer_lr" in grid:
        lr_from = grid.get("outer_lr_from")   # a row's recipe set the outer lr; the pilots, the inner-lr init
        text = (f"outer lr {_num(grid['outer_lr'])}" + (f" ({lr_from})" if lr_from else "")
                + f", inner-lr init {_num(grid['inner_lr_init'])}")
        if lr_from:
            text += f" (pilots: {row.get('grid_file')})"
            # two recipes can share a study (and a row label): name this one's budget and schedule
            # (what the row stored, not a guessed default: the presets differ in schedule)
            distill = c.get("distill") or {}
            budget = [f"{distill['outer_steps']:,} outer steps"] if distill.get("outer_steps") else []
            budget += [f"{distill['schedule']} outer-lr schedule"] if distill.get("schedule") else []
            budget += ([f"pre-trained-weight noise {_num(distill['model_noise'])} (beyond the paper)"]
                       if distill.get("model_noise") else [])
            if budget:
                text += "; " + ", ".join(budget)
        elif row.get("grid_file") == f"grid/{row.get('key')}.json":
            text += " (the row's own pilots)"
        elif row.get("grid_file") not in (None, f"grid/{row.get('task')}.json"):
            text += f" (pilots on the row's budget: {row['grid_file']})"
        picked = [s.get("checkpoint") for s in c.get("scored") or []]
        if "best" in picked:
            steps = ", ".join(str(s["step"]) for s in c["scored"])
            text += f"; best-on-dev checkpoints (steps {steps})"
        return text
    return ""


def previous_score(row: dict, previous: list[dict]) -> str:
    """The same row of an earlier study in the paper's metric (across seeds where it had several), '–' if none."""
    match = next((p for p in previous if _row_key(p) == _row_key(row)), None)
    if match is None:
        return "–"
    return across_seeds(match) or format_score(_paper_metric_score(match))


def results_frame(rows: list[dict], previous: list[dict] | None = None) -> pd.DataFrame:
    """One line per row: task, setting, ours (accuracy, and F1 where reported), across seeds, what the dev
    split chose, an earlier
    study's score of the row (when `previous` is given), paper, n, CPU time, run. The ± of a score is the
    learners' std (pooled over seeds); `across seeds` is the seeds'."""
    out = []
    for r in rows:
        m = r.get("metrics", {})
        paper = paper_value(r)
        glue = glue_score(m) if "f1" in m else None
        line = {"task": r["task"], "setting": row_label(r),
                "accuracy": format_score(m.get("accuracy")),
                "f1": format_score(m.get("f1")) if "f1" in m else "",
                "GLUE score": format_score(glue) if glue else "",
                "ours, paper's metric": format_score(_paper_metric_score(r)), "across seeds": across_seeds(r),
                "chosen on dev": chosen_on_dev(r)}
        if previous is not None:
            line["previous study"] = previous_score(r, previous)
        out.append({**line, "paper (BERT-base)": "–" if paper is None else f"{paper:.1f}",
                    "n": (m.get("accuracy") or {}).get("n"),
                    "CPU min": round(r.get("cpu_seconds", 0) / 60, 1), "run": r.get("run") or ""})
    return pd.DataFrame(out)


def results_figure(rows: list[dict], task: str, metric: str = "accuracy") -> go.Figure:
    """Bars (mean, error bar = std over learners) of one task's rows, with the paper's numbers as markers."""
    if metric == "glue":     # older rows hold accuracy and F1 only: their GLUE score is the mean of the two
        rows = [{**r, "metrics": {**r.get("metrics", {}), "glue": glue_score(r.get("metrics", {}))}}
                if glue_score(r.get("metrics", {})) else r for r in rows]
    picked = [r for r in rows if r["task"] == task and metric in r.get("metrics", {})]
    labels = [row_label(r) for r in picked]
    fig = go.Figure(go.Bar(
        x=labels, y=[r["metrics"][metric]["mean"] for r in picked], name="bundled MiniLM (ours)",
        error_y={"type": "data", "array": [r["metrics"][metric].get("std", 0.0) for r in picked], "visible": True},
        hovertext=[f"n={r['metrics'][metric]['n']}" for r in picked], marker_color="#4C78A8"))
    paper = [paper_value(r) if metric == PAPER_METRIC.get(task, "accuracy") else None for r in picked]
    if any(p is not None for p in paper):
        fig.add_trace(go.Scatter(x=labels, y=paper, mode="markers", name="paper (BERT-base)",
                                 marker={"symbol": "line-ew-open", "size": 28, "line": {"width": 3},
                                         "color": "#E45756"}))
    low = min([r["metrics"][metric]["mean"] - r["metrics"][metric].get("std", 0.0) for r in picked] + [p for p in paper if p]
              or [0])
    fig.update_layout(title=f"{task}: {metric} (mean ± std over learners)", yaxis_title=f"{metric} %",
                      yaxis_range=[max(0, low - 10), 100], height=380, margin={"t": 50, "b": 40},
                      legend={"orientation": "h", "y": -0.2})
    return fig


def markdown_table(rows: list[dict], previous: list[dict] | None = None) -> str:
    """The results as a Markdown table (docs/REPRODUCTION.md is written from this), with an earlier
    study's score of each row beside ours when `previous` is given."""
    frame = results_frame(rows, previous).drop(columns=["run"])
    head = "| " + " | ".join(frame.columns) + " |"
    sep = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join("" if v is None else str(v) for v in line) + " |" for line in frame.itertuples(index=False)]
    return "\n".join([head, sep, *body])


def series_label(s: dict) -> str:
    """'SL+AL (3 seeds)', or with the train-row filter of a sentences row, whose dev split is its own."""
    words = s.get("train_min_words")
    rows = f", train rows of >= {words} words, own dev" if words else ""
    return f"{s['setting']} ({s['curves']} {'learners' if s['kind'] == 'full data' else 'seeds'}{rows})"


def time_to_accuracy_figure(data: dict, task: str) -> go.Figure | None:
    """Dev score against CPU minutes: one line and mean +- std band per curve row of `task` (its seeds,
    or the full-data row's learners); None when the study has no curve for the task."""
    series = [s for s in data.get("series", []) if s["task"] == task]
    if not series:
        return None
    colours = ["#4C78A8", "#F58518", "#54A24B", "#B279A2", "#E45756"]
    fig = go.Figure()
    for i, s in enumerate(series):
        colour = "#7F7F7F" if s["kind"] == "full data" else colours[i % len(colours)]
        name = series_label(s)
        upper = [m + d for m, d in zip(s["mean"], s["std"])]
        lower = [m - d for m, d in zip(s["mean"], s["std"])]
        fig.add_trace(go.Scatter(x=s["cpu_minutes"] + s["cpu_minutes"][::-1], y=upper + lower[::-1], fill="toself",
                                 mode="lines", line={"width": 0}, fillcolor=colour, opacity=0.18,
                                 hoverinfo="skip", showlegend=False))
        fig.add_trace(go.Scatter(x=s["cpu_minutes"], y=s["mean"], mode="lines+markers", name=name,
                                 line={"color": colour, "dash": "dash" if s["kind"] == "full data" else "solid"},
                                 customdata=list(zip(s["step"], s["std"], s["n"])),
                                 hovertemplate="%{x:.1f} CPU min, step %{customdata[0]}: %{y:.1f} ± "
                                               "%{customdata[1]:.1f} (n=%{customdata[2]})<extra></extra>"))
    fig.update_layout(title=f"{task}: time to accuracy (dev split, mean ± std)", xaxis_title="CPU minutes",
                      yaxis_title="dev score % (the task's primary metric)", height=400,
                      margin={"t": 50, "b": 40}, legend={"orientation": "h", "y": -0.25})
    return fig
