"""dvc.yaml lists, for each stage, every project module the stage's code imports (directly or not), so
a code change can never leave a stale stage that `dvc repro` reports as up to date."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
# Modules that cannot change what a stage writes: params are tracked by `params:` (the models only
# type them), progress bars and MLflow logging do not touch the stage's outputs.
NOT_OUTPUT_AFFECTING = {"backdrop.config", "backdrop.progress", "backdrop.tracking"}


def _stages() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _module_files(module: str) -> list[str]:
    base = ROOT / "src" / Path(*module.split("."))
    path = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
    return [str(path.relative_to(ROOT))]


def uncovered(stage: str, deps: list[str], graph) -> list[str]:
    """Project modules the stage imports that none of its deps (a file or a folder) covers."""
    code_deps = [d.rstrip("/") for d in deps if str(d).startswith("src/")]
    modules = {f"backdrop.stages.{stage}", *graph.find_upstream_modules(f"backdrop.stages.{stage}")}
    missing = []
    for module in sorted(modules - NOT_OUTPUT_AFFECTING):
        for file in _module_files(module):
            if not any(file == d or file.startswith(d + "/") for d in code_deps):
                missing.append(file)
    return missing


@pytest.fixture(scope="module")
def graph():
    import grimp

    return grimp.build_graph("backdrop")


@pytest.mark.parametrize("stage", list(_stages()))
def test_stage_deps_cover_every_module_it_imports(stage, graph):
    assert uncovered(stage, _stages()[stage]["deps"], graph) == []


def test_a_missing_dep_is_caught(graph):
    deps = [d for d in _stages()["train"]["deps"] if d != "src/backdrop/training"]
    assert "src/backdrop/training/loop.py" in uncovered("train", deps, graph)
