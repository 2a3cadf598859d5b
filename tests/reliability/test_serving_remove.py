"""`backdrop remove` (issue 22, classes 1, 2, 6 and the invariant): never lose a photo.

* class 2 — one bad file does not stop the run: every good photo is cut out, each bad one is one line
  naming the file and the problem, then a summary, and the exit status is non-zero;
* class 1 — output names are unique and stable: sub-folders are mirrored, photos sharing a stem keep
  their extension (`shirt.jpg.png`, `shirt.png.png`), no output is written over another;
* class 6 — symbolic links inside a DIR argument are not followed (reported as failures);
* invariant — every input ends as exactly one output or exactly one reported failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backdrop.cli import app
from tests.reliability.conftest import rendered_photo_bytes
from tests.serving.conftest import write_project

MODEL = "official:u2netp"


def photo_bytes(index: int, fmt: str = "JPEG") -> bytes:
    return rendered_photo_bytes(77, index, fmt)


BAD = {
    "truncated.jpg": lambda: photo_bytes(0)[:300],
    "text.png": lambda: b"this is not a picture\n",
    "empty.jpg": lambda: b"",
}


@pytest.fixture()
def project(tmp_path, monkeypatch) -> Path:
    import yaml

    root = write_project(tmp_path / "project", monitoring={"record_predictions": False})
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["remove"].update(workers=1, batch_size=2)  # one session: quick to start
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.setenv("BACKDROP_PROJECT_DIR", str(root))
    monkeypatch.delenv("BACKDROP_PARAMS", raising=False)
    return root


def run_remove(project: Path, *args: str):
    result = CliRunner().invoke(app, ["remove", *args, "--model", MODEL,
                                      "--params", str(project / "params.yaml")])
    return result


def _outputs(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def _stderr(result) -> str:
    try:
        return result.stderr
    except ValueError:  # older click: mixed
        return result.output


# ------------------------------------------------------------------------------------------ class 2
@pytest.mark.parametrize("bad", sorted(BAD))
def test_one_bad_file_does_not_stop_the_run(project, tmp_path, bad):
    shop = tmp_path / "shop"
    shop.mkdir()
    for i in range(3):
        (shop / f"p{i}.jpg").write_bytes(photo_bytes(i))
    (shop / bad).write_bytes(BAD[bad]())
    out = tmp_path / "out"
    result = run_remove(project, str(shop), "--out", str(out))
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert _outputs(out) == ["p0.png", "p1.png", "p2.png"]
    err = _stderr(result)
    failed = [line for line in err.splitlines() if "FAILED" in line]
    assert len(failed) == 1 and bad in failed[0], err
    assert "Traceback" not in err
    assert "wrote 3 file(s)" in result.stdout and "1 failed" in result.stdout


def test_remove_returns_written_and_failed(project, tmp_path):
    from backdrop.config import load_params
    from backdrop.serving.remove import remove

    shop = tmp_path / "shop"
    shop.mkdir()
    (shop / "good.jpg").write_bytes(photo_bytes(1))
    for name, make in BAD.items():
        (shop / name).write_bytes(make())
    result = remove([shop], tmp_path / "out", params=load_params(project / "params.yaml"), model=MODEL)
    assert [p.name for p in result.written] == ["good.png"]
    assert sorted(f.path.name for f in result.failed) == sorted(BAD)
    assert {f.reason for f in result.failed} <= {"corrupt_file", "not_an_image", "empty_file"}


# ------------------------------------------------------------------------------------------ class 1
COLLISIONS = {
    "same-stem-two-exts": (["shirt.jpg", "shirt.png"], ["shirt.jpg.png", "shirt.png.png"]),
    "sub-folder": (["a/x.jpg", "a/sub/x.jpg"], ["a/sub/x.png", "a/x.png"]),
    "case-and-ext": (["Cap.JPG", "cap.png", "cap.webp"], ["Cap.JPG.png", "cap.png.png", "cap.webp.png"]),
    "name-of-a-collided-output": (["k.jpg", "k.png", "k.jpg.png"], ["k.jpg-2.png", "k.jpg.png", "k.png.png"]),
}


@pytest.mark.parametrize("case", sorted(COLLISIONS))
def test_colliding_names_give_one_output_each(project, tmp_path, case):
    names, expected = COLLISIONS[case]
    shop = tmp_path / "shop"
    for i, name in enumerate(names):
        path = shop / name
        path.parent.mkdir(parents=True, exist_ok=True)
        fmt = {".png": "PNG", ".webp": "WEBP"}.get(Path(name).suffix.lower(), "JPEG")
        path.write_bytes(photo_bytes(i, fmt))
    out = tmp_path / "out"
    result = run_remove(project, str(shop), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert f"wrote {len(names)} file(s)" in result.stdout
    got = _outputs(out)  # a DIR argument's sub-folders are mirrored
    assert got == sorted(expected)
    # stable: the same inputs give the same names again, written over their own previous outputs
    again = run_remove(project, str(shop), "--out", str(out))
    assert again.exit_code == 0 and _outputs(out) == got


def test_explicit_files_with_one_name_from_two_folders(project, tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.jpg").write_bytes(photo_bytes(ord(folder)))
    out = tmp_path / "out"
    result = run_remove(project, str(tmp_path / "a/x.jpg"), str(tmp_path / "b/x.jpg"), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert len(_outputs(out)) == 2


# ------------------------------------------------------------------------------------------ class 6
def _private(tmp_path: Path) -> Path:
    secret = tmp_path / "private"
    (secret / "deep").mkdir(parents=True)
    (secret / "secret.jpg").write_bytes(photo_bytes(9))
    (secret / "deep" / "hidden.jpg").write_bytes(photo_bytes(8))
    return secret


SYMLINKS = {
    "file-link": lambda shop, secret: os.symlink(secret / "secret.jpg", shop / "linked.jpg"),
    "dir-link": lambda shop, secret: os.symlink(secret, shop / "linked-dir"),
    "nested-file-link": lambda shop, secret: (shop / "sub").mkdir() or os.symlink(secret / "deep" / "hidden.jpg",
                                                                                  shop / "sub" / "h.jpg"),
}


@pytest.mark.parametrize("kind", sorted(SYMLINKS))
def test_symlinks_in_a_folder_are_not_followed(project, tmp_path, kind):
    secret = _private(tmp_path)
    shop = tmp_path / "shop"
    shop.mkdir()
    (shop / "own.jpg").write_bytes(photo_bytes(1))
    SYMLINKS[kind](shop, secret)
    out = tmp_path / "out"
    result = run_remove(project, str(shop), "--out", str(out))
    assert _outputs(out) == ["own.png"]
    assert result.exit_code == 1
    err = _stderr(result)
    assert "symlink" in err and err.count("FAILED") == 1, err


def test_an_explicit_symlink_argument_is_used(project, tmp_path):
    secret = _private(tmp_path)
    link = tmp_path / "given.jpg"
    os.symlink(secret / "secret.jpg", link)
    out = tmp_path / "out"
    result = run_remove(project, str(link), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert _outputs(out) == ["given.png"]


# ---------------------------------------------------------------------------------------- invariant
def test_every_input_is_one_output_or_one_failure(project, tmp_path):
    from backdrop.config import load_params
    from backdrop.serving.remove import remove

    secret = _private(tmp_path)
    shop = tmp_path / "shop"
    (shop / "sub").mkdir(parents=True)
    inputs = {"good.jpg": photo_bytes(1), "shirt.jpg": photo_bytes(2), "shirt.png": photo_bytes(3, "PNG"),
              "sub/shirt.jpg": photo_bytes(4), "sub/good.jpg": photo_bytes(5)}
    inputs.update({f"sub/{k}": v() for k, v in BAD.items()})
    for name, data in inputs.items():
        (shop / name).write_bytes(data)
    os.symlink(secret / "secret.jpg", shop / "link.jpg")
    os.symlink(secret, shop / "sub" / "linkdir")
    n_inputs = len(inputs) + 2
    out = tmp_path / "out"
    before = {p for p in tmp_path.rglob("*")}
    result = remove([shop], out, params=load_params(project / "params.yaml"), model=MODEL)
    assert len(result.written) + len(result.failed) == n_inputs
    assert len(result.written) == 5 and len(set(result.written)) == 5
    assert sorted(_outputs(out)) == sorted(str(p.relative_to(out)) for p in result.written)
    assert len({f.path for f in result.failed}) == len(result.failed)
    new = {p for p in tmp_path.rglob("*")} - before
    assert all(p == out or out in p.parents for p in new), sorted(new)
