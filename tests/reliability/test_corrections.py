"""Corrections pass the same mask rules as validate (issue 22, class 4).

A correction drawn on an opaque RGBA canvas has a constant alpha; reading that alpha as the mask
stored coverage 1.0, which then fed IoU alerts and retraining. The mask's single channel, its
emptiness and its coverage are decided by the one rule validate uses (`backdrop.io`).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backdrop.config import MonitoringParams
from backdrop.data.predlog import Prediction, sessions
from backdrop.monitoring.corrections import CorrectionError, add_correction

W, H = 40, 30
SHAPE = np.zeros((H, W), np.uint8)
SHAPE[5:25, 10:30] = 255  # a 20x20 product: coverage 400 / 1200 = 1/3


@pytest.fixture()
def params(tmp_path, monkeypatch) -> MonitoringParams:
    monkeypatch.setenv("BACKDROP_PROJECT_DIR", str(tmp_path))
    monkeypatch.delenv("BACKDROP_MONITORING_DB", raising=False)
    params = MonitoringParams(db_url=f"sqlite:///{tmp_path / 'log.db'}", store_dir=tmp_path / "store")
    with sessions(params)() as s, s.begin():
        s.add(Prediction(image_id="abc123", image_sha256="0" * 64, stem="shoe", source_path="shoe.jpg",
                         image_path="images/x.jpg", model_uri="models:/m@champion", model_version="1",
                         confidence=0.9, mask_sha256="1" * 64, mask_path="masks/x.png", width=W, height=H,
                         brightness=0.5, contrast=0.2, coverage=0.3, created_at=datetime(2026, 12, 1)))
    return params


def _opaque(rgb: np.ndarray) -> Image.Image:
    return Image.fromarray(np.dstack([rgb, np.full((H, W), 255, np.uint8)]), mode="RGBA")


ACCEPTED = {
    "opaque RGBA, black/white painted in RGB": _opaque(np.dstack([SHAPE] * 3)),
    "opaque RGBA, painted in grey levels 5/250": _opaque(np.dstack([np.where(SHAPE, 250, 5).astype(np.uint8)] * 3)),
    "opaque LA, painted in L": Image.merge("LA", [Image.fromarray(SHAPE), Image.new("L", (W, H), 255)]),
    "RGBA whose alpha is the mask": Image.fromarray(np.dstack([np.full((H, W, 3), 200, np.uint8), SHAPE]),
                                                    mode="RGBA"),
}


@pytest.mark.parametrize("name", list(ACCEPTED))
def test_a_painted_mask_on_an_opaque_canvas_is_read_from_its_content(params, tmp_path, name):
    path = tmp_path / "shoe.png"
    ACCEPTED[name].save(path)
    row = add_correction(params, path)
    assert row.coverage == pytest.approx(1 / 3)
    stored = np.asarray(Image.open(params.store_dir / row.mask_path))
    assert np.array_equal(stored, SHAPE)


REFUSED = {
    "all-black mask": (Image.new("L", (W, H), 0), "mask_empty"),
    "all-white mask": (Image.new("L", (W, H), 255), "coverage_out_of_bounds"),
    "constant alpha 255 on a white canvas, nothing painted": (Image.new("RGBA", (W, H), (255, 255, 255, 255)),
                                                             "coverage_out_of_bounds"),
    "constant alpha 255 on a black canvas, nothing painted": (Image.new("RGBA", (W, H), (0, 0, 0, 255)),
                                                             "mask_empty"),
    "opaque RGBA holding a colour photo": (_opaque(np.dstack([SHAPE, np.roll(SHAPE, 7, axis=1), 255 - SHAPE])),
                                          "mask_not_grayscale_or_alpha"),
    "97% foreground": (Image.fromarray(np.where(np.arange(H * W).reshape(H, W) < 0.97 * H * W, 255, 0)
                                       .astype(np.uint8)), "coverage_out_of_bounds"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_empty_full_and_non_masks_are_refused_with_the_reason(params, tmp_path, name):
    image, reason = REFUSED[name]
    path = tmp_path / "shoe.png"
    image.save(path)
    with pytest.raises(CorrectionError) as info:
        add_correction(params, path)
    assert info.value.reason == reason
    assert "shoe.png" in str(info.value)
    from backdrop.data.predlog import Correction

    with sessions(params)() as s:
        assert s.query(Correction).count() == 0


def test_validate_and_corrections_share_one_mask_rule():
    """No copy of the rule: validate's and corrections' modules use the function in backdrop.io."""
    import backdrop.io as io_module
    import backdrop.monitoring.corrections as corrections
    import backdrop.stages.validate as validate

    source = Path(validate.__file__).read_text() + Path(corrections.__file__).read_text()
    assert "getextrema" not in source and "COLOUR_SPREAD =" not in source
    assert hasattr(io_module, "mask_rule")
