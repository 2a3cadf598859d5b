"""The Python API (`backdrop.remove`, `backdrop.new_session`), settings and model choice anywhere,
clean edges and the halo metric (issue 23)."""

from __future__ import annotations

import doctest
import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from backdrop.serving import cutout
from backdrop.serving.outputs import decontaminate, halo_share
from backdrop.serving.specs import STOCK


@pytest.fixture()
def nowhere(tmp_path, monkeypatch):
    """An empty folder outside any project, as the current directory."""
    for var in ("BACKDROP_PARAMS", "BACKDROP_PROJECT_DIR", "BACKDROP_MONITORING_DB", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_documented_examples_run(nowhere):
    result = doctest.testmod(cutout, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 8 and result.failed == 0
    assert sorted(p.name for p in nowhere.iterdir()) == []  # nothing written but what was returned


def test_import_backdrop_is_cheap_and_lazy():
    code = ("import sys, backdrop; heavy = [m for m in ('numpy', 'onnxruntime', 'PIL', 'torch', 'backdrop.serving')"
            " if m in sys.modules]; print(heavy); backdrop.remove; print('onnxruntime' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]"  # nothing heavy until the API is touched
    assert out[1] == "False"  # touching it imports the module, not the engine


def _product(size=(160, 120), colour=(15, 20, 30), backdrop=(250, 250, 250)):
    """A dark box on white with a soft (2 px) edge, its true alpha, and the photo."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dist = np.minimum.reduce([xx - 40, 120 - xx, yy - 30, 90 - yy])  # inside > 0
    alpha = np.clip(0.5 + dist / 3.0, 0.0, 1.0)
    img = alpha[..., None] * np.array(colour, np.float32) + (1 - alpha[..., None]) * np.array(backdrop, np.float32)
    return Image.fromarray((img + 0.5).astype(np.uint8)), alpha


def test_same_kind_in_and_out(nowhere):
    photo, _ = _product()
    session = cutout.new_session("u2netp")
    assert session.model == STOCK and session.choice.why == "asked for"
    pil = session.remove(photo)
    assert isinstance(pil, Image.Image) and pil.mode == "RGBA" and pil.size == photo.size
    arr = session.remove(np.asarray(photo), format="mask")
    assert isinstance(arr, np.ndarray) and arr.shape == (120, 160) and arr.dtype == np.uint8
    buf = io.BytesIO()
    photo.save(buf, format="PNG")
    jpeg = session.remove(buf.getvalue(), format="white")
    assert isinstance(jpeg, bytes) and jpeg[:3] == b"\xff\xd8\xff"
    # the dark box is found: opaque in the middle, transparent in the corner
    assert arr[60, 80] > 200 and arr[2, 2] < 30
    with pytest.raises(ValueError, match="format 'gif'"):
        session.remove(photo, format="gif")
    with pytest.raises(TypeError, match="str"):
        session.remove("photo.jpg")
    with pytest.raises(ValueError, match="not a supported image"):
        session.remove(b"not an image at all")


def test_remove_many_keeps_order_and_kinds_and_gives_what_remove_gives(nowhere):
    """`Session.remove_many` runs the photos on lanes, yields them in order as the kind each came in,
    with the pixels `remove` gives, and names the position of a bad one."""
    photo, _ = _product()
    small, _ = _product(size=(96, 80))
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=95)
    session = cutout.new_session("u2netp")
    images = [photo, np.asarray(small), buf.getvalue(), photo.resize((120, 90))]
    outs = list(session.remove_many(images, format="rgba"))
    assert [type(o) for o in outs][:3] == [Image.Image, np.ndarray, bytes]
    assert outs[0].size == (160, 120) and outs[1].shape == (80, 96, 4) and outs[3].size == (120, 90)
    one_by_one = [session.remove(i, format="rgba") for i in images]
    as_arrays = [np.asarray(Image.open(io.BytesIO(o)) if isinstance(o, bytes) else o) for o in outs]
    expected = [np.asarray(Image.open(io.BytesIO(o)) if isinstance(o, bytes) else o) for o in one_by_one]
    for got, want in zip(as_arrays, expected, strict=True):
        assert np.array_equal(got, want)
    from backdrop.serving.base import lane_count

    lanes = lane_count(session.params)
    assert len(session.segmenter._lanes) == (lanes if lanes > 1 else 0)  # lanes, not the all-cores session
    bad = session.remove_many([photo, b"not an image at all", photo])
    assert isinstance(next(bad), Image.Image)
    with pytest.raises(ValueError, match="image 1: .*not a supported image"):
        next(bad)


def test_outside_a_project_defaults_and_no_prediction_log(nowhere, monkeypatch):
    params, in_project = cutout.context()
    assert not in_project and params.monitoring.record_predictions is False
    assert params.serve == type(params.serve)()  # the built-in defaults (= the shipped params.yaml)
    monkeypatch.setenv("BACKDROP_MONITORING_DB", "sqlite:////tmp/x.db")
    assert cutout.context()[0].monitoring.record_predictions is True  # configured: it logs
    choice = cutout.pick_model(None, params, in_project)
    assert choice.spec == STOCK and "no project" in choice.notice()


def test_in_a_project_without_champion_falls_back_without_creating_a_store(nowhere):
    (nowhere / "params.yaml").write_text("mlflow:\n  tracking_uri: sqlite:///mlflow/mlflow.db\n")
    params, in_project = cutout.context()
    assert in_project
    choice = cutout.pick_model(None, params, in_project)
    assert choice.spec == STOCK and "no registered champion" in choice.why
    assert not (nowhere / "mlflow").exists()  # looking for the champion created nothing
    # an existing but empty file is not an MLflow store either, and stays untouched
    (nowhere / "mlflow").mkdir()
    (nowhere / "mlflow" / "mlflow.db").write_bytes(b"")
    assert cutout.pick_model(None, params, in_project).spec == STOCK
    assert (nowhere / "mlflow" / "mlflow.db").stat().st_size == 0


def test_a_named_model_that_is_missing_points_at_the_stock_model(nowhere):
    from backdrop.serving.specs import NoModelError

    (nowhere / "params.yaml").write_text("mlflow:\n  tracking_uri: sqlite:///mlflow.db\n")
    with pytest.raises(NoModelError, match="official:u2netp"):
        cutout.new_session("champion")
    assert not (nowhere / "mlflow.db").exists()


def test_clean_edges_remove_the_backdrop_fringe():
    photo, alpha = _product()
    a8 = (alpha * 255 + 0.5).astype(np.uint8)
    raw = np.dstack([np.asarray(photo), a8])                        # rembg's default: the photo's colours
    clean = np.dstack([np.asarray(decontaminate(photo, alpha)), a8])
    raw_halo, clean_halo = halo_share(photo, raw, alpha), halo_share(photo, clean, alpha)
    assert raw_halo > 0.15                                          # mixed edge pixels carry white
    assert clean_halo < 0.3 * raw_halo, (raw_halo, clean_halo)
    # nothing outside the edge band changes
    band = (alpha > 0.02) & (alpha < 0.98)
    assert np.array_equal(np.asarray(photo)[~band], clean[..., :3][~band])
    # a photo without an edge band is returned as it is
    assert decontaminate(photo, np.ones(alpha.shape, np.float32)) is photo
