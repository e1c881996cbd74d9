"""Result figures (PNG) of `segkd compare` and `segkd demo`.

Figures are drawn on a bare ``matplotlib.figure.Figure`` with the Agg canvas: no pyplot, so no
global figure state, no GUI backend, and nothing to close. Files are written atomically.
"""
from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from segkd.io import atomic_output

_DPI = 100

Curves = Mapping[str, Mapping[str, Any]]  # {method: {curve name: 1-D array}}


def _new_figure(width_in: float, height_in: float) -> Figure:
    figure = Figure(figsize=(width_in, height_in), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: str | Path) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    path = Path(path)
    with atomic_output(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return path


def _curve(values: Any, method: str, key: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size == 0:
        raise ValueError(f"method '{method}': '{key}' is empty")
    return array


def _paired(curves: Curves, x_key: str, y_key: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{method: (x, y)}``, checking that each method has both keys with equal lengths."""
    if not curves:
        raise ValueError("no curves to plot")
    pairs = {}
    for method, curve in curves.items():
        missing = [key for key in (x_key, y_key) if key not in curve]
        if missing:
            raise KeyError(f"method '{method}': missing {missing}; has {sorted(curve)}")
        x, y = _curve(curve[x_key], method, x_key), _curve(curve[y_key], method, y_key)
        if x.shape != y.shape:
            raise ValueError(f"method '{method}': '{x_key}' has {x.size} values, '{y_key}' {y.size}")
        pairs[method] = (x, y)
    return pairs


def _unit_axes(axes: Axes, xlabel: str, ylabel: str, title: str) -> None:
    axes.set(xlim=(0, 1), ylim=(0, 1.02), xlabel=xlabel, ylabel=ylabel, title=title)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left", fontsize="small")


def plot_pr_curves(curves: Curves, path: str | Path, *, title: str = "Precision–recall") -> Path:
    """All methods' SOD precision–recall curves on one figure.

    ``curves``: ``{method: {"precision": (T,), "recall": (T,)}}`` over T thresholds.
    """
    figure = _new_figure(5.5, 5)
    axes = figure.add_subplot()
    for method, (recall, precision) in _paired(curves, "recall", "precision").items():
        axes.plot(recall, precision, label=method, linewidth=1.5)
    _unit_axes(axes, "recall", "precision", title)
    return _save(figure, path)


def plot_f_threshold(
    curves: Curves, path: str | Path, *, title: str = "F-measure vs threshold"
) -> Path:
    """F-measure against binarisation threshold, one line per method, its maximum marked.

    ``curves``: ``{method: {"fmeasure": (T,), "thresholds": (T,)}}`` (T = 256, thresholds in [0, 1]).
    """
    figure = _new_figure(6, 4.5)
    axes = figure.add_subplot()
    for method, (thresholds, fmeasure) in _paired(curves, "thresholds", "fmeasure").items():
        best = int(np.nanargmax(fmeasure))
        label = f"{method} (max {fmeasure[best]:.3f})"
        (line,) = axes.plot(thresholds, fmeasure, label=label, linewidth=1.5)
        axes.plot(thresholds[best], fmeasure[best], "o", color=line.get_color(), markersize=5)
    _unit_axes(axes, "threshold", "F-measure", title)
    return _save(figure, path)


def plot_metric_bars(
    table: Mapping[str, tuple[float, float | None]], metric_name: str, path: str | Path
) -> Path:
    """One bar per method (mean), with a ±std error bar where the std is given.

    ``table``: ``{method: (mean, std or None)}``, e.g. the mean and spread over seeds.
    """
    if not table:
        raise ValueError(f"no values to plot for '{metric_name}'")
    methods = list(table)
    means = np.array([float(table[m][0]) for m in methods])
    stds = np.array([np.nan if table[m][1] is None else float(table[m][1]) for m in methods])
    figure = _new_figure(max(4.0, 0.9 * len(methods) + 1.5), 4)
    axes = figure.add_subplot()
    positions = np.arange(len(methods))
    bars = axes.bar(positions, means, color=[f"C{i % 10}" for i in positions])
    has_std = ~np.isnan(stds)
    if has_std.any():
        axes.errorbar(
            positions[has_std], means[has_std], yerr=stds[has_std], fmt="none", ecolor="black", capsize=4
        )
    # Values inside the bars, so the error bars above them stay readable.
    labels = [f"{m:.3f}" for m in means]
    axes.bar_label(bars, labels=labels, label_type="center", color="white", fontsize="small")
    crowded = len(methods) > 4
    axes.set_xticks(positions, methods, rotation=30 if crowded else 0, ha="right" if crowded else "center")
    axes.set(ylabel=metric_name, title=metric_name)
    axes.margins(y=0.15)
    axes.grid(axis="y", alpha=0.3)
    return _save(figure, path)


def _as_displayable(value: Any, row: int, column: str) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise ValueError(
            f"row {row}, column '{column}': expected H×W or H×W×3, got shape {array.shape}"
        )
    if array.dtype != np.uint8:
        raise ValueError(f"row {row}, column '{column}': expected uint8, got {array.dtype}")
    return array


def plot_qualitative_grid(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str], path: str | Path
) -> Path:
    """A grid of test images: one row per image, one titled column per entry of ``columns``.

    Each row maps every column name to an H×W×3 uint8 image (the input, a colourised label) or
    an H×W uint8 grey map (a binary mask or saliency map, shown 0 = black, 255 = white); the
    usual columns are ``"image"``, ``"ground truth"`` and one per method. An optional ``"name"``
    entry labels the row. Sizes may differ between cells.
    """
    if not rows or not columns:
        raise ValueError("qualitative grid needs at least one row and one column")
    first = _as_displayable(rows[0][columns[0]], 0, columns[0]) if columns[0] in rows[0] else None
    aspect = first.shape[0] / first.shape[1] if first is not None else 1.0
    cell = 2.2
    figure = _new_figure(cell * len(columns), cell * aspect * len(rows) + 0.4)
    grid = figure.subplots(len(rows), len(columns), squeeze=False)
    for r, row in enumerate(rows):
        for c, column in enumerate(columns):
            if column not in row:
                raise KeyError(f"row {r}: no entry for column '{column}'; has {sorted(row)}")
            axes = grid[r][c]
            image = _as_displayable(row[column], r, column)
            if image.ndim == 2:
                axes.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            else:
                axes.imshow(image, interpolation="nearest")
            axes.set_xticks([])
            axes.set_yticks([])
            if r == 0:
                axes.set_title(column, fontsize="medium")
            if c == 0 and "name" in row:
                axes.set_ylabel(str(row["name"]), fontsize="small")
    return _save(figure, path)


def plot_training_curves(
    histories: Mapping[str, Mapping[str, Sequence[float | None]]],
    path: str | Path,
    *,
    metric_name: str = "val metric",
) -> Path:
    """Training loss against step per method, and the validation metric in a second panel.

    ``histories``: ``{method: {"step": [...], "loss": [...], "val_metric": [...] (optional),
    "val_step": [...] (optional)}}``. ``val_metric`` is plotted against ``val_step`` when given,
    otherwise against ``step`` (equal lengths; None or NaN where no validation ran).
    """
    losses = _paired(histories, "step", "loss")
    validated = {m: h for m, h in histories.items() if h.get("val_metric") is not None}
    figure = _new_figure(11 if validated else 6, 4)
    panels = figure.subplots(1, 2 if validated else 1, squeeze=False)[0]
    for index, (method, (steps, loss)) in enumerate(losses.items()):
        panels[0].plot(steps, loss, label=method, color=f"C{index % 10}", linewidth=1.2)
    panels[0].set(xlabel="step", ylabel="training loss", title="Training loss")
    # Losses span orders of magnitude over training; a log axis keeps the late steps readable.
    if all(np.nanmin(loss) > 0 for _, loss in losses.values()):
        panels[0].set_yscale("log")
    for index, method in enumerate(histories):
        if method not in validated:
            continue
        history = validated[method]
        x_key = "val_step" if "val_step" in history else "step"
        x = _curve(history[x_key], method, x_key)
        y = np.array([np.nan if v is None else float(v) for v in history["val_metric"]])
        if x.shape != y.shape:
            raise ValueError(f"method '{method}': '{x_key}' has {x.size} values, 'val_metric' {y.size}")
        keep = ~np.isnan(y)
        panels[1].plot(x[keep], y[keep], "o-", label=method, color=f"C{index % 10}", markersize=3)
    if validated:
        panels[1].set(xlabel="step", ylabel=metric_name, title=metric_name)
    for axes in panels:
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    return _save(figure, path)
