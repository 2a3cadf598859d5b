"""`backdrop watch DIR`: cut out every photo dropped into an upload folder, exactly once.

State lives next to the uploads, in `DIR/.backdrop/`:

* `ledger.sqlite` — one row per photo *content* (sha256): status `processing | retry | done | failed`,
  attempts, the output path, the error. A file whose (name, size, mtime) is already settled in the
  ledger is skipped without being read again; a renamed copy of a processed photo is skipped by its
  hash. The Airflow trigger (`trigger.py`) reads the same ledger to tell new uploads from old ones.
* `lock` — an flock held by the one process working on the folder (a watcher or a DAG run); the OS
  releases it when that process dies, so a killed watcher never blocks its successor.

Exactly once, also across `kill -9`: the output is written to a temp file and renamed into place
(atomic), and it carries the source's sha256 (PNG text chunk / JPEG comment). The ledger row says
`processing` with the chosen output path *before* the rename and `done` after. A restart that finds
`processing` checks whether the output already exists with that sha256 — then the photo was
published and is only marked done; otherwise it is processed again (nothing was published).

Failures (unreadable photo, model error) are retried `serve.watch_retries` times with a growing delay
(a half-copied file often reads as truncated); after that the photo moves to `DIR/failed/` with a
`<name>.reason.json` next to it. Retrying is explicit: `backdrop watch --retry-failed`
(`UploadProcessor.retry_failed`) moves every failed photo back and clears its ledger state; moving a
file back from `failed/` by hand works too — a `failed` photo that shows up in the upload folder again
while its copy in `failed/` is gone is a new attempt (its name, size and mtime are unchanged by a move,
so they cannot tell; where the watcher put it can).

Symbolic links in the upload folder are never followed (they could publish a private file from
anywhere): the link itself is moved to `failed/` with reason `symlink` and a warning is logged. Anything
that is not a regular file directly inside the folder is refused the same way.

Output names: `<stem>.png` (`.jpg` for `white`); when another photo in the folder shares the stem, or
another photo already holds that output name in the ledger or on disk, the name keeps the extension
(`shirt.jpg.png`, `shirt.png.png`), then `<stem>-<sha8>.png` (`backdrop.serving.names`). No output is
ever written over another photo's.

File names that are not valid UTF-8 work: the ledger stores them as their bytes (a BLOB) and logs and
reason files show a backslash-escaped (`\\xNN`) form.

Low-confidence cut-outs go to the review queue instead of the output folder (`review.py`); a
`serve.audit_share` of the published ones are queued too, as audit items. Every
cut-out is written to the prediction log (monitoring) when `monitoring.record_predictions` is on.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import sqlite3
import threading
import time
from collections import Counter
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from backdrop.config import Params
from backdrop.io import BadImageError, atomic_path
from backdrop.serving.names import display, is_decodable

log = logging.getLogger(__name__)

STATE_DIR = ".backdrop"
FAILED_DIR = "failed"
TEMP_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial", ".swp")
SHA_KEY = "backdrop-source-sha256"
EXT = {"rgba": ".png", "mask": ".png", "white": ".jpg"}
RESCAN_S = 30.0  # safety-net scan (missed inotify events); not a poll loop doing work


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def is_candidate(path: Path) -> bool:
    name = path.name
    return not name.startswith(".") and not name.endswith(TEMP_SUFFIXES) and path.is_file() and not path.is_symlink()


def _db_name(name: str) -> str | bytes:
    """A file name as the ledger stores it: text, or its raw bytes when it is not valid UTF-8."""
    return name if is_decodable(name) else os.fsencode(name)


def _fs_name(value: str | bytes) -> str:
    """A ledger name back as a file-system `str` (surrogate escapes for undecodable bytes)."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


# ------------------------------------------------------------------------------------------- ledger


class Ledger:
    SCHEMA = """
    CREATE TABLE IF NOT EXISTS files (
        sha256 TEXT PRIMARY KEY, name TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
        status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, output TEXT, routed INTEGER DEFAULT 0,
        confidence REAL, error TEXT, logged INTEGER NOT NULL DEFAULT 0, publications INTEGER NOT NULL DEFAULT 0,
        first_seen TEXT NOT NULL, updated_at TEXT NOT NULL);
    CREATE INDEX IF NOT EXISTS files_stat ON files (name, size, mtime_ns);
    CREATE TABLE IF NOT EXISTS aliases (
        name TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL,
        PRIMARY KEY (name, size, mtime_ns));
    """

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(self.SCHEMA)
        self.db.row_factory = sqlite3.Row

    def close(self) -> None:
        self.db.close()

    def known_stat(self, name: str, size: int, mtime_ns: int) -> sqlite3.Row | None:
        """The settled row of a file seen before with exactly this name, size and mtime."""
        return self.db.execute(
            "SELECT f.* FROM aliases a JOIN files f ON f.sha256 = a.sha256 "
            "WHERE a.name=? AND a.size=? AND a.mtime_ns=?", (_db_name(name), size, mtime_ns)).fetchone()

    def get(self, sha: str) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM files WHERE sha256=?", (sha,)).fetchone()

    def remember(self, name: str, size: int, mtime_ns: int, sha: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO aliases VALUES (?,?,?,?)", (_db_name(name), size, mtime_ns, sha))

    def start(self, sha: str, name: str, size: int, mtime_ns: int, output: str) -> int:
        now = utcnow()
        self.db.execute(
            "INSERT INTO files (sha256, name, size, mtime_ns, status, attempts, output, first_seen, updated_at) "
            "VALUES (?,?,?,?, 'processing', 1, ?, ?, ?) ON CONFLICT(sha256) DO UPDATE SET "
            "status='processing', attempts=attempts+1, output=excluded.output, name=excluded.name, "
            "size=excluded.size, mtime_ns=excluded.mtime_ns, updated_at=excluded.updated_at",
            (sha, _db_name(name), size, mtime_ns, _db_name(output), now, now))
        return int(self.get(sha)["attempts"])

    def set(self, sha: str, **values) -> None:
        values["updated_at"] = utcnow()
        values.update({k: _db_name(values[k]) for k in ("name", "output") if isinstance(values.get(k), str)})
        cols = ", ".join(f"{k}=?" for k in values)
        self.db.execute(f"UPDATE files SET {cols} WHERE sha256=?", (*values.values(), sha))

    def done(self, sha: str, output: str, routed: bool, conf: float | None) -> None:
        self.db.execute("UPDATE files SET status='done', output=?, routed=?, confidence=?, error=NULL, "
                        "publications=publications+1, updated_at=? WHERE sha256=?",
                        (_db_name(output) if isinstance(output, str) else output, int(routed), conf, utcnow(), sha))

    def claimed(self, output: str, sha: str) -> bool:
        """Whether another photo (not failed) has `output` as its output path."""
        return self.db.execute("SELECT 1 FROM files WHERE output=? AND sha256<>? AND status<>'failed' LIMIT 1",
                               (_db_name(output), sha)).fetchone() is not None

    def reset(self, sha: str) -> None:
        """Forget a failure: the photo is a new attempt with a fresh retry budget."""
        self.db.execute("UPDATE files SET status='retry', attempts=0, error=NULL, output=NULL, updated_at=? "
                        "WHERE sha256=?", (utcnow(), sha))

    def rows(self, status: str | None = None) -> list[sqlite3.Row]:
        if status:
            return self.db.execute("SELECT * FROM files WHERE status=? ORDER BY first_seen", (status,)).fetchall()
        return self.db.execute("SELECT * FROM files ORDER BY first_seen").fetchall()


def refuse_links(*paths: Path) -> None:
    """The watcher's own folders must be real folders: a `failed/` or `.backdrop/` that is a symlink
    would send photos, reasons and the ledger outside the upload folder."""
    for path in paths:
        if path.is_symlink():
            raise RuntimeError(f"{path} is a symbolic link (to {os.readlink(path)}); the watcher's own folders "
                               "must be real folders inside the upload folder: remove the link")


@contextmanager
def folder_lock(state: Path, wait_s: float | None):
    """Exclusive lock on an upload folder; wait_s=None fails at once when another process holds it."""
    from filelock import FileLock, Timeout

    refuse_links(state)
    state.mkdir(parents=True, exist_ok=True)
    lock = FileLock(state / "lock", timeout=0 if wait_s is None else wait_s)
    try:
        lock.acquire()
    except Timeout:
        raise RuntimeError(f"{state.parent}: another backdrop process is working on this folder "
                           f"(lock {state / 'lock'})") from None
    try:
        yield
    finally:
        lock.release()


def embedded_sha(path: Path) -> str | None:
    """The source sha256 an output carries, or None (missing, unreadable, or not ours)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.info.get(SHA_KEY) or _from_comment(img.info.get("comment"))
    except Exception:
        return None


def _from_comment(comment) -> str | None:
    if isinstance(comment, bytes):
        comment = comment.decode("ascii", "ignore")
    if isinstance(comment, str) and comment.startswith(SHA_KEY + "="):
        return comment.split("=", 1)[1]
    return None


def encode_tagged(image, fmt: str, sha: str) -> bytes:
    """Output bytes carrying the source sha256 (PNG tEXt chunk, JPEG comment)."""
    from PIL.PngImagePlugin import PngInfo

    buf = io.BytesIO()
    if fmt == "white":
        image.save(buf, format="JPEG", quality=92, comment=f"{SHA_KEY}={sha}".encode())
    else:
        info = PngInfo()
        info.add_text(SHA_KEY, sha)
        image.save(buf, format="PNG", pnginfo=info, compress_level=1)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------ watcher


@dataclass
class Stats:
    published: int = 0
    routed: int = 0
    failed: int = 0
    retried: int = 0
    skipped: int = 0
    recovered: int = 0
    unreadable: int = 0  # left in place: no permission or an I/O error (reported, retried later)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class _Pending:
    path: Path
    size: int
    mtime_ns: int
    sha: str
    data: bytes
    shared_stem: bool = False  # another file in the folder has the same stem


@dataclass
class UploadProcessor:
    """Processes an upload folder; `run_once` is one pass (the DAG task), `watch` loops on file events.

    `params` (keyword-only) gives the model's pass settings and `serve.precision`, the output options
    (`serve:`) and the prediction log (`monitoring:`); `from_params` fills the rest from it too.
    """

    upload_dir: Path
    out_dir: Path
    review_dir: Path
    model: str = "champion"
    fmt: str = "rgba"
    size: int | None = None
    batch_size: int = 4
    retries: int = 2
    settle_s: float = 0.5
    review_threshold: float = 0.9
    audit_share: float = 0.0  # published cut-outs also queued as audit items (serve.audit_share)
    max_pixels: int = 40_000_000
    record: bool | None = None  # None: monitoring.record_predictions
    retry_delay_s: float = 1.0
    stats: Stats = field(default_factory=Stats)
    params: Params = field(kw_only=True, repr=False)

    def __post_init__(self) -> None:
        self.upload_dir = Path(self.upload_dir).resolve()
        self.out_dir = Path(self.out_dir).resolve()
        self.review_dir = Path(self.review_dir).resolve()
        self.state = self.upload_dir / STATE_DIR
        self.failed_dir = self.upload_dir / FAILED_DIR
        self._segmenter = None
        self._recorder = None
        self._not_before: dict[str, float] = {}
        self._unreadable: dict[str, float] = {}  # name → when to try again (not waited for by run_once)
        self._wake = threading.Event()
        self.ledger: Ledger | None = None

    # -- model and log, loaded lazily once
    @property
    def segmenter(self):
        if self._segmenter is None:
            from backdrop.serving.segmenter import load_segmenter

            self._segmenter = load_segmenter(self.model, "onnx", params=self.params, size=self.size)
        return self._segmenter

    def _recording(self) -> bool:
        return self.params.monitoring.record_predictions if self.record is None else self.record

    def _record(self, path: Path, photo, prob) -> bool:
        if not self._recording():
            return False
        if self._recorder is None:
            from backdrop.data.predlog import PredictionRecorder

            self._recorder = PredictionRecorder(self.params, self.segmenter.source)
        self._recorder.record(path, photo, prob)
        return True

    # -- scanning
    def _candidates(self) -> list[Path]:
        """Regular files directly in the upload folder; symlinks and the like are refused (`_reject`)."""
        try:
            entries = sorted(os.scandir(self.upload_dir), key=lambda e: e.name)
        except FileNotFoundError:
            return []
        root = os.path.realpath(self.upload_dir)
        files = []
        for entry in entries:
            name = entry.name
            if name.startswith(".") or name.endswith(TEMP_SUFFIXES) or name == FAILED_DIR:
                continue
            path = Path(entry.path)
            try:
                if entry.is_symlink():
                    self._reject(path, "symlink", "symbolic link: not followed (it may point anywhere)")
                elif entry.is_dir(follow_symlinks=False):
                    continue  # sub-folders are not watched
                elif not entry.is_file(follow_symlinks=False):
                    self._reject(path, "not_a_file", "not a regular file (device, FIFO or socket)")
                elif os.path.dirname(os.path.realpath(path)) != root:
                    self._reject(path, "outside", "resolves outside the upload folder")
                else:
                    files.append(path)
            except OSError as exc:  # vanished meanwhile, or no permission to move it
                log.warning("%s: cannot check or refuse (%s)", display(path), exc)
        return files

    def _failed_dest(self, name: str, tag: str) -> Path:
        dest = self.failed_dir / name
        if dest.exists() or dest.is_symlink():  # an earlier failure of another file with this name
            dest = self.failed_dir / f"{Path(name).stem}-{tag}{Path(name).suffix}"
        return dest

    def _reject(self, path: Path, reason: str, message: str) -> None:
        """Move something that must not be read (a symlink…) to failed/ unread, with its reason."""
        from backdrop.io import write_json

        refuse_links(self.failed_dir)
        self.failed_dir.mkdir(parents=True, exist_ok=True)
        dest = self._failed_dest(path.name, hashlib.sha256(os.fsencode(path.name)).hexdigest()[:8])
        os.replace(path, dest)  # a symlink is moved as a link: its target is never touched
        write_json(dest.with_name(dest.name + ".reason.json"),
                   {"name": display(path.name), "reason": reason, "message": message, "attempts": 0,
                    "failed_at": utcnow()})
        self.stats.failed += 1  # symlinks and other refused entries count as failures (failed/ + reason)
        log.warning("%s: refused (%s): %s; moved to %s", display(path.name), reason, message, display(dest))

    def _moved_back(self, row: sqlite3.Row) -> bool:
        """A `failed` photo in the upload folder again, its copy in failed/ gone: a new attempt."""
        out = row["output"]
        if row["status"] != "failed" or not out:
            return False
        out = Path(_fs_name(out))
        return out.parent == self.failed_dir and not out.exists() and not out.is_symlink()

    def _new_attempt(self, row: sqlite3.Row) -> None:
        name = Path(_fs_name(row["output"])).name
        with suppress(FileNotFoundError):
            (self.failed_dir / f"{name}.reason.json").unlink()
        self.ledger.reset(row["sha256"])
        log.info("%s: back from %s/: a new attempt", display(_fs_name(row["name"])), FAILED_DIR)

    def retry_failed(self, lock_wait_s: float = 600.0) -> int:
        """Move every photo in failed/ back into the upload folder, clearing its ledger state (and its
        reason file), so the next pass processes it as a new attempt. A name already taken in the upload
        folder is left in failed/ (logged). Refused symlinks are not moved back. Returns how many moved."""
        moved = 0
        with folder_lock(self.state, lock_wait_s):
            self.ledger = Ledger(self.state / "ledger.sqlite")
            try:
                entries = sorted(os.scandir(self.failed_dir), key=lambda e: e.name) if self.failed_dir.is_dir() \
                    else []
                for entry in entries:
                    if entry.name.endswith(".reason.json") or entry.is_symlink() or not entry.is_file():
                        continue
                    src = Path(entry.path)
                    row = self.ledger.db.execute("SELECT * FROM files WHERE output=?", (_db_name(str(src)),)).fetchone()
                    name = _fs_name(row["name"]) if row is not None else src.name
                    dest = self.upload_dir / name
                    if dest.exists() or dest.is_symlink():
                        log.warning("%s: %s is taken in the upload folder; left in %s/", display(src.name),
                                    display(name), FAILED_DIR)
                        continue
                    os.replace(src, dest)
                    with suppress(FileNotFoundError):
                        (self.failed_dir / f"{src.name}.reason.json").unlink()
                    if row is not None:
                        self.ledger.reset(row["sha256"])
                    moved += 1
                    log.info("%s: moved back from %s/ for a new attempt", display(name), FAILED_DIR)
            finally:
                self.ledger.close()
                self.ledger = None
        return moved

    def _settled(self, path: Path) -> tuple[int, int] | None:
        """(size, mtime_ns) once the file has not changed for settle_s, else None (look again later)."""
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        age = time.time() - st.st_mtime
        if age < self.settle_s:
            self._not_before[path.name] = time.monotonic() + (self.settle_s - age)
            return None
        return st.st_size, st.st_mtime_ns

    def _recover(self) -> None:
        """Rows left `processing` by a killed process: published already, or to be redone."""
        from backdrop.serving.review import AUDIT, ReviewQueue

        # routed photos only: an audit row belongs to a published photo, whose output tells
        queued = {r["sha256"] for r in ReviewQueue(self.review_dir).rows() if r.get("reason") != AUDIT}
        for row in self.ledger.rows("processing"):
            out = Path(_fs_name(row["output"])) if row["output"] else None
            if row["sha256"] in queued:
                self.ledger.done(row["sha256"], row["output"] or "", True, row["confidence"])
                self.stats.recovered += 1
            elif out is not None and out.exists() and embedded_sha(out) == row["sha256"]:
                self.ledger.done(row["sha256"], row["output"], False, row["confidence"])
                self.stats.recovered += 1
            else:
                self.ledger.set(row["sha256"], status="retry", error="interrupted (process stopped)")
        # done but not yet in the prediction log (killed between the two): log now
        for row in self.ledger.rows("done") if self._recording() else []:
            if not row["logged"] and row["output"]:
                src = self.upload_dir / _fs_name(row["name"])
                if src.is_file() and not src.is_symlink():
                    self._log_row(row["sha256"], src)

    def _log_row(self, sha: str, src: Path) -> None:
        try:
            from backdrop.serving.preprocess import photo_from_path

            photo = photo_from_path(src, self.max_pixels)
            if self._record(src, photo, self.segmenter.probabilities(photo)):
                self.ledger.set(sha, logged=1)
        except Exception:
            log.exception("%s: prediction log write failed", display(src))

    def _due(self, limit: int, seen: set[str]) -> list[_Pending]:
        """Up to `limit` settled, unprocessed files whose retry delay has passed.

        `seen` holds the names and hashes handled earlier in this pass, so a pass ends.
        """
        due: list[_Pending] = []
        now = time.monotonic()
        candidates = self._candidates()
        names = {p.name for p in candidates}
        stems = Counter(p.stem.casefold() for p in candidates)
        for name in [n for n in self._not_before if n not in names]:
            del self._not_before[name]  # moved away or deleted meanwhile
        for name in [n for n in self._unreadable if n not in names]:
            del self._unreadable[name]
        for path in candidates:
            if len(due) >= limit:
                break
            if path.name in seen:  # handled in this pass already (a retry waits for the next pass)
                continue
            if self._not_before.get(path.name, 0) > now or self._unreadable.get(path.name, 0) > now:
                continue
            self._not_before.pop(path.name, None)
            settled = self._settled(path)
            if settled is None:
                continue
            size, mtime_ns = settled
            row = self.ledger.known_stat(path.name, size, mtime_ns)
            if row is not None and row["status"] in ("done", "failed") and not self._moved_back(row):
                continue
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            except OSError as exc:  # no permission, I/O error: look again later, never stop the watcher
                log.warning("%s: cannot read (%s); left in place, will look again", display(path.name), exc)
                if path.name not in self._unreadable:
                    self.stats.unreadable += 1
                # not in _not_before: `run_once` must not wait for a file that may never become readable
                self._unreadable[path.name] = now + max(self.retry_delay_s, 1.0)
                continue
            sha = hashlib.sha256(data).hexdigest()
            seen.add(path.name)
            self.ledger.remember(path.name, size, mtime_ns, sha)
            if sha in seen:
                self.stats.skipped += 1  # a copy of a photo handled in this pass
                continue
            seen.add(sha)
            row = self.ledger.get(sha)
            if row is not None and self._moved_back(row):
                self._new_attempt(row)
            elif row is not None and row["status"] in ("done", "failed"):
                self.stats.skipped += 1  # same content under another name: already handled
                log.info("%s: same content as %s (already %s)", display(path.name), display(_fs_name(row["name"])),
                         row["status"])
                continue
            due.append(_Pending(path, size, mtime_ns, sha, data, stems[path.stem.casefold()] > 1))
        return due

    # -- processing
    def _dest(self, item: _Pending) -> Path:
        """A unique output path: `<stem><ext>`, `<name><ext>` when the stem is shared or the name is
        another photo's (ledger or disk), then `<stem>-<sha8><ext>` (see the module doc)."""
        ext, path = EXT[self.fmt], item.path
        names = [f"{path.name}{ext}", f"{path.stem}-{item.sha[:8]}{ext}"]
        if not item.shared_stem:
            names.insert(0, f"{path.stem}{ext}")
        for name in names:
            dest = self.out_dir / name
            if self.ledger.claimed(str(dest), item.sha):
                continue
            if dest.exists() and embedded_sha(dest) != item.sha:
                continue
            return dest
        return self.out_dir / f"{path.stem}-{item.sha}{ext}"

    def _fail(self, item: _Pending, exc: Exception, attempts: int) -> None:
        reason = getattr(exc, "reason", type(exc).__name__)
        if attempts <= self.retries:
            delay = self.retry_delay_s * attempts
            self.ledger.set(item.sha, status="retry", error=display(f"{reason}: {exc}"))
            self._not_before[item.path.name] = time.monotonic() + delay
            self.stats.retried += 1
            log.warning("%s: attempt %d failed (%s); retrying in %.1fs", display(item.path.name), attempts,
                        display(str(exc)), delay)
            return
        refuse_links(self.failed_dir)
        self.failed_dir.mkdir(parents=True, exist_ok=True)
        dest = self._failed_dest(item.path.name, item.sha[:8])
        report = {"name": display(item.path.name), "sha256": item.sha, "reason": reason,
                  "message": display(str(exc)), "attempts": attempts, "failed_at": utcnow()}
        from backdrop.io import write_json

        write_json(dest.with_name(dest.name + ".reason.json"), report)
        with suppress(FileNotFoundError):
            os.replace(item.path, dest)
        self.ledger.set(item.sha, status="failed", error=display(f"{reason}: {exc}"), output=str(dest))
        self.stats.failed += 1
        log.error("%s: failed after %d attempt(s) (%s); moved to %s", display(item.path.name), attempts,
                  display(str(exc)), display(dest))

    def _process_batch(self, batch: list[_Pending]) -> None:
        from backdrop.serving.images import decode
        from backdrop.serving.outputs import OutputOptions, compose, finish
        from backdrop.serving.review import AUDIT, ReviewQueue, confidence, is_audit

        options = OutputOptions.from_params(self.params.serve)

        seg = self.segmenter
        ready = []
        for item in batch:
            attempts = self.ledger.start(item.sha, item.path.name, item.size, item.mtime_ns, str(self._dest(item)))
            try:
                ready.append((item, attempts, decode(item.data, self.max_pixels)))
            except BadImageError as exc:
                self._fail(item, exc, attempts)
        if not ready:
            return
        try:
            preds = seg.predict_batch([photo for _, _, photo in ready])
        except Exception as exc:  # model failure: every photo of the batch is retried
            for item, attempts, _ in ready:
                self._fail(item, exc, attempts)
            return
        queue = ReviewQueue(self.review_dir)
        for (item, attempts, photo), pred in zip(ready, preds, strict=True):
            try:
                conf = confidence(pred.small, pred.disagreement)
                pred.prob, shown = finish(photo, pred.prob, self.fmt, options)  # the API's and remove's edges
                body = encode_tagged(compose(shown, pred.prob, self.fmt, options), self.fmt, item.sha)
                if conf.score < self.review_threshold:
                    out = queue.add(display(item.path.name), item.sha, item.data, body, EXT[self.fmt], conf,
                                    seg.source)
                    routed = True
                    self.stats.routed += 1
                else:
                    out = Path(_fs_name(self.ledger.get(item.sha)["output"]))
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with atomic_path(out) as tmp:
                        tmp.write_bytes(body)
                    routed = False
                    self.stats.published += 1
                    if is_audit(item.sha, self.audit_share):  # published, and also checked by a person
                        queue.add(display(item.path.name), item.sha, item.data, body, EXT[self.fmt], conf,
                                  seg.source, reason=AUDIT)
                        log.info("%s: published and queued as an audit item", display(item.path.name))
                self.ledger.done(item.sha, str(out), routed, conf.score)
            except Exception as exc:
                self._fail(item, exc, attempts)
                continue
            try:
                if self._record(item.path, photo, pred.prob):
                    self.ledger.set(item.sha, logged=1)
            except Exception:
                log.exception("%s: prediction log write failed (the cut-out is published)", display(item.path.name))

    def _pass(self) -> int:
        """Process every due file, a batch at a time (only one batch of photos in memory)."""
        seen: set[str] = set()
        n = 0
        while due := self._due(self.batch_size, seen):
            self._process_batch(due)
            n += len(due)
        return n

    def wake_up(self) -> None:
        """Make `watch` look at its stop event now instead of after its next wait (signal-safe)."""
        self._wake.set()

    def _next_wake(self) -> float:
        now = time.monotonic()
        pending = [t - now for t in self._not_before.values() if t > now]
        return max(0.05, min([RESCAN_S, *pending]))

    def _open(self) -> None:
        refuse_links(self.failed_dir)  # checked once before any photo is moved there
        self.upload_dir.mkdir(parents=True, exist_ok=True)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger(self.state / "ledger.sqlite")
        self._recover()

    def run_once(self, lock_wait_s: float = 600.0) -> Stats:
        """Process everything there now (waiting for files still settling and for retries); then return."""
        with folder_lock(self.state, lock_wait_s):
            self._open()
            try:
                while True:
                    self._pass()
                    if not self._not_before:  # no file settling, no retry pending
                        break
                    time.sleep(max(0.05, min(self._not_before.values()) - time.monotonic()))
            finally:
                self.ledger.close()
        return self.stats

    def watch(self, stop: threading.Event | None = None) -> None:
        """Process what is there, then every new file as it arrives (inotify via watchdog)."""
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        stop = stop or threading.Event()
        wake = self._wake

        class _Handler(FileSystemEventHandler):
            def on_any_event(self, event):  # created, modified, moved into, closed after writing
                if not event.is_directory:
                    wake.set()

        with folder_lock(self.state, None):
            self._open()
            self.segmenter  # noqa: B018  (load the model before the first photo arrives)
            observer = Observer()
            observer.schedule(_Handler(), str(self.upload_dir), recursive=False)
            observer.start()
            log.info("watching %s → %s (review: %s, model %s)", self.upload_dir, self.out_dir, self.review_dir,
                     self.segmenter.source)
            try:
                while not stop.is_set():
                    wake.clear()
                    if self._pass():
                        continue  # more may have arrived meanwhile
                    wake.wait(self._next_wake())
            finally:
                observer.stop()
                observer.join(timeout=5)
                self.ledger.close()


def from_params(params: Params, upload_dir: Path | None = None, out_dir: Path | None = None,
                review_dir: Path | None = None, model: str | None = None, fmt: str | None = None,
                size: int | None = None, record: bool | None = None) -> UploadProcessor:
    """An UploadProcessor with the `serve:` settings of `params` for everything not given."""
    from backdrop.config import resolve

    sp = params.serve
    return UploadProcessor(
        upload_dir=Path(upload_dir) if upload_dir else resolve(sp.upload_dir),
        out_dir=Path(out_dir) if out_dir else resolve(sp.out_dir),
        review_dir=Path(review_dir) if review_dir else resolve(sp.review_dir),
        model=model or sp.model, fmt=fmt or sp.format, size=size, batch_size=sp.batch_size,
        retries=sp.watch_retries, settle_s=sp.watch_settle_s, review_threshold=sp.review_threshold,
        audit_share=sp.audit_share, max_pixels=sp.max_pixels, record=record, params=params)


def summary(upload_dir: Path) -> dict:
    """Ledger counts per status (for the CLI and the DAG's return value)."""
    path = Path(upload_dir) / STATE_DIR / "ledger.sqlite"
    if not path.exists():
        return {}
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT status, count(*) FROM files GROUP BY status").fetchall())


