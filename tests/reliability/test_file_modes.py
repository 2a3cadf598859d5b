"""Class 16: outputs get the mode a plain open() would give (0666 & ~umask), not mkstemp's 0600.

Cut-outs, manifests and reports are read by other users and services (a web server, a shop's sync job);
`io.atomic_path` must not make them private to the writer. Directories it creates get 0777 & ~umask.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from backdrop.io import atomic_path, write_csv, write_json

UMASKS = [0o022, 0o002, 0o077, 0o027]


@contextmanager
def umask(value: int) -> Iterator[None]:
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", UMASKS, ids=[f"umask{m:03o}" for m in UMASKS])
def test_atomic_path_files_get_the_plain_open_mode(tmp_path, mask):
    with umask(mask):
        with atomic_path(tmp_path / "out.png") as tmp:
            tmp.write_bytes(b"x")
        with open(tmp_path / "plain.png", "wb") as fh:  # what a plain open() gives, for comparison
            fh.write(b"x")
    assert _mode(tmp_path / "out.png") == 0o666 & ~mask == _mode(tmp_path / "plain.png")


@pytest.mark.parametrize("mask", UMASKS, ids=[f"umask{m:03o}" for m in UMASKS])
def test_atomic_path_directories_get_the_plain_mkdir_mode(tmp_path, mask):
    with umask(mask), atomic_path(tmp_path / "a" / "b" / "out.json") as tmp:
        tmp.write_text("{}")
    for folder in (tmp_path / "a", tmp_path / "a" / "b"):
        assert _mode(folder) == 0o777 & ~mask, folder
    assert _mode(tmp_path / "a" / "b" / "out.json") == 0o666 & ~mask


@pytest.mark.parametrize("mask", UMASKS, ids=[f"umask{m:03o}" for m in UMASKS])
def test_helpers_built_on_atomic_path_share_the_mode(tmp_path, mask):
    with umask(mask):
        write_json(tmp_path / "r.json", {"a": 1})
        write_csv(tmp_path / "m.csv", [{"a": 1}], ["a"])
    assert _mode(tmp_path / "r.json") == 0o666 & ~mask
    assert _mode(tmp_path / "m.csv") == 0o666 & ~mask


@pytest.mark.parametrize("mask", UMASKS, ids=[f"umask{m:03o}" for m in UMASKS])
def test_replacing_an_old_private_file_heals_its_mode(tmp_path, mask):
    """A file an older version wrote 0600 gets the umask's mode once it is written again."""
    dest = tmp_path / "old.png"
    dest.write_bytes(b"old")
    dest.chmod(0o600)
    with umask(mask), atomic_path(dest) as tmp:
        tmp.write_bytes(b"new")
    assert dest.read_bytes() == b"new" and _mode(dest) == 0o666 & ~mask


def test_a_failed_block_leaves_neither_temp_file_nor_destination(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "out.png") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_the_temp_file_keeps_the_destination_suffix_beside_it(tmp_path):
    """Writers such as PIL pick the format from the suffix; the rename must stay on one filesystem."""
    with atomic_path(tmp_path / "cut.webp") as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".webp" and tmp.name.startswith(".cut.webp.")
        assert tmp.exists()  # created (empty) already, as mkstemp did: nobody else can take the name
        tmp.write_bytes(b"x")
