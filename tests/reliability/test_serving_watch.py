"""The upload-folder watcher (issue 22, classes 1, 5, 6, 11 and the invariant).

* class 1 — photos sharing a stem in one batch (or over time) each get their own output;
* class 5 — a photo in failed/ can be retried: `retry_failed` / `backdrop watch --retry-failed`, or moving
  it back by hand (a new attempt, though its name, size and mtime are those the ledger knows);
* class 6 — symbolic links are never followed: moved to failed/ with reason `symlink`, nothing published;
* class 11 — a file name that is not valid UTF-8 neither kills the watcher nor its restarts;
* invariant — every file ends as exactly one published output / queued review or one failure.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.reliability.conftest import rendered_photo_bytes

MODEL = "official:u2netp"


def photo_bytes(index: int, fmt: str = "JPEG") -> bytes:
    return rendered_photo_bytes(91, index, fmt)


@pytest.fixture(scope="module")
def segmenter():
    from backdrop.config import load_params
    from backdrop.serving.segmenter import load_segmenter

    return load_segmenter(MODEL, "onnx", params=load_params(), size=64)


class FlakySegmenter:
    """The real segmenter, except that it raises while `broken` is set (a model / disk failure)."""

    def __init__(self, real):
        self.real, self.broken = real, True

    def __getattr__(self, name):
        return getattr(self.real, name)

    def predict_batch(self, photos):
        if self.broken:
            raise OSError("output folder is read-only")
        return self.real.predict_batch(photos)


def processor(tmp_path: Path, segmenter, threshold: float = 0.0, retries: int = 0):
    from backdrop.config import load_params
    from backdrop.serving.watch import UploadProcessor

    proc = UploadProcessor(tmp_path / "up", tmp_path / "out", tmp_path / "review", model=MODEL, size=64,
                           retries=retries, settle_s=0.0, review_threshold=threshold, record=False,
                           retry_delay_s=0.01, params=load_params())
    proc._segmenter = segmenter  # noqa: SLF001  (one model load for the module)
    return proc


def put(folder: Path, name: str | bytes, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    raw = os.path.join(os.fsencode(folder), name if isinstance(name, bytes) else os.fsencode(name))
    fd = os.open(raw, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    past = time.time() - 5
    os.utime(raw, (past, past))
    return Path(os.fsdecode(raw))


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file() or p.is_symlink()) if folder.exists() else []


# ------------------------------------------------------------------------------------------ class 1
BATCHES = {
    "jpg+png": ["shirt.jpg", "shirt.png"],
    "three-exts": ["cap.jpg", "cap.png", "cap.webp"],
    "case": ["Bag.JPG", "bag.png"],
}


@pytest.mark.parametrize("case", sorted(BATCHES))
def test_one_batch_with_a_shared_stem_gives_one_output_per_photo(tmp_path, segmenter, case):
    names = BATCHES[case]
    for i, name in enumerate(names):
        fmt = {".png": "PNG", ".webp": "WEBP"}.get(Path(name).suffix.lower(), "JPEG")
        put(tmp_path / "up", name, photo_bytes(i, fmt))
    stats = processor(tmp_path, segmenter).run_once()
    assert stats.published == len(names) and stats.failed == 0
    assert files(tmp_path / "out") == sorted(f"{n}.png" for n in names)


def test_a_later_photo_with_a_taken_stem_gets_its_own_output(tmp_path, segmenter):
    put(tmp_path / "up", "shirt.jpg", photo_bytes(1))
    processor(tmp_path, segmenter).run_once()
    first = (tmp_path / "out" / "shirt.png").read_bytes()
    put(tmp_path / "up", "shirt.png", photo_bytes(2, "PNG"))
    stats = processor(tmp_path, segmenter).run_once()
    assert stats.published == 1
    assert files(tmp_path / "out") == ["shirt.png", "shirt.png.png"]
    assert (tmp_path / "out" / "shirt.png").read_bytes() == first  # never written over


# ------------------------------------------------------------------------------------------ class 6
def _links(tmp_path: Path) -> dict:
    secret = tmp_path / "private"
    secret.mkdir()
    (secret / "secret.jpg").write_bytes(photo_bytes(7))
    return {
        "outside-file": lambda up: os.symlink(secret / "secret.jpg", up / "linked.jpg"),
        "outside-dir": lambda up: os.symlink(secret, up / "linked-dir"),
        "sibling-relative": lambda up: os.symlink("own.jpg", up / "alias.jpg"),
        "dangling": lambda up: os.symlink(tmp_path / "nowhere.jpg", up / "gone.jpg"),
    }


@pytest.mark.parametrize("kind", ["outside-file", "outside-dir", "sibling-relative", "dangling"])
def test_symlinks_are_refused_and_reported(tmp_path, segmenter, kind, caplog):
    up = tmp_path / "up"
    put(up, "own.jpg", photo_bytes(1))
    link_name = {"outside-file": "linked.jpg", "outside-dir": "linked-dir", "sibling-relative": "alias.jpg",
                 "dangling": "gone.jpg"}[kind]
    _links(tmp_path)[kind](up)
    with caplog.at_level("WARNING"):
        stats = processor(tmp_path, segmenter).run_once()
    assert files(tmp_path / "out") == ["own.png"]
    assert stats.published == 1 and stats.failed == 1
    failed = tmp_path / "up" / "failed"
    assert (failed / link_name).is_symlink()  # the link itself was moved; its target untouched
    assert json.loads((failed / f"{link_name}.reason.json").read_text())["reason"] == "symlink"
    assert (tmp_path / "private" / "secret.jpg").exists()
    assert any(link_name in r.getMessage() and "symlink" in r.getMessage() for r in caplog.records)


# ----------------------------------------------------------------------------------------- class 11
UNDECODABLE = [b"bad\xffname.jpg", b"\xe9t\xe9.jpg", b"x\xc3(y.jpg"]


@pytest.mark.parametrize("raw", UNDECODABLE, ids=["ff", "latin1", "bad-utf8-seq"])
def test_an_undecodable_name_is_published_and_survives_restarts(tmp_path, segmenter, raw):
    put(tmp_path / "up", raw, photo_bytes(3))
    put(tmp_path / "up", "fine.jpg", photo_bytes(4))
    stats = processor(tmp_path, segmenter).run_once()
    assert stats.published == 2 and stats.failed == 0
    assert os.fsencode(raw)[:-4] + b".png" in os.listdir(os.fsencode(tmp_path / "out"))
    for _ in range(2):  # restarts: nothing to do, nothing crashes
        again = processor(tmp_path, segmenter).run_once()
        assert again.published == again.failed == 0


@pytest.mark.parametrize("raw", UNDECODABLE, ids=["ff", "latin1", "bad-utf8-seq"])
def test_an_undecodable_bad_or_routed_photo_is_handled(tmp_path, segmenter, raw):
    from backdrop.serving.review import ReviewQueue

    put(tmp_path / "up", raw, b"not an image")
    put(tmp_path / "up", raw.replace(b".jpg", b"-2.jpg"), photo_bytes(5))
    stats = processor(tmp_path, segmenter, threshold=1.01).run_once()  # the good one goes to review
    assert stats.failed == 1 and stats.routed == 1
    report = [p for p in (tmp_path / "up" / "failed").iterdir() if p.name.endswith(".reason.json")]
    assert len(report) == 1 and json.loads(report[0].read_text())["reason"] == "not_an_image"
    assert len(ReviewQueue(tmp_path / "review").rows()) == 1
    again = processor(tmp_path, segmenter).run_once()
    assert again.published == again.failed == again.routed == 0


# ------------------------------------------------------------------------------------------ class 5
def _fail_one(tmp_path, segmenter):
    flaky = FlakySegmenter(segmenter)
    put(tmp_path / "up", "tee.jpg", photo_bytes(6))
    stats = processor(tmp_path, flaky).run_once()
    assert stats.failed == 1 and files(tmp_path / "up" / "failed") == ["tee.jpg", "tee.jpg.reason.json"]
    flaky.broken = False  # the cause is fixed
    return flaky


def test_retry_failed_moves_back_and_processes_again(tmp_path, segmenter):
    flaky = _fail_one(tmp_path, segmenter)
    proc = processor(tmp_path, flaky)
    assert proc.retry_failed() == 1
    assert files(tmp_path / "up" / "failed") == []
    stats = proc.run_once()
    assert stats.published == 1 and files(tmp_path / "out") == ["tee.png"]


def test_moving_a_failed_photo_back_by_hand_is_a_new_attempt(tmp_path, segmenter):
    flaky = _fail_one(tmp_path, segmenter)
    os.replace(tmp_path / "up" / "failed" / "tee.jpg", tmp_path / "up" / "tee.jpg")  # mtime kept by a move
    stats = processor(tmp_path, flaky).run_once()
    assert stats.published == 1 and files(tmp_path / "out") == ["tee.png"]
    assert not (tmp_path / "up" / "failed" / "tee.jpg.reason.json").exists()


@pytest.mark.parametrize("how", ["moved back", "moved back, other name", "left in failed/"])
def test_the_dag_trigger_announces_a_photo_moved_back(tmp_path, segmenter, how):
    """The Airflow trigger (its `unprocessed` scan) fires for a failed photo moved back by hand, and
    stays quiet while the photo is still in failed/."""
    from backdrop.serving.trigger import unprocessed

    _fail_one(tmp_path, segmenter)
    up = tmp_path / "up"
    if how != "left in failed/":
        os.replace(up / "failed" / "tee.jpg", up / ("tee.jpg" if how == "moved back" else "tee-2.jpg"))
    names = [name for name, _size, _mtime in unprocessed(str(up), settle_s=0.0)]
    assert names == ({"moved back": ["tee.jpg"], "moved back, other name": ["tee-2.jpg"]}.get(how, []))


def test_moved_back_under_another_name_is_a_new_attempt_too(tmp_path, segmenter):
    flaky = _fail_one(tmp_path, segmenter)
    os.replace(tmp_path / "up" / "failed" / "tee.jpg", tmp_path / "up" / "tee-again.jpg")
    stats = processor(tmp_path, flaky).run_once()
    assert stats.published == 1 and files(tmp_path / "out") == ["tee-again.png"]


def test_retry_failed_on_the_command_line(tmp_path, segmenter, monkeypatch):
    from typer.testing import CliRunner

    from backdrop.cli import app
    from tests.serving.conftest import write_project

    _fail_one(tmp_path, segmenter)
    project = write_project(tmp_path / "project", serve={"review_threshold": 0.0},
                            monitoring={"record_predictions": False})
    monkeypatch.setenv("BACKDROP_PROJECT_DIR", str(project))
    result = CliRunner().invoke(app, ["watch", str(tmp_path / "up"), "--out", str(tmp_path / "out"),
                                      "--review-dir", str(tmp_path / "review"), "--model", MODEL, "--size", "64",
                                      "--no-record", "--once", "--retry-failed",
                                      "--params", str(project / "params.yaml")])
    assert result.exit_code == 0, result.output
    assert files(tmp_path / "out") == ["tee.png"], result.output
    help_text = CliRunner().invoke(app, ["watch", "--help"]).output
    assert "--retry-failed" in help_text


# ---------------------------------------------------------------------------------------- invariant
def test_every_upload_ends_as_one_output_or_one_failure(tmp_path, segmenter):
    up = tmp_path / "up"
    secret = tmp_path / "private"
    secret.mkdir()
    (secret / "secret.jpg").write_bytes(photo_bytes(9))
    good = {"a.jpg": photo_bytes(1), "shirt.jpg": photo_bytes(2), "shirt.png": photo_bytes(3, "PNG")}
    bad = {"trunc.jpg": photo_bytes(4)[:300], "text.png": b"hello\n", "zero.jpg": b""}
    for name, data in {**good, **bad}.items():
        put(up, name, data)
    put(up, b"odd\xffname.jpg", photo_bytes(5))
    os.symlink(secret / "secret.jpg", up / "link.jpg")
    n_inputs = len(good) + len(bad) + 2
    before = set(tmp_path.rglob("*"))
    stats = processor(tmp_path, segmenter).run_once()
    outputs = files(tmp_path / "out")
    failed = [n for n in files(up / "failed") if not n.endswith(".reason.json")]
    assert len(outputs) + len(failed) == n_inputs
    assert stats.published == len(outputs) == 4 and stats.failed == len(failed) == 4
    assert len(set(outputs)) == len(outputs)
    new = set(tmp_path.rglob("*")) - before
    allowed = (tmp_path / "out", up / "failed", up / ".backdrop")
    assert all(any(p == a or a in p.parents for a in allowed) for p in new), sorted(new)
    assert processor(tmp_path, segmenter).run_once().as_dict() == dict.fromkeys(stats.as_dict(), 0)


@pytest.mark.parametrize("error", [PermissionError(13, "Permission denied"), OSError(5, "Input/output error"),
                                   IsADirectoryError(21, "Is a directory")])
def test_run_once_returns_when_a_file_stays_unreadable(tmp_path, segmenter, monkeypatch, error):
    """A file that cannot be read is reported and left in place; the pass still ends (the DAG task
    returns and frees the folder lock) and the other photos are published."""
    proc = processor(tmp_path, segmenter)
    up = tmp_path / "up"
    up.mkdir(parents=True, exist_ok=True)
    (up / "good.jpg").write_bytes(photo_bytes(1))
    (up / "locked.jpg").write_bytes(photo_bytes(2))
    real_read = Path.read_bytes

    def read_bytes(self):
        if self.name == "locked.jpg":
            raise error
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    stats = proc.run_once()
    assert stats.published == 1 and stats.unreadable == 1
    assert (up / "locked.jpg").exists()  # nothing lost


@pytest.mark.parametrize("linked", ["failed", ".backdrop", "both"])
def test_the_watchers_own_folders_are_never_symlinks(tmp_path, segmenter, linked):
    """`failed/` or `.backdrop/` pointing elsewhere would move photos and the ledger out of the folder:
    the watcher refuses to start, names the link, and writes nothing outside."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    up = tmp_path / "up"
    put(up, "tee.jpg", photo_bytes(3))
    for name in (["failed", ".backdrop"] if linked == "both" else [linked]):
        (up / name).symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(RuntimeError, match="symbolic link"):
        processor(tmp_path, segmenter).run_once()
    assert list(elsewhere.iterdir()) == []
    assert (up / "tee.jpg").is_file()  # the photo stays where it was uploaded
