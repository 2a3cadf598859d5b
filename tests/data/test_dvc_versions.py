"""Real git + real DVC in a throw-away project: data versions, tracing a run, push/pull restores the data.

One module fixture runs the real pipeline stages (`dvc repro cluster`: ingest → validate → prepare →
cluster) twice on synthetic packshots, committing dvc.lock after each, exactly as a data team would.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BIN, make_project, project_env, run

pytestmark = pytest.mark.slow

PARAMS = {
    "synth": {"n": 20, "seed": 3, "min_side": 300, "max_side": 400},
    "prepare": {"size": 64, "val_share": 0.15, "test_share": 0.15},
    "cluster": {"k": 3, "pca_components": 4, "feature_size": 16},
}
DATA_DIRS = ("data/raw", "data/validated", "data/quarantine", "data/prepared", "data/clusters")
GIT_ID = {"GIT_AUTHOR_NAME": "backdrop tests", "GIT_AUTHOR_EMAIL": "tests@example.invalid",
          "GIT_COMMITTER_NAME": "backdrop tests", "GIT_COMMITTER_EMAIL": "tests@example.invalid"}


def git(project: Path, *args: str) -> str:
    env = project_env(project) | GIT_ID
    proc = subprocess.run(["git", *args], cwd=project, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"git {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def dvc(project: Path, *args: str) -> subprocess.CompletedProcess:
    return run([str(BIN / "dvc"), *args], project, timeout=600)


def backdrop(project: Path, *args: str) -> subprocess.CompletedProcess:
    return run([str(BIN / "backdrop"), *args], project)


def tree_digest(root: Path, dirs=DATA_DIRS) -> dict[str, str]:
    """relative path → sha256 of every file under the data folders."""
    out = {}
    for d in dirs:
        for path in sorted((root / d).rglob("*")):
            if path.is_file():
                out[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("versions") / "project", PARAMS)
    backdrop(project, "data", "synth")
    dvc(project, "repro", "cluster")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "data v1: 20 synth pairs")
    v1 = (project / "data/clusters/assignments.csv").read_text()
    backdrop(project, "data", "synth", "--n", "24")  # a new drop: 4 more pairs (the first 20 unchanged)
    dvc(project, "repro", "cluster")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "data v2: 24 synth pairs")
    v2 = (project / "data/clusters/assignments.csv").read_text()
    summary = json.loads((project / "data/clusters/summary.json").read_text())
    table = backdrop(project, "data", "versions").stdout
    return {"project": project, "v1": v1, "v2": v2, "summary": summary, "table": table}


def _counts(assignments_csv: str) -> dict[str, int]:
    import csv
    import io

    counts: dict[str, int] = {}
    for row in csv.DictReader(io.StringIO(assignments_csv)):
        counts[row["cluster"]] = counts.get(row["cluster"], 0) + 1
    return counts


def test_versions_lists_each_committed_data_state_with_counts_per_cluster(history):
    project = history["project"]
    listed = json.loads(backdrop(project, "data", "versions", "--json").stdout)
    assert len(listed) == 2
    newest, oldest = listed
    log = git(project, "log", "--format=%H").split()
    assert [newest["commits"][0]["commit"], oldest["commits"][0]["commit"]] == log[:2]
    assert (newest["pairs"], oldest["pairs"]) == (24, 20)
    for version, csv_text in ((newest, history["v2"]), (oldest, history["v1"])):
        assert {cid: c["pairs"] for cid, c in version["clusters"].items()} == _counts(csv_text)
        assert sum(version["splits"].values()) == version["pairs"]
        assert version["raw_md5"].endswith(".dir")
    assert newest["raw_md5"] != oldest["raw_md5"] and newest["version"] != oldest["version"]
    table = history["table"]
    print(table)
    assert newest["version"] in table and oldest["version"] in table and "24" in table


def test_cluster_model_survives_dvc_repro_so_ids_are_matched(history):
    """`persist: true` on the cluster out: DVC kept v1's model.joblib, and v2 matched its ids to it."""
    stability = history["summary"]["stability"]
    assert stability["previous_model"] is True and stability["compared_pairs"] >= 1
    v1 = {r.split(",")[0]: r.split(",")[2] for r in history["v1"].splitlines()[1:]}
    v2 = {r.split(",")[0]: r.split(",")[2] for r in history["v2"].splitlines()[1:]}
    kept = sum(v2[pid] == cid for pid, cid in v1.items()) / len(v1)
    assert stability["kept_share"] == pytest.approx(kept)


def test_a_training_run_traces_to_its_data_version(history):
    """What train logs (tracking.dvc_lineage tags on the MLflow run) leads back to the version."""
    import mlflow

    from backdrop.tracking import dvc_lineage

    project = history["project"]
    uri = f"sqlite:///{project / 'mlflow' / 'mlflow.db'}"
    (project / "mlflow").mkdir(exist_ok=True)
    tags = dvc_lineage(project / "dvc.lock")
    assert any(k.startswith("dvc.ingest.") for k in tags) and any(k.startswith("dvc.cluster.") for k in tags)
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("trace", artifact_location=(project / "mlflow" / "art").as_uri())
    run_id = client.create_run(exp, tags={"git_commit": "x", **tags}).info.run_id
    client.set_terminated(run_id)

    proc = subprocess.run([str(BIN / "backdrop"), "data", "versions", "--run", run_id, "--json"],
                          cwd=project, env=project_env(project) | {"MLFLOW_TRACKING_URI": uri},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    traced = json.loads(proc.stdout)
    head = git(project, "rev-parse", "HEAD").strip()
    assert traced["version"]["commits"][0]["commit"] == head and traced["version"]["pairs"] == 24


def test_dvc_push_then_pull_in_a_fresh_clone_restores_the_exact_dataset(history, tmp_path):
    project = history["project"]
    remote = tmp_path / "remote"
    dvc(project, "remote", "modify", "--local", "local", "url", str(remote))  # the default remote, moved
    dvc(project, "push")
    assert any(p.is_file() for p in remote.rglob("*"))
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(project), str(clone)], check=True, timeout=120,
                   env=os.environ | GIT_ID)
    assert not (clone / "data/raw").exists()  # git holds no data, only dvc.lock
    dvc(clone, "remote", "modify", "--local", "local", "url", str(remote))
    dvc(clone, "pull", "cluster", "--with-deps")  # the data stages' outputs (training outputs are not data)

    original, restored = tree_digest(project), tree_digest(clone)
    assert len(original) > 24 * 4 and restored == original  # every file, byte for byte
    # every stage from the raw store on is up to date; ingest only misses its input, the vendor drop
    # folder, which is not data of the project (the raw store it was copied into is)
    assert "up to date" in dvc(clone, "status", "validate", "prepare", "cluster").stdout
    assert dvc(clone, "status", "ingest").stdout.split() == ["ingest:", "changed", "deps:", "deleted:", "data/drop"]
    listed = json.loads(backdrop(clone, "data", "versions", "--json").stdout)
    assert listed[0]["pairs"] == 24  # the pulled cache answers for the current version
