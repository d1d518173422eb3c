"""The run report: `<workdir>/report.md` with the summary, a table of the logged metrics, PNG
plots under `<workdir>/plots/` and sample completions, read back from `metrics.jsonl`.
"""
from __future__ import annotations

import os
import re
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jaxrl_self.metrics import METRICS_FILE, read_metrics

REPORT_FILE = "report.md"
PLOTS_DIR = "plots"
Series = Mapping[str, tuple[list[int], list[float]]]  # label -> (steps, values)

# Plot name -> metric keys drawn on it (those present in the rows). "reward" and "accuracy"
# also make up the two-panel "reward_and_accuracy" plot.
DEFAULT_PLOT_KEYS: Mapping[str, Sequence[str]] = types.MappingProxyType({
    "sft_loss": ("sft/loss",),
    "reward": ("reward/mean", "reward"),
    "accuracy": ("accuracy/train", "eval/accuracy", "accuracy"),
    "kl": ("kl",),
    "entropy": ("entropy",),
    "response_length": ("response_length/mean", "response_length"),
})


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _summary_table(summary: Mapping[str, object]) -> list[str]:
    """Flat entries as `| name | value |`; entries whose value is a mapping become rows with
    one column per inner key (e.g. {"accuracy": {"after SFT": 0.3, "after RL": 0.5}})."""
    columns: list[str] = []
    for value in summary.values():
        if isinstance(value, Mapping):
            columns += [str(key) for key in value if str(key) not in columns]
    if not columns:
        lines = ["| | value |", "|---|---|"]
        return lines + [f"| {name} | {_format_value(value)} |" for name, value in summary.items()]
    lines = ["| | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name, value in summary.items():
        cells = value if isinstance(value, Mapping) else {columns[0]: value}
        cells = {str(key): cell for key, cell in cells.items()}
        lines.append(f"| {name} | " + " | ".join(_format_value(cells.get(c, "")) for c in columns) + " |")
    return lines


def _series(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of the rows that log `key` as a number."""
    pairs = [(row["step"], float(row[key])) for row in rows if _is_number(row.get(key)) and "step" in row]
    return [step for step, _ in pairs], [value for _, value in pairs]


def _metrics_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    keys = []
    for row in rows:
        keys += [key for key, value in row.items() if key != "step" and _is_number(value) and key not in keys]
    lines = ["| metric | first (step) | final (step) | min | max |", "|---|---|---|---|---|"]
    for key in keys:
        steps, values = _series(rows, key)
        lines.append(
            f"| {key} | {_format_value(values[0])} ({steps[0]}) | {_format_value(values[-1])} ({steps[-1]}) "
            f"| {_format_value(min(values))} | {_format_value(max(values))} |"
        )
    return lines


def plot_figure(title: str, panels: Sequence[tuple[str, Series]]):
    """A matplotlib Figure with one panel per (y label, series) pair, stacked and sharing the step
    axis, so that each quantity has its own y scale; a series maps label -> (steps, values). Uses
    matplotlib's object API with the Agg canvas, so no global backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 2.0 + 2.0 * len(panels)), dpi=100)
    FigureCanvasAgg(figure)
    all_axes = figure.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for axes, (y_label, series) in zip(all_axes, panels):
        for label, (steps, values) in series.items():
            axes.plot(steps, values, marker="." if len(steps) < 50 else None, label=label)
        axes.set_ylabel(y_label)
        axes.grid(alpha=0.3)
        axes.legend(loc="best")
    all_axes[0].set_title(title)
    all_axes[-1].set_xlabel("step")
    figure.tight_layout()
    return figure


def _fenced(text: str) -> str:
    """`text` in a code fence longer than any backtick run inside it."""
    longest_run = max((len(run) for run in re.findall("`+", text)), default=0)
    fence = "`" * max(3, longest_run + 1)
    return f"{fence}\n{text}\n{fence}"


def write_report(
    workdir: str | os.PathLike,
    *,
    title: str,
    summary: Mapping[str, object],
    metrics_rows: Sequence[Mapping[str, Any]] | None = None,
    samples: Sequence[Mapping[str, Any]] = (),
    plot_keys: Mapping[str, Sequence[str]] = DEFAULT_PLOT_KEYS,
) -> Path:
    """Writes `<workdir>/report.md` (with PNG plots under `<workdir>/plots/`) and returns its path.

    Args:
      title: the report's heading.
      summary: headline numbers, e.g. {"held-out accuracy": {"after SFT": 0.31, "after RL": 0.52}}.
      metrics_rows: logged rows ({"step": int, key: number}); read from `<workdir>/metrics.jsonl`
        when None (no metrics sections when there is neither).
      samples: completions to show, each with "prompt", "completion" and optionally "reward".
      plot_keys: plot name -> metric keys drawn on it; one PNG per plot with a key present, plus
        "reward_and_accuracy" when both are present: two panels, one y scale each.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if metrics_rows is None:
        metrics_file = workdir / METRICS_FILE
        metrics_rows = read_metrics(metrics_file) if metrics_file.exists() else []
    lines = [f"# {title}", "", "## Summary", "", *_summary_table(summary), ""]

    if metrics_rows:
        lines += ["## Training metrics", "", *_metrics_table(metrics_rows), ""]
        plots_dir = workdir / PLOTS_DIR
        plots_dir.mkdir(exist_ok=True)
        present = {}
        for name, keys in plot_keys.items():
            series = {key: _series(metrics_rows, key) for key in keys}
            series = {key: steps_values for key, steps_values in series.items() if steps_values[0]}
            if series:
                present[name] = series
        if present:
            lines += ["## Plots", ""]
        figures = {name: plot_figure(name.replace("_", " "), [(name.replace("_", " "), series)])
                   for name, series in present.items()}
        if "reward" in present and "accuracy" in present:
            figures["reward_and_accuracy"] = plot_figure(
                "reward and accuracy", [("reward", present["reward"]), ("accuracy", present["accuracy"])])
        for name, figure in figures.items():
            figure.savefig(plots_dir / f"{name}.png", format="png")
            lines += [f"![{name}]({PLOTS_DIR}/{name}.png)", ""]

    if samples:
        lines += ["## Sample completions", ""]
        for index, sample in enumerate(samples, start=1):
            heading = f"### Sample {index}"
            if "reward" in sample:
                heading += f" (reward {_format_value(sample['reward'])})"
            lines += [heading, "", "Prompt:", "", _fenced(str(sample.get("prompt", ""))), "",
                      "Completion:", "", _fenced(str(sample.get("completion", ""))), ""]

    report_path = workdir / REPORT_FILE
    report_path.write_text("\n".join(lines), encoding="utf-8")
    return report_path
