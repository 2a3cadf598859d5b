"""Class 15: an expected error is ONE clear line on stderr and a non-zero exit; `-v` adds the traceback.

The handling lives in one place (the root command group, `backdrop.cli.common.BackdropGroup`), so every
command gets it: ingest of a missing folder, of a drop marked not for training, a bad params file...
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backdrop.cli import app


@pytest.fixture()
def project(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("BACKDROP_PROJECT_DIR", str(tmp_path))
    monkeypatch.delenv("BACKDROP_PARAMS", raising=False)
    (tmp_path / "params.yaml").write_text("ingest:\n  drop_dir: drop\n  raw_dir: data/raw\n")
    return tmp_path


def _refused_drop(project: Path) -> Path:
    drop = project / "eval-drop"
    (drop / "images").mkdir(parents=True)
    (drop / "drop.json").write_text(json.dumps({"source": "fashion-mnist", "split": "test", "training": False}))
    return drop


def _bad_params(project: Path) -> Path:
    path = project / "bad.yaml"
    path.write_text("prepare:\n  size: 100\ntrain:\n  model: resnet\n")  # two bad keys: still one line
    return path


CASES = {
    # name: (argv builder, words the one line must hold, exit status)
    "missing-drop": (lambda p: ["ingest", str(p / "nonexistent")], ["nonexistent", "not found"], 1),
    "drop-not-for-training": (lambda p: ["ingest", str(_refused_drop(p))], ["not for training", "split=test"], 1),
    "bad-params": (lambda p: ["ingest", "--params", str(_bad_params(p))],
                   ["bad.yaml", "prepare.size", "multiple of 32", "train.model"], 2),
    "empty-params": (lambda p: ["prepare", "--params", str(_empty(p))], ["empty.yaml"], 2),
    "validate-before-ingest": (lambda p: ["validate"], ["manifest.csv", "backdrop ingest"], 1),
}


def _empty(project: Path) -> Path:
    path = project / "empty.yaml"
    path.write_text("")
    return path


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("case", list(CASES))
def test_expected_error_is_one_line_without_traceback(project, case):
    argv, words, status = CASES[case]
    result = CliRunner().invoke(app, argv(project))
    assert result.exit_code == status, (result.output, result.exception)
    assert result.stdout == ""
    lines = _lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    for word in words:
        assert word in lines[0]


@pytest.mark.parametrize("case", list(CASES))
def test_verbose_shows_the_traceback_then_the_line(project, case):
    argv, words, status = CASES[case]
    result = CliRunner().invoke(app, ["-v", *argv(project)])
    assert result.exit_code == status, (result.output, result.exception)
    assert "Traceback (most recent call last)" in result.stderr
    last = _lines(result.stderr)[-1]
    assert all(word in last for word in words)


def test_a_bug_is_not_swallowed(project, monkeypatch):
    """Only the expected error types are shortened: anything else still propagates with its traceback."""
    import backdrop.stages.ingest as stage

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(stage, "ingest", broken)
    result = CliRunner().invoke(app, ["ingest", str(project / "drop")])
    assert isinstance(result.exception, ZeroDivisionError)
