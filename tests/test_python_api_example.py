"""docs/examples/python_api.py, the README's example of using the package from Python, runs as
written: it trains, writes a report, and samples from the run it made."""
import runpy

from tiny_job import REPO


def test_the_python_api_example_trains_and_samples(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)  # the example names configs/default.py relative to the repository
    example = runpy.run_path(str(REPO / "docs" / "examples" / "python_api.py"))
    assert len((REPO / "docs" / "examples" / "python_api.py").read_text().splitlines()) <= 30
    example["main"](str(tmp_path / "run"))
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("{'after SFT': ") and "'after RL': " in out[0]
    assert [line.split(" ", 1)[0] for line in out[1:]] == ["3+4=", "3+4="]
    assert (tmp_path / "run" / "report.md").is_file() and (tmp_path / "run" / "checkpoints").is_dir()
