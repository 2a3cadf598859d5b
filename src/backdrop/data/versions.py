"""Dataset versions: every state of the data stages in git history of dvc.lock, with pair counts per cluster.

A *data version* is one combination of the DVC hashes of the data stages' outputs (ingest's raw store,
validate's manifest/quarantine, prepare's resized pairs and split, cluster's assignments and model),
as recorded in dvc.lock. `list_versions` walks `git log -- dvc.lock` (plus an uncommitted dvc.lock in
the workspace), groups commits that share a version, and reads each version's
`assignments.csv` straight from the DVC cache (the `.dir` listing of the cluster output names its
hash), giving pairs per cluster and per split without checking anything out.

Tracing a training run: `backdrop train` tags its MLflow run with `dvc.<stage>.<path>` = md5 for every
output in dvc.lock at the time (`tracking.dvc_lineage`) plus `git_commit`. `trace_run` matches those
tags to a version; `git checkout <commit>` + `dvc checkout` (or `dvc pull`) then restores exactly
the data the run saw.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

DATA_STAGES = ("ingest", "validate", "prepare", "cluster")
LOCK = "dvc.lock"


@dataclass
class DataVersion:
    version: str                          # short hash of the data stages' output hashes
    outs: dict[str, str]                  # "<stage>:<path>" → DVC md5 (".dir" for folders)
    commits: list[dict[str, str]] = field(default_factory=list)  # newest first: commit, date, subject
    pairs: int | None = None              # prepared pairs (rows of assignments.csv)
    splits: dict[str, int] | None = None  # train/val/test
    clusters: dict[str, dict] | None = None  # id → {"name", "pairs"}
    note: str = ""                        # why counts are missing, if they are

    @property
    def raw_md5(self) -> str:
        return next((md5 for key, md5 in self.outs.items() if key.startswith("ingest:")), "")

    def as_dict(self) -> dict:
        return asdict(self) | {"raw_md5": self.raw_md5}


def data_outs(lock: dict) -> dict[str, str]:
    """`<stage>:<path>` → md5 of the data stages' outputs in one parsed dvc.lock."""
    stages = (lock or {}).get("stages") or {}
    return {f"{stage}:{out['path']}": str(out.get("md5", ""))
            for stage in DATA_STAGES for out in (stages.get(stage) or {}).get("outs") or []}


def version_id(outs: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(sorted(outs.items())).encode()).hexdigest()[:10]


def _git(root: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def lock_history(root: Path) -> list[tuple[dict[str, str], dict]]:
    """(commit info, parsed dvc.lock), newest first: an uncommitted workspace dvc.lock, then git log."""
    states = []
    log = _git(root, "log", "--format=%H%x1f%cI%x1f%s", "--", LOCK) or ""
    committed = [line.split("\x1f", 2) for line in log.splitlines() if line.count("\x1f") == 2]
    head_text = _git(root, "show", f"HEAD:{LOCK}") if committed else None
    workspace = root / LOCK
    if workspace.exists() and workspace.read_text() != head_text:
        states.append(({"commit": "workspace", "date": "", "subject": "uncommitted dvc.lock"},
                       yaml.safe_load(workspace.read_text()) or {}))
    for sha, date, subject in committed:
        text = _git(root, "show", f"{sha}:{LOCK}")
        if text is None:  # dvc.lock deleted in this commit
            continue
        states.append(({"commit": sha, "date": date, "subject": subject}, yaml.safe_load(text) or {}))
    return states


class _Cache:
    """Read files of DVC-tracked folders straight from the local cache (no checkout, no network)."""

    def __init__(self, root: Path):
        try:
            from dvc.repo import Repo

            with Repo(str(root)) as repo:
                self.path = Path(repo.cache.local.path)
        except Exception:  # noqa: BLE001 - not a DVC repo: nothing is cached
            self.path = None

    def _object(self, md5: str) -> Path | None:
        if self.path is None or len(md5) < 3:
            return None
        path = self.path / md5[:2] / md5[2:]
        return path if path.exists() else None

    def read(self, dir_md5: str, relpath: str) -> bytes | None:
        listing = self._object(dir_md5)
        if listing is None:
            return None
        for entry in json.loads(listing.read_text()):
            if entry.get("relpath") == relpath and (obj := self._object(entry.get("md5", ""))):
                return obj.read_bytes()
        return None


def _counts(version: DataVersion, cache: _Cache) -> None:
    cluster_out = next(((k, v) for k, v in version.outs.items() if k.startswith("cluster:")), None)
    if cluster_out is None:
        version.note = "no cluster output in this dvc.lock"
        return
    data = cache.read(cluster_out[1], "assignments.csv")
    if data is None:
        version.note = "assignments.csv not in the local DVC cache (dvc fetch / dvc pull to count)"
        return
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    version.pairs = len(rows)
    version.splits, clusters = {}, {}
    for row in rows:
        version.splits[row["split"]] = version.splits.get(row["split"], 0) + 1
        entry = clusters.setdefault(row["cluster"], {"name": row.get("cluster_name", ""), "pairs": 0})
        entry["pairs"] += 1
    version.clusters = dict(sorted(clusters.items(), key=lambda kv: int(kv[0])))


def list_versions(root: Path) -> list[DataVersion]:
    """Data versions, newest first, each with the commits that recorded it and its counts."""
    versions: dict[str, DataVersion] = {}
    for info, lock in lock_history(root):
        outs = data_outs(lock)
        if not outs:
            continue
        vid = version_id(outs)
        versions.setdefault(vid, DataVersion(vid, outs)).commits.append(info)
    cache = _Cache(root)
    for version in versions.values():
        _counts(version, cache)
    return list(versions.values())


def lineage_outs(tags: dict[str, str]) -> dict[str, str]:
    """The data-stage outputs among a run's `dvc.<stage>.<path>` tags, as `<stage>:<path>` → md5."""
    outs = {}
    for key, md5 in tags.items():
        if key.startswith("dvc."):
            stage, _, path = key[len("dvc."):].partition(".")
            if stage in DATA_STAGES and path:
                outs[f"{stage}:{path}"] = md5
    return outs


def trace_run(tags: dict[str, str], versions: list[DataVersion]) -> DataVersion | None:
    """The version whose data outputs are exactly those a run was tagged with, if any."""
    outs = lineage_outs(tags)
    return next((v for v in versions if outs and v.outs == outs), None) if outs else None


def run_tags(run_id: str, tracking_uri: str) -> dict[str, str]:
    from mlflow import MlflowClient

    return dict(MlflowClient(tracking_uri=tracking_uri).get_run(run_id).data.tags)


def format_table(versions: list[DataVersion]) -> str:
    """Human-readable listing, newest first."""
    if not versions:
        return "no data versions: no dvc.lock with data stages in the workspace or in git history"
    lines = [f"{'version':<11} {'commit':<10} {'date':<25} {'pairs':>5}  {'train/val/test':<14}  "
             f"clusters (id:pairs)"]
    for v in versions:
        newest = v.commits[0]
        commit = newest["commit"][:9] if newest["commit"] != "workspace" else "workspace"
        splits = "/".join(str((v.splits or {}).get(s, 0)) for s in ("train", "val", "test")) if v.splits else "-"
        clusters = " ".join(f"{cid}:{c['pairs']}" for cid, c in v.clusters.items()) if v.clusters else v.note
        pairs = str(v.pairs) if v.pairs is not None else "-"
        lines.append(f"{v.version:<11} {commit:<10} {newest['date'][:25]:<25} {pairs:>5}  {splits:<14}  {clusters}")
        if len(v.commits) > 1:
            lines.append(f"{'':<11} (also in {len(v.commits) - 1} older commit(s))")
    return "\n".join(lines)
