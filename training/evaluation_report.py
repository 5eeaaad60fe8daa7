"""The files of a full evaluation report (``training.evaluate --data``) and its traces in the
model: the confusion matrix (CSV and PNG), the reliability diagram, ``report.html``, and the
evaluation section of ``MODEL_CARD.md`` with the summary in ``metadata.json``."""

from __future__ import annotations

import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from training.engine_comparison import ENGINE_COLUMNS, engine_cells, engine_table_markdown
from training.export import card_section_write, metadata_set
from training.metrics import ClassificationMetrics
from training.samples import BATCH_SIZE

EVALUATION_DIR = "evaluation"
CARD_START = "<!-- evaluation: written by training.evaluate -->"
CARD_END = "<!-- /evaluation -->"


def write_confusion_csv(path: Path, metrics: ClassificationMetrics) -> None:
    """Rows: true class, columns: predicted class, with a header row and column."""
    lines = ["true \\ predicted," + ",".join(_csv(c) for c in metrics.classes)]
    for name, row in zip(metrics.classes, metrics.confusion, strict=True):
        lines.append(_csv(name) + "," + ",".join(str(v) for v in row))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _csv(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text


def plot_confusion(path: Path, metrics: ClassificationMetrics) -> None:
    """Confusion matrix heat map with the counts written in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(metrics.classes)
    matrix = np.asarray(metrics.confusion)
    size = min(4 + 0.45 * k, 24)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(k), metrics.classes, rotation=90)
    ax.set_yticks(range(k), metrics.classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Confusion matrix ({metrics.count} images, top-1 {metrics.top1:.2%})")
    if k <= 40:
        threshold = matrix.max() / 2 if matrix.size else 0
        for i in range(k):
            for j in range(k):
                if matrix[i, j]:
                    colour = "white" if matrix[i, j] > threshold else "black"
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", color=colour, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_reliability(path: Path, metrics: ClassificationMetrics) -> None:
    """Reliability diagram: accuracy per confidence bin against the diagonal, with bin counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = metrics.reliability
    width = bins[0]["upper"] - bins[0]["lower"]
    centres = [b["lower"] + width / 2 for b in bins]
    fig, (ax, ax_count) = plt.subplots(2, 1, figsize=(6, 7), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.bar(centres, [b["accuracy"] for b in bins], width=width * 0.95, label="accuracy", color="tab:blue")
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(f"Reliability (ECE {metrics.ece:.4f})")
    ax.legend(loc="upper left")
    ax_count.bar(centres, [b["count"] for b in bins], width=width * 0.95, color="tab:gray")
    ax_count.set_xlabel("top-1 confidence")
    ax_count.set_ylabel("images")
    ax_count.set_xlim(0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def record_in_model(model: Path, summary: dict[str, Any]) -> None:
    """Put the summary into ``metadata.json`` and a section of ``MODEL_CARD.md`` (replaced on re-runs)."""
    kept = {k: v for k, v in summary.items() if k not in ("reliability", "confusion_matrix")}
    metadata_set(model, "evaluation", kept)
    d = summary["directory"]
    latency = summary["latency_ms_per_image"]
    section = f"""{CARD_START}
## Evaluation

`python -m training.evaluate` on `{summary["data"]}` (split: {summary["split"]}), {summary["created"]}:
top-1 **{summary["top1"]:.2%}**, top-5 {summary["top5"]:.2%} on {summary["count"]} images; macro F1
{summary["macro"]["f1"]:.3f}, weighted F1 {summary["weighted"]["f1"]:.3f}; expected calibration error
{summary["ece"]:.4f}; latency per image {latency["preprocess_ms"]} ms preprocessing +
{latency["batched_inference_ms"]} ms model (batches of {BATCH_SIZE}), {latency["single_total_ms_p50"]} ms
one image at a time (p50). Full report: [`{d}/report.html`]({d}/report.html).

![confusion matrix]({d}/confusion_matrix.png)
![reliability diagram]({d}/reliability.png)
{_engines_card(summary)}{CARD_END}
"""
    card_section_write(model, CARD_START, CARD_END, section)


def _engines_card(summary: Mapping[str, Any]) -> str:
    """The engine comparison for the model card (empty when only the SavedModel ran)."""
    rows = summary.get("engines") or []
    if len(rows) < 2:
        return ""
    return f"""
### Engines

Each engine on the same {summary["count"]} preprocessed images; change and agreement are against the
SavedModel, ms per image is the model call alone (`python -m training.evaluate --engines ...`).

{engine_table_markdown(rows)}
"""


def _engines_html(summary: Mapping[str, Any]) -> str:
    """The engine comparison as an HTML section (empty when only the SavedModel ran)."""
    rows = summary.get("engines") or []
    if len(rows) < 2:
        return ""
    head = "".join(f"<th>{html.escape(header)}</th>" for header, _, _ in ENGINE_COLUMNS)
    body = "\n".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in engine_cells(row)) + "</tr>" for row in rows
    )
    return f"""<h2>Engines</h2>
<p>Each engine on the same {summary["count"]} preprocessed images; change (percentage points) and top-1
agreement are against the SavedModel; ms per image is the model call alone.</p>
<table id="engines"><tr>{head}</tr>
{body}
</table>
"""


def report_html(metadata: Mapping[str, Any], summary: Mapping[str, Any]) -> str:
    """A self-contained HTML page (the figures sit beside it)."""
    e = html.escape
    rows = "\n".join(
        f"<tr><td>{e(r['class'])}</td><td>{r['precision']:.3f}</td><td>{r['recall']:.3f}</td>"
        f"<td>{r['f1']:.3f}</td><td>{r['support']}</td></tr>"
        for r in summary["per_class"]
    )
    averages = "\n".join(
        f"<tr><th>{name}</th><td>{summary[key]['precision']:.3f}</td><td>{summary[key]['recall']:.3f}</td>"
        f"<td>{summary[key]['f1']:.3f}</td><td>{summary['count']}</td></tr>"
        for name, key in (("macro average", "macro"), ("weighted average", "weighted"))
    )
    latency = "".join(f"<li>{e(k)}: {v} ms</li>" for k, v in summary["latency_ms_per_image"].items())
    title = f"{metadata.get('name', '?')} v{metadata.get('version', '?')}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Evaluation of {e(title)}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}td,th{{padding:2px 8px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}table{{border-collapse:collapse}}tr:nth-child(even){{background:#f4f4f4}}</style>
</head><body>
<h1>Evaluation of {e(title)}</h1>
<p>Data <code>{e(str(summary["data"]))}</code>, split <b>{e(str(summary["split"]))}</b>, {summary["count"]} images,
{e(str(summary["engine"]))}, {e(str(summary["created"]))}.</p>
<p>Top-1 <b>{summary["top1"]:.2%}</b> &middot; top-5 {summary["top5"]:.2%} &middot;
expected calibration error {summary["ece"]:.4f} (15 bins)</p>
{_engines_html(summary)}<h2>Per class</h2>
<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>
{rows}
{averages}
</table>
<h2>Confusion matrix</h2>
<p><a href="confusion_matrix.csv">CSV</a> (rows: true class, columns: predicted)</p>
<img src="confusion_matrix.png" alt="confusion matrix">
<h2>Calibration</h2>
<img src="reliability.png" alt="reliability diagram">
<h2>Latency per image</h2>
<ul>{latency}</ul>
</body></html>
"""
