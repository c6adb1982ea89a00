"""The evaluation report: one self-contained HTML file (Jinja2 template, matplotlib figures
and images embedded as base64 PNG) that a non-ML reader can follow."""

from __future__ import annotations

import base64
import io
from pathlib import Path

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


def pr_figure(curves: list[dict | None], names: list[str]) -> str:
    """One-vs-rest precision-recall curve per class."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 5))
    for name, curve in zip(names, curves, strict=True):
        if curve is not None:
            label = f"{name} (AP {curve['average_precision']:.2f})"
            axes.plot(curve["recall"], curve["precision"], label=label)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.legend(fontsize=7, loc="lower left")
    axes.set_title("Precision-recall per class")
    return _figure_uri(figure)


def reliability_figure(calibration) -> str:
    """Reliability diagram: accuracy vs confidence per bin, against the diagonal."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5, 5))
    centres = (calibration.bin_edges[:-1] + calibration.bin_edges[1:]) / 2
    filled = calibration.counts > 0
    width = np.diff(calibration.bin_edges)[0]
    axes.bar(centres[filled], calibration.accuracy[filled], width=width * 0.9, label="accuracy")
    axes.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    axes.set_xlabel("top-1 probability")
    axes.set_ylabel("accuracy")
    axes.set_title(f"Reliability (ECE {calibration.ece:.3f})")
    axes.legend(loc="upper left")
    return _figure_uri(figure)


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
