"""`backdrop remove` on a folder of 100 photos: progress, original sizes, alpha = mask, all logged."""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest
from PIL import Image

from tests.serving.conftest import BIN, env_for, write_photos, write_project

pytestmark = pytest.mark.slow  # the `backdrop remove` CLI in a subprocess


def test_remove_a_folder_of_100_photos(tmp_path):
    project = write_project(tmp_path / "project", monitoring={"record_predictions": True})
    photos = tmp_path / "shop"
    sizes = write_photos(photos, 100, seed=4242, min_side=160, max_side=360)

    def remove(out: str, fmt: str, inputs: list[str]) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(BIN / "backdrop"), "remove", *inputs, "--out", out, "--model", "official:u2netp",
                               "--format", fmt], cwd=project, env=env_for(project), capture_output=True,
                              text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-4000:]
        return proc

    proc = remove("cutouts", "rgba", [str(photos)])
    # off a terminal the progress bar is a log line per 10 %: 10 %, 20 %, …, 100/100
    progress = re.findall(r"remove: (\d+)/100 img \((\d+)%", proc.stderr)
    assert len(progress) == 10 and progress[-1] == ("100", "100"), proc.stderr[-3000:]
    assert "remove: wrote 100 file(s)" in proc.stdout

    out = project / "cutouts"
    written = sorted(out.glob("*.png"))
    assert [p.stem for p in written] == sorted(sizes)
    for path in written:
        with Image.open(path) as im:
            assert im.mode == "RGBA" and im.size == sizes[path.stem]

    # the mask output of the same photos is exactly the RGBA output's alpha
    subset = [str(photos / f"p{i:03d}.jpg") for i in range(0, 100, 10)]
    remove("masks", "mask", subset)
    for name in subset:
        stem = name.rsplit("/", 1)[1][:-4]
        alpha = np.asarray(Image.open(out / f"{stem}.png").getchannel("A"))
        mask = np.asarray(Image.open(project / "masks" / f"{stem}.png").convert("L"))
        assert np.array_equal(alpha, mask), stem

    # and every cut-out went into the prediction log (SQLite in the project)
    import sqlite3

    db = sqlite3.connect(project / "monitoring" / "monitoring.db")
    assert db.execute("select count(*) from predictions").fetchone()[0] == 110
