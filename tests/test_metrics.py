"""MetricsWriter, read/truncate of metrics.jsonl, ProgressBar and the run report."""
import io
import json
import logging
import math
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_self.metrics import (
    MetricsWriter,
    ProgressBar,
    read_metrics,
    truncate_metrics,
)
from jaxrl_self.report import plot_figure, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_write_and_read_back_with_arrays_and_non_finite_values(tmp_path):
    with MetricsWriter(tmp_path) as writer:
        writer.write(1, {"loss": 0.5, "kl": np.float32(0.25), "count": 3, "jax_scalar": jnp.asarray(2.0)})
        writer.write(2, {"loss": float("nan"), "kl": np.inf, "hist": np.array([1.0, 2.0, np.nan])})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[1]) == {"step": 2, "loss": "nan", "kl": "inf", "hist": [1.0, 2.0, "nan"]}
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert rows[0] == {"step": 1, "loss": 0.5, "kl": 0.25, "count": 3, "jax_scalar": 2.0}
    assert math.isnan(rows[1]["loss"]) and rows[1]["kl"] == math.inf
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_non_numeric_value_is_rejected(tmp_path):
    with MetricsWriter(tmp_path, use_tensorboard=False) as writer, pytest.raises(TypeError, match="'name'"):
        writer.write(0, {"name": "text"})


def test_only_the_main_process_writes(tmp_path):
    writer = MetricsWriter(tmp_path / "run", is_main_process=False)
    writer.write(1, {"loss": 1.0})
    writer.close()
    assert not (tmp_path / "run").exists()


def test_missing_wandb_falls_back_with_a_warning(tmp_path, caplog, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    with caplog.at_level(logging.WARNING), MetricsWriter(tmp_path, use_tensorboard=False, use_wandb=True) as writer:
        writer.write(1, {"loss": 1.0})
    assert "wandb" in caplog.text
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"step": 1, "loss": 1.0}]


def test_truncate_and_resume(tmp_path):
    with MetricsWriter(tmp_path, use_tensorboard=False) as writer:
        for step in range(1, 6):
            writer.write(step, {"loss": float(step)})
    path = tmp_path / "metrics.jsonl"
    with open(path, "a") as file:
        file.write('{"step": 6, "lo')  # a crash mid-write
    assert [row["step"] for row in read_metrics(path)] == [1, 2, 3, 4, 5]
    with MetricsWriter(tmp_path, use_tensorboard=False) as writer:  # restart without resume_step
        writer.write(6, {"loss": 6.0})
    assert [row["step"] for row in read_metrics(path)] == [1, 2, 3, 4, 5, 6]
    assert truncate_metrics(path, 3) == 4  # steps 4, 5, 6 and the broken line
    assert [row["step"] for row in read_metrics(path)] == [1, 2, 3]
    assert list(tmp_path.glob("*.tmp")) == []
    assert truncate_metrics(tmp_path / "absent.jsonl", 3) == 0
    with MetricsWriter(tmp_path, resume_step=2) as writer:
        writer.write(3, {"loss": 30.0})
    assert read_metrics(path) == [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 2.0}, {"step": 3, "loss": 30.0}]


def test_progress_bar_logs_every_tenth_when_not_a_terminal(caplog):
    with caplog.at_level(logging.INFO):
        bar = ProgressBar(total=20, desc="train")
        for _ in range(20):
            bar.update(reward=0.5, acc=0.25)
        bar.close()
    messages = [r.getMessage() for r in caplog.records if r.getMessage().startswith("train:")]
    assert len(messages) == 10
    assert "20/20 (100%)" in messages[-1] and "reward=0.5" in messages[-1] and "eta" in messages[-1]
    caplog.clear()
    with caplog.at_level(logging.INFO):
        bar = ProgressBar(total=10, desc="eval", initial=2)
        for _ in range(10):  # two updates past the total log nothing more
            bar.update()
    counts = [r.getMessage().split()[1] for r in caplog.records if r.getMessage().startswith("eval:")]
    assert counts == ["3/10", "4/10", "5/10", "6/10", "7/10", "8/10", "9/10", "10/10"]


def test_progress_bar_draws_on_a_terminal(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    bar = ProgressBar(total=4, desc="rl", initial=1)
    bar.update(2, reward=0.75)
    bar.close()
    assert "rl" in terminal.getvalue() and "3/4" in terminal.getvalue() and "reward=0.75" in terminal.getvalue()


def test_report_has_tables_plots_and_samples(tmp_path):
    with MetricsWriter(tmp_path, use_tensorboard=False) as writer:
        for step in range(1, 11):
            metrics = {"sft/loss": 3.0 / step, "reward/mean": 0.1 * step, "accuracy/train": 0.05 * step, "kl": 0.001 * step,
                       "entropy": 2.0 - 0.1 * step, "response_length/mean": 100.0 + step, "loss": 1.0 / step}
            if step % 5 == 0:
                metrics["eval/accuracy"] = 0.3 + 0.01 * step
            writer.write(step, metrics)
    samples = [{"prompt": "What is 2+2?", "completion": "It is ```4```.", "reward": 1.0}]
    summary = {"held-out accuracy": {"after SFT": 0.3125, "after RL": 0.5625}, "steps": 10}
    path = write_report(tmp_path, title="GRPO on arithmetic", summary=summary, samples=samples)
    assert path == tmp_path / "report.md"
    report = path.read_text()
    assert report.startswith("# GRPO on arithmetic")
    assert "| held-out accuracy | 0.3125 | 0.5625 |" in report
    assert "| reward/mean | 0.1 (1) | 1 (10) | 0.1 | 1 |" in report
    assert "| eval/accuracy | 0.35 (5) | 0.4 (10) |" in report
    assert "What is 2+2?" in report and "````\nIt is ```4```.\n````" in report and "reward 1" in report
    names = ["sft_loss", "reward", "accuracy", "kl", "entropy", "response_length", "reward_and_accuracy"]
    for name in names:
        png = tmp_path / "plots" / f"{name}.png"
        assert f"]({'plots'}/{name}.png)" in report
        assert png.stat().st_size > 1024 and png.read_bytes()[:8] == PNG_SIGNATURE
    assert sorted(p.stem for p in (tmp_path / "plots").iterdir()) == sorted(names)


def test_report_with_custom_plot_keys_and_no_metrics(tmp_path):
    rows = [{"step": 0, "score": 1.0}, {"step": 1, "score": 2.0}]
    write_report(tmp_path / "a", title="t", summary={"x": 1.5}, metrics_rows=rows, plot_keys={"score": ["score"]})
    assert [p.name for p in (tmp_path / "a" / "plots").iterdir()] == ["score.png"]
    report = write_report(tmp_path / "b", title="t", summary={"x": 1.5}).read_text()
    assert "| x | 1.5 |" in report and "Plots" not in report


def test_reward_and_accuracy_are_two_panels_with_one_y_scale_each():
    """Equal values must be drawn at equal heights within a panel: no second y axis on any panel."""
    reward = {"reward/mean": ([1, 2, 3], [0.5, 2.0, 4.0])}
    accuracy = {"eval/accuracy": ([1, 3], [0.25, 0.5])}
    figure = plot_figure("reward and accuracy", [("reward", reward), ("accuracy", accuracy)])
    assert len(figure.axes) == 2  # a twinx axis would be a third
    assert [axes.get_ylabel() for axes in figure.axes] == ["reward", "accuracy"]
    assert [len(axes.get_lines()) for axes in figure.axes] == [1, 1]
    top, bottom = figure.axes
    assert top.get_ylim()[1] >= 4.0 and bottom.get_ylim()[1] < 1.0  # each scale fits its own quantity
