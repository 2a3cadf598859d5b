"""Class 14: a DAG file with a bad params.yaml fails to parse with the dotted key, not a bare int() error.

Each DAG reads params.yaml through `backdrop.config.load_params` at parse time; a value Airflow would
choke on later (a cron it cannot read, retries given as a boolean) is refused there too, by key.
"""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from backdrop.config import ConfigError

DAGS = Path(__file__).resolve().parents[2] / "dags"

BAD = [
    ("airflow:\n  retries: abc\n", "airflow.retries"),
    ("airflow:\n  schedule: 5\n", "airflow.schedule"),
    ("monitoring:\n  schedule: [1]\n", "monitoring.schedule"),
    ("airflow:\n  schedule: every day\n", "airflow.schedule"),        # not a cron: Airflow fails later
    ("airflow:\n  schedule: '61 2 * * *'\n", "airflow.schedule"),      # minute out of range
    ("monitoring:\n  schedule: '@sometimes'\n", "monitoring.schedule"),
    ("airflow:\n  retries: true\n", "airflow.retries"),               # a boolean is not a count
    ("airflow:\n  retries: 100000000000\n", "airflow.retries"),       # retried forever
]


@pytest.fixture()
def project(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKDROP_PROJECT_DIR", str(tmp_path))
    monkeypatch.delenv("BACKDROP_PARAMS", raising=False)
    return tmp_path


def _parse(dag_file: Path):
    return runpy.run_path(str(dag_file), run_name=f"dag_{dag_file.stem}")


@pytest.mark.parametrize("dag", ["training", "monitoring"])
@pytest.mark.parametrize(("text", "key"), BAD, ids=[f"{k}={t.split(':', 2)[-1].strip()}" for t, k in BAD])
def test_dag_parse_names_the_bad_key(project, monkeypatch, dag, text, key):
    params = project / "params.yaml"
    params.write_text(text)
    monkeypatch.setenv("BACKDROP_PARAMS", str(params))
    with pytest.raises(ConfigError) as err:
        _parse(DAGS / f"{dag}.py")
    message = str(err.value)
    assert f"  {key}:" in message and str(params) in message
    assert "invalid literal for int()" not in message


@pytest.mark.parametrize("text", ["", "# nothing but a comment\n", "- airflow\n", "7\n"],
                         ids=["empty", "comment-only", "a-list", "a-number"])
def test_dag_parse_refuses_a_params_file_without_sections(project, monkeypatch, text):
    params = project / "params.yaml"
    params.write_text(text)
    monkeypatch.setenv("BACKDROP_PARAMS", str(params))
    with pytest.raises(ConfigError, match=str(params)):
        _parse(DAGS / "training.py")


@pytest.mark.parametrize(("schedule", "monitoring_schedule"), [
    ("0 2 * * *", "@hourly"), ("*/15 1-5 * * mon-fri", "0 * * * *"), ("@daily", "@once"),
])
def test_good_schedules_still_parse(project, monkeypatch, schedule, monitoring_schedule):
    params = project / "params.yaml"
    params.write_text(f"airflow:\n  schedule: '{schedule}'\n  retries: 3\n"
                      f"monitoring:\n  schedule: '{monitoring_schedule}'\n")
    monkeypatch.setenv("BACKDROP_PARAMS", str(params))
    names = _parse(DAGS / "training.py")
    assert names["_cfg"].schedule == schedule and names["_cfg"].retries == 3
    assert _parse(DAGS / "monitoring.py")["_cfg"].schedule == monitoring_schedule
