"""params.yaml → typed models: the repo's file loads, bad values name their dotted key, loads are cached."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from backdrop.config import (
    ConfigError,
    IngestParams,
    Params,
    ValidateParams,
    load_params,
    parse_params,
    resolve,
)

REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def test_repo_params_yaml_loads_into_every_section():
    params = load_params(REPO_PARAMS)
    raw = yaml.safe_load(REPO_PARAMS.read_text())
    assert isinstance(params, Params)
    # every key written in the file arrives in the model with the file's value (nothing is dropped)
    assert params.prepare.size == raw["prepare"]["size"] and params.prepare.size % 32 == 0
    assert params.train.model == raw["train"]["model"]
    assert params.validate_.max_bad_share == raw["validate"]["max_bad_share"]
    assert params.validate_.near_dup_distance == raw["validate"]["near_dup_distance"]
    assert params.ingest.max_unpacked_bytes == raw["ingest"]["max_unpacked_bytes"]
    assert params.register_.alias == raw["register"]["alias"]
    _same(params, raw, "")


def _same(model: BaseModel, raw: dict, where: str) -> None:
    """Every key of the YAML mapping is a field of the model holding the YAML value (recursively)."""
    aliases = {f.alias or name: name for name, f in type(model).model_fields.items()}
    for key, value in raw.items():
        got = getattr(model, aliases[key])
        if isinstance(got, BaseModel):
            _same(got, value, f"{where}{key}.")
        else:
            if isinstance(got, Path):
                got = str(got)
            elif isinstance(got, tuple):  # YAML sequences load into tuple fields (frozen models)
                got = list(got)
            assert got == value, f"{where}{key}"


@pytest.mark.parametrize(("text", "dotted_key", "why"), [
    ("prepare:\n  size: 100\n", "prepare.size", "size must be a multiple of 32"),
    ("prepare:\n  size: 16\n", "prepare.size", "greater than or equal to 32"),
    ("train:\n  model: resnet\n", "train.model", "u2netp"),
    ("ingest:\n  colour: blue\n", "ingest.colour", "Extra inputs are not permitted"),
    ("validate:\n  max_bad_share: 1.5\n", "validate.max_bad_share", "less than or equal to 1"),
    ("validate:\n  near_dup_distance: -1\n", "validate.near_dup_distance", "greater than or equal to 0"),
    ("tain:\n  epochs: 3\n", "tain", "Extra inputs are not permitted"),
    ("serve:\n  zoom: sometimes\n", "serve.zoom", "'auto', 'always' or 'never'"),
    ("train:\n  channels_last: sometimes\n", "train.channels_last", "'auto', True or False"),
])
def test_bad_value_fails_with_config_error_naming_the_key(tmp_path, text, dotted_key, why):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_params(path)
    message = str(err.value)
    assert f"  {dotted_key}:" in message  # the offending key, dotted, at the start of its line
    assert why in message
    assert str(path) in message


def test_unreadable_files_fail_with_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "missing.yaml")
    (tmp_path / "broken.yaml").write_text("prepare: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(tmp_path / "broken.yaml")
    (tmp_path / "list.yaml").write_text("- prepare\n- train\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_params(tmp_path / "list.yaml")


def test_loading_is_cached_per_path(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  epochs: 2\n")
    first = load_params(path)
    path.write_text("train:\n  epochs: 9\n")  # a later edit is not seen: parsed once per process
    assert load_params(path) is first
    assert load_params(str(path)) is first  # same file given as str
    assert first.train.epochs == 2
    other = tmp_path / "other.yaml"
    other.write_text("train:\n  epochs: 9\n")
    assert load_params(other) is not first and load_params(other).train.epochs == 9


def test_missing_sections_take_defaults_and_models_are_frozen():
    params = parse_params({"train": {"epochs": 1}})
    assert params.train.epochs == 1 and params.prepare.size == 160
    with pytest.raises(ValueError):
        params.train.epochs = 5  # frozen: stages cannot mutate shared params


def test_relative_paths_resolve_against_the_project_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKDROP_PROJECT_DIR", str(tmp_path))
    assert resolve(IngestParams().raw_dir) == tmp_path / "data" / "raw"
    assert resolve(ValidateParams().quarantine_dir) == tmp_path / "data" / "quarantine"
    assert resolve(tmp_path / "abs") == tmp_path / "abs"


def test_artifact_root_keeps_object_store_uris(tmp_path, monkeypatch):
    """A production artifact root (s3://…) must reach MLflow intact; a relative one anchors at the project."""
    from backdrop.tracking import artifact_location

    s3 = parse_params({"mlflow": {"artifact_root": "s3://backdrop-mlflow/artifacts/"}})
    assert artifact_location(s3, "backdrop") == "s3://backdrop-mlflow/artifacts/backdrop"
    monkeypatch.setenv("BACKDROP_PROJECT_DIR", str(tmp_path))
    local = parse_params({})
    assert artifact_location(local, "backdrop") == (tmp_path / "mlflow" / "artifacts" / "backdrop").as_uri()


def test_params_rewritten_by_dvc_exp_run_set_still_load(tmp_path):
    """`dvc exp run -S key=value` rewrites params.yaml with ruamel (YAML 1.2) and drops quotes, so
    `white_aspect: "1:1"` becomes `white_aspect: 1:1` — a base-60 integer (61) to a YAML 1.1 reader."""
    from dvc.utils.serialize import modify_yaml

    path = tmp_path / "params.yaml"
    path.write_text(REPO_PARAMS.read_text())
    with modify_yaml(path) as data:  # what `dvc exp run -S train.epochs=3` does to the file
        data["train"]["epochs"] = 3
    assert "white_aspect: 1:1" in path.read_text()  # quotes gone, as in a real experiment
    params = load_params(path)
    assert params.serve.white_aspect == "1:1"
    assert params.train.epochs == 3


def test_serve_zoom_reads_old_booleans():
    """`zoom: true/false` (how the key was first written) still loads: always / never."""
    for text, want in (("true", "always"), ("false", "never"), ("auto", "auto")):
        assert parse_params({"serve": {"zoom": yaml.safe_load(text)}}, "params.yaml").serve.zoom == want
