"""File names in serving: output names that never collide, safe display, client names made safe.

Output naming (`backdrop remove`, the watcher): a photo `x.jpg` gives `x.png` (`x.jpg` for the
`white` format). When two photos of one output folder share a stem (`shirt.jpg` + `shirt.png`), *both*
keep their extension in the name: `shirt.jpg.png` and `shirt.png.png` — so which photo a cut-out came
from is visible, and the names do not depend on which photo came first. `backdrop remove DIR` mirrors
sub-folders (`DIR/a/x.jpg` → `OUT/a/x.png`). If a name is still taken (by a photo literally named
`shirt.jpg.png`, say), `-2`, `-3`, … is added before the extension. Within one run no output is ever
written over another.

Names are bytes on POSIX: one that is not valid UTF-8 arrives in Python as a `str` with surrogate
escapes (`os.fsdecode`). Such a string works as a path but cannot be written to SQLite, JSON or a
UTF-8 log; `display` gives a printable form (`bad\\xffname.png`) for messages.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from pathlib import PurePath

MAX_NAME_BYTES = 120  # client-supplied names are cut to this many UTF-8 bytes (the extension is kept)
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]")


def display(name: str | os.PathLike | bytes) -> str:
    """A printable, UTF-8-encodable form of a file name or path (undecodable bytes as `\\xNN`)."""
    raw = name if isinstance(name, bytes) else os.fsencode(name)
    return raw.decode("utf-8", "backslashreplace")


def is_decodable(name: str) -> bool:
    """Whether `name` (from the file system) is valid UTF-8 text, i.e. has no surrogate escapes."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def sanitize_filename(name: str | None, default: str = "upload") -> str:
    """A client-supplied file name made safe to use as the last part of a path.

    Only the base name is kept (no folders, no `..`), control characters (NUL included) and characters
    that are unsafe on common file systems are replaced by `_`, undecodable bytes are escaped, and the
    result is cut to `MAX_NAME_BYTES` UTF-8 bytes keeping its extension. Empty or dot-only → `default`.
    """
    text = display(name) if name else ""
    text = unicodedata.normalize("NFC", text.replace("\\", "/").rsplit("/", 1)[-1])
    text = _UNSAFE.sub("_", text).strip().lstrip(".")
    if not text.strip("._ "):
        return default
    stem, dot, ext = text.rpartition(".")
    if not dot or len(ext.encode()) > 16:
        stem, ext = text, ""
    ext = f".{ext}" if ext else ""
    budget = MAX_NAME_BYTES - len(ext.encode())
    stem = stem.encode()[:budget].decode("utf-8", "ignore") or default
    return stem + ext


def plan_outputs(rel_paths: Iterable[PurePath], ext: str) -> list[PurePath]:
    """Unique output paths (relative to the output folder) for input paths relative to their roots.

    `a/x.jpg` → `a/x.png`; stems shared within one folder keep their extension (`x.jpg.png`,
    `x.png.png`); a name still taken gets `-2`, `-3`…. Case-insensitive, so the names stay distinct on
    macOS/Windows file systems too. Deterministic for a given list of inputs.
    """
    rel_paths = list(rel_paths)
    stems = Counter((str(p.parent), p.stem.casefold()) for p in rel_paths)
    taken: set[str] = set()
    out: list[PurePath] = []
    for p in rel_paths:
        base = p.name if stems[(str(p.parent), p.stem.casefold())] > 1 else p.stem
        candidate, n = p.parent / f"{base}{ext}", 1
        while str(candidate).casefold() in taken:
            n += 1
            candidate = p.parent / f"{base}-{n}{ext}"
        taken.add(str(candidate).casefold())
        out.append(candidate)
    return out
