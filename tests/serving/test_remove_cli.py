"""`backdrop remove` on a folder of 100 photos: progress, original sizes, alpha = mask, all logged."""

from __future__ import annotations

import os
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


# ------------------------------------------------------------------- issue 23: works anywhere, rembg's CLI
def _bare_env(home) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW", "BACKDROP"))}
    return {**env, "TQDM_DISABLE": "1", "HOME": str(home)}


def test_remove_from_any_folder_writes_only_the_cutouts(tmp_path):
    photos = tmp_path / "photos"
    sizes = write_photos(photos, 3, seed=909, min_side=200, max_side=320)
    here = tmp_path / "anywhere"
    here.mkdir()
    proc = subprocess.run([str(BIN / "backdrop"), "remove", str(photos), "-o", "cut"], cwd=here,
                          env=_bare_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "model: official:u2netp (the stock model: no --model given and no project here)" in proc.stderr
    assert sorted(p.name for p in here.iterdir()) == ["cut"]  # no monitoring DB, no photo copies, no MLflow
    assert sorted(p.stem for p in (here / "cut").iterdir()) == sorted(sizes)


def test_rembg_conventions(tmp_path):
    photos = tmp_path / "photos"
    write_photos(photos, 1, seed=910, min_side=240, max_side=300)
    photo = photos / "p000.jpg"
    backdrop = str(BIN / "backdrop")
    env = _bare_env(tmp_path)

    def run(*args, **kw):
        return subprocess.run([backdrop, "remove", *args], cwd=tmp_path, env=env, capture_output=True,
                              timeout=300, **kw)

    bad = run(str(photo), "--format", "gif", text=True)
    assert bad.returncode == 2 and "Usage:" in bad.stderr and "gif" in bad.stderr  # a usage error
    piped = run("-", "-o", "-", "-m", "u2netp", "-q", input=photo.read_bytes())
    assert piped.returncode == 0, piped.stderr[-2000:]
    assert piped.stderr == b""  # --quiet: nothing but errors
    with Image.open(__import__("io").BytesIO(piped.stdout)) as im:
        assert im.mode == "RGBA" and im.size == Image.open(photo).size
    mask = run(str(photo), "-o", str(tmp_path / "m.png"), "-f", "MASK", "-a", text=True)
    assert mask.returncode == 0, mask.stderr[-2000:]
    assert Image.open(tmp_path / "m.png").mode == "L"
    missing = run(str(photo), "-m", str(tmp_path / "nope.pt"), text=True)
    assert missing.returncode == 1 and "nope.pt" in missing.stderr and "official:u2netp" in missing.stderr
    helptext = subprocess.run([backdrop, "remove", "--help"], env={**env, "COLUMNS": "200"}, capture_output=True,
                              text=True).stdout
    for word in ("-m", "--model", "u2netp", "champion", "--format", "rgba", "--quiet", "--alpha-matting", "-a"):
        assert word in helptext, word
    top = subprocess.run([backdrop, "--help"], env={**env, "COLUMNS": "200"}, capture_output=True, text=True).stdout
    assert top.index("remove") < top.index("serve") < top.index("ingest")  # most used commands first
