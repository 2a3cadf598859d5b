"""Recipes are configuration: params.yaml is the production recipe every scheduled run trains, the demo's
short recipe is the params.demo.yaml overlay, and no run rewrites params.yaml."""

from __future__ import annotations

import pytest

from tests.conftest import REPO, TINY_PARAMS, make_project


def test_params_yaml_is_the_production_recipe():
    from backdrop.config import load_params

    p = load_params(REPO / "params.yaml")
    assert p.prepare.size == 320 and p.train.init == "official" and p.train.model == "u2netp"
    assert (p.train.epochs, p.train.low_res_epochs, p.train.lr, p.train.warmup_epochs) == (3, 0, 1e-4, 0)
    assert p.train.processes == 2 and p.train.precision == "auto" and p.train.crop_share == 0.5
    assert p.train.select_benchmarks == ["data/benchmark"] and p.train.select_benchmark_weight == 0.9
    assert p.train.wise_alphas and max(p.train.wise_alphas) < 1  # the fine-tune (α 1) always competes
    script = (REPO / "scripts/train_full.sh").read_text()
    assert "dvc exp run --name \"$NAME\"\n" in script and " -S " not in script  # the recipe is params.yaml's


def test_the_demo_overlay_writes_its_keys_and_keeps_the_rest(tmp_path):
    from backdrop.config import apply_overlay, load_params

    params = tmp_path / "params.yaml"
    params.write_text((REPO / "params.yaml").read_text())
    changed = apply_overlay(params, REPO / "params.demo.yaml")
    assert {"prepare.size", "train.epochs", "train.processes", "train.crop_share"} <= set(changed)
    demo, prod = load_params(params), load_params(REPO / "params.yaml")
    assert demo.prepare.size == 128 and demo.train.epochs == 2 and demo.train.processes == 1
    assert demo.train.aug_scale == (0.9, 1.1) and demo.train.low_res_epochs == 0
    assert demo.train.wise_alphas == [] and demo.train.select_benchmarks == []
    assert demo.serve.port == prod.serve.port and demo.monitoring == prod.monitoring
    text = params.read_text()
    assert "# The production recipe" in text and 'white_aspect: "1:1"' in text  # comments and quotes kept
    assert "aug_scale: [0.9, 1.1]" in text
    assert apply_overlay(params, REPO / "params.demo.yaml") == []  # idempotent: a second run changes nothing


def test_an_overlay_key_params_yaml_lacks_is_an_error_naming_it(tmp_path):
    from backdrop.config import ConfigError, apply_overlay

    params = tmp_path / "params.yaml"
    params.write_text((REPO / "params.yaml").read_text())
    before = params.read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: train\.epochz is not a key"):
        apply_overlay(params, bad)
    bad.write_text("prepare:\n  size: 100\n")
    with pytest.raises(ConfigError, match="prepare.size"):
        apply_overlay(params, bad)
    assert params.read_text() == before  # nothing written on error


def test_test_projects_train_the_demo_recipe_plus_their_tiny_overrides(tmp_path):
    from backdrop.config import load_params

    project = make_project(tmp_path / "p", TINY_PARAMS)
    p = load_params(project / "params.yaml")
    assert p.prepare.size == TINY_PARAMS["prepare"]["size"] and p.train.epochs == TINY_PARAMS["train"]["epochs"]
    assert p.train.processes == 1 and p.train.low_res_epochs == 0 and p.train.crop_share == 0.0


@pytest.mark.slow
def test_the_nightly_dag_run_leaves_params_yaml_as_it_was(pipeline_run):
    project = pipeline_run["project"]
    assert pipeline_run["dag_test"].returncode == 0
    assert (project / "params.yaml").read_text() == pipeline_run["params_before"]
