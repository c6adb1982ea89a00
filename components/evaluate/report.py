"""The evaluation report: one self-contained HTML file (Jinja2 template, matplotlib figures
and images embedded as base64 PNG) that a non-ML reader can follow."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from urllib.parse import quote

import jinja2
import numpy as np

TEMPLATE = Path(__file__).with_name("report.html.j2")


def png_data_uri(pixels: np.ndarray) -> str:
    """An RGB uint8 image as a data: URI for an <img> tag."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _figure_uri(figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def confusion_figure(matrix: np.ndarray, names: list[str]) -> str:
    """Confusion matrix (row-normalised colours, counts written in the cells)."""
    import matplotlib.pyplot as plt

    size = max(4.0, 0.6 * len(names) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axes.set_yticks(range(len(names)), names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true label")
    for (row, column), count in np.ndenumerate(matrix):
        colour = "white" if shares[row, column] > 0.5 else "black"
        axes.text(column, row, str(count), ha="center", va="center", color=colour, fontsize=8)
    axes.set_title("Confusion matrix (test split)")
    return _figure_uri(figure)


PR_PANELS = 12  # small multiples shown; more classes: the worst by average precision


def pr_figure(curves: list[dict | None], names: list[str], supports: list[int]) -> str:
    """One-vs-rest precision-recall curves as small multiples, one axis per class, worst
    average precision first (at most PR_PANELS: the worst ones)."""
    import matplotlib.pyplot as plt

    present = [
        (curve["average_precision"], name, curve, support)
        for name, curve, support in zip(names, curves, supports, strict=True)
        if curve is not None
    ]
    shown = sorted(present, key=lambda item: (item[0], item[1]))[:PR_PANELS]
    columns = min(4, max(1, len(shown)))
    rows = max(1, -(-len(shown) // columns))
    figure, axes = plt.subplots(
        rows, columns, figsize=(2.6 * columns, 2.4 * rows), squeeze=False, sharex=True, sharey=True
    )
    for axis in axes.flat[len(shown) :]:
        axis.set_visible(False)
    for axis, (ap, name, curve, support) in zip(axes.flat, shown, strict=False):
        axis.plot(curve["recall"], curve["precision"], color="tab:blue")
        axis.fill_between(curve["recall"], curve["precision"], alpha=0.15, color="tab:blue")
        axis.set_title(f"{name}\nAP {ap:.2f} · {support} images", fontsize=8)
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1.02)
        axis.tick_params(labelsize=7)
        axis.grid(alpha=0.3)
    for axis in axes[-1]:
        axis.set_xlabel("recall", fontsize=8)
    for axis in axes[:, 0]:
        axis.set_ylabel("precision", fontsize=8)
    figure.tight_layout()
    return _figure_uri(figure)


def reliability_figure(calibration) -> str:
    """Reliability diagram: accuracy vs confidence per bin against the diagonal, each bar
    labelled with its number of images (a bar of 2 images says little)."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5.5, 5))
    centres = (calibration.bin_edges[:-1] + calibration.bin_edges[1:]) / 2
    filled = calibration.counts > 0
    width = np.diff(calibration.bin_edges)[0]
    bars = axes.bar(
        centres[filled], calibration.accuracy[filled], width=width * 0.9, label="accuracy"
    )
    axes.bar_label(bars, labels=[str(n) for n in calibration.counts[filled]], fontsize=7)
    axes.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    axes.set_xlabel("top-1 probability (bar label: images in the bin)")
    axes.set_ylabel("accuracy")
    axes.set_ylim(0, 1.1)
    axes.set_title(f"Reliability (ECE {calibration.ece:.3f})")
    axes.legend(loc="upper left")
    return _figure_uri(figure)


def calibration_rows(calibration) -> list[dict]:
    """The reliability bins as table rows (empty bins left out)."""
    edges = calibration.bin_edges
    return [
        {
            "low": float(edges[i]),
            "high": float(edges[i + 1]),
            "images": int(calibration.counts[i]),
            "confidence": float(calibration.confidence[i]),
            "accuracy": float(calibration.accuracy[i]),
        }
        for i in range(len(calibration.counts))
        if calibration.counts[i] > 0
    ]


TRAINING_METRICS = ("loss", "accuracy")  # each drawn with its val_ twin


def training_figure(history: dict[str, list[tuple[int, float]]]) -> str | None:
    """Loss and accuracy per epoch, training and validation (from the run's metric
    history); None when the run has none of them."""
    import matplotlib.pyplot as plt

    if not any(history.get(key) for m in TRAINING_METRICS for key in (m, f"val_{m}")):
        return None
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for axis, metric in zip(axes, TRAINING_METRICS, strict=True):
        for key, style in ((metric, "-o"), (f"val_{metric}", "--s")):
            points = history.get(key) or []
            if points:
                axis.plot([s for s, _ in points], [v for _, v in points], style, label=key, ms=3)
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend()
    figure.tight_layout()
    return _figure_uri(figure)


def label_balance_figure(counts: dict[str, dict[str, int]], labels: list[str]) -> str:
    """Images per label, stacked by split (how balanced the classes are)."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(max(5.0, 0.45 * len(labels) + 2), 3.6))
    bottom = np.zeros(len(labels))
    for split in ("train", "validation", "test"):
        values = np.array([counts.get(split, {}).get(label, 0) for label in labels], float)
        axes.bar(labels, values, bottom=bottom, label=split)
        bottom += values
    axes.set_ylabel("images")
    axes.set_title("Images per label and split")
    axes.tick_params(axis="x", rotation=45)
    for tick in axes.get_xticklabels():
        tick.set_horizontalalignment("right")
    axes.legend(fontsize=8)
    figure.tight_layout()
    return _figure_uri(figure)


def colour_scale_figure(colormap: str = "jet") -> str:
    """The Grad-CAM colour scale: 0 (no push towards the chosen tag) to 1 (the strongest)."""
    import matplotlib.pyplot as plt
    from matplotlib import cm, colors

    figure, axes = plt.subplots(figsize=(5, 0.5))
    mappable = cm.ScalarMappable(norm=colors.Normalize(0, 1), cmap=colormap)
    bar = figure.colorbar(mappable, cax=axes, orientation="horizontal")
    bar.set_ticks([0, 0.5, 1], labels=["0: no push", "0.5", "1: strongest push"])
    bar.ax.tick_params(labelsize=8)
    return _figure_uri(figure)


def link_for(uri: str) -> str:
    """A link a browser can open for a stored image: gs:// through the Cloud console's
    authenticated URL, a local path as file://."""
    if uri.startswith("gs://"):
        return "https://storage.cloud.google.com/" + quote(uri[len("gs://") :])
    if "://" in uri:
        return uri
    return Path(uri).absolute().as_uri()


def coverage_figure(confidence_table: list[dict]) -> str:
    """Accuracy vs share of images tagged automatically, as the confidence bar rises."""
    import matplotlib.pyplot as plt

    rows = [r for r in confidence_table if r["accuracy"] is not None]
    figure, axes = plt.subplots(figsize=(5, 4))
    axes.plot([r["coverage"] for r in rows], [r["accuracy"] for r in rows], marker="o")
    for row in rows:
        axes.annotate(f"{row['threshold']:g}", (row["coverage"], row["accuracy"]), fontsize=7)
    axes.set_xlabel("share of images tagged automatically")
    axes.set_ylabel("accuracy of those tags")
    axes.set_title("Coverage vs accuracy (labels: confidence threshold)")
    return _figure_uri(figure)


def render_report(context: dict) -> str:
    """Fill the HTML template; `context` holds figures as data URIs and plain tables."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE.parent),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
    )
    return environment.get_template(TEMPLATE.name).render(**context)
