"""The prediction log: every production cut-out, its corrections, metric time series and alert state.

SQLAlchemy models on one database: SQLite by default (`monitoring.db_url`, relative paths resolve
against the project root), PostgreSQL (or anything SQLAlchemy speaks) by URL, with
`$BACKDROP_MONITORING_DB` overriding params. Tables are created on first use.

Pictures are not stored in the database: photos and masks live in a content-addressed store
(`monitoring.store_dir/{images,masks}/<sha[:2]>/<sha256>.<ext>`); rows hold the hash and the
store-relative path, so identical masks are stored once and nothing is ever overwritten.

All timestamps are naive UTC (SQLite keeps no zone; PostgreSQL `timestamp without time zone`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

import numpy as np
from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from backdrop.config import MonitoringParams, Params, project_dir, resolve
from backdrop.io import atomic_path, sha256_file

log = logging.getLogger(__name__)

DB_ENV = "BACKDROP_MONITORING_DB"
UNCERTAIN = (0.1, 0.9)  # probabilities strictly inside this band count as uncertain pixels
STATS_SIDE = 256  # image statistics are computed on a copy no larger than this


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def naive_utc(ts: datetime | None) -> datetime:
    if ts is None:
        return utcnow()
    return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo else ts


class Base(DeclarativeBase):
    pass


class Prediction(Base):
    __tablename__ = "predictions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[str] = mapped_column(String(64), index=True)  # sha256[:16] of the photo's bytes
    image_sha256: Mapped[str] = mapped_column(String(64), index=True)
    stem: Mapped[str] = mapped_column(String(255), index=True)
    source_path: Mapped[str] = mapped_column(Text)
    image_path: Mapped[str] = mapped_column(Text)  # store-relative copy of the photo
    model_uri: Mapped[str] = mapped_column(Text)
    model_version: Mapped[str] = mapped_column(String(64), index=True)
    model_alias: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cluster: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    cluster_name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    confidence: Mapped[float] = mapped_column(Float)  # 1 - share of uncertain pixels
    mask_sha256: Mapped[str] = mapped_column(String(64))
    mask_path: Mapped[str] = mapped_column(Text)  # store-relative 8-bit probability mask (PNG)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    brightness: Mapped[float] = mapped_column(Float)
    contrast: Mapped[float] = mapped_column(Float)
    coverage: Mapped[float] = mapped_column(Float)  # predicted foreground share
    created_at: Mapped[datetime] = mapped_column(DateTime, index=True)


class Correction(Base):
    """A reviewer's mask for one prediction; several per image are kept (history), the latest counts."""

    __tablename__ = "corrections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prediction_id: Mapped[int] = mapped_column(ForeignKey("predictions.id"), index=True)
    image_id: Mapped[str] = mapped_column(String(64), index=True)
    mask_sha256: Mapped[str] = mapped_column(String(64))
    mask_path: Mapped[str] = mapped_column(Text)  # store-relative binary mask (PNG, 0/255)
    source: Mapped[str] = mapped_column(String(32))  # cli | inbox | simulate
    original_name: Mapped[str] = mapped_column(Text)
    coverage: Mapped[float] = mapped_column(Float)
    received_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    iou: Mapped[float | None] = mapped_column(Float, nullable=True)  # set by scoring
    scored_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    exported_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    export_drop: Mapped[str | None] = mapped_column(Text, nullable=True)


class MetricPoint(Base):
    """One rolling-window metric at one evaluation time: scope overall | cluster | model."""

    __tablename__ = "metric_points"
    __table_args__ = (UniqueConstraint("at", "scope", "key", name="uq_metric_point"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime, index=True)
    window_hours: Mapped[float] = mapped_column(Float)
    scope: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(64))
    n: Mapped[int] = mapped_column(Integer)
    iou_mean: Mapped[float] = mapped_column(Float)
    iou_min: Mapped[float] = mapped_column(Float)
    iou_p10: Mapped[float] = mapped_column(Float)
    share_ge_threshold: Mapped[float] = mapped_column(Float)


class AlertState(Base):
    """Current state of an alert rule: ok, or firing since `opened_at` (one row per rule)."""

    __tablename__ = "alert_state"

    rule: Mapped[str] = mapped_column(String(64), primary_key=True)
    firing: Mapped[bool] = mapped_column(Boolean, default=False)
    incident_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    opened_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    scopes: Mapped[str] = mapped_column(Text, default="")  # comma-separated breached scopes
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class AlertEvent(Base):
    """Every notification sent (alert, resolved, dag_failure), with what it said and where it went."""

    __tablename__ = "alert_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    kind: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(DateTime)
    channels: Mapped[str] = mapped_column(Text)  # delivered channels, comma-separated
    errors: Mapped[str] = mapped_column(Text, default="")
    summary: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)  # JSON payload as sent to the webhook


# ------------------------------------------------------------------------------------------ database


def db_url(params: MonitoringParams) -> str:
    """$BACKDROP_MONITORING_DB or `monitoring.db_url`, a relative SQLite path anchored at the project."""
    url = os.environ.get(DB_ENV) or params.db_url
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite:///:memory:":
        path = resolve(url[len(prefix):])
        path.parent.mkdir(parents=True, exist_ok=True)
        url = prefix + str(path)
    return url


_ENGINES_LOCK = threading.Lock()


def engine_for(url: str) -> Engine:
    """One engine per database URL and process, its tables created on first use.

    Thread-safe (the API records predictions from several worker threads at once), and tolerant of
    another process creating the same tables at the same moment (create_all checks, then creates).
    """
    with _ENGINES_LOCK:
        return _engine_for(url)


@lru_cache(maxsize=8)
def _engine_for(url: str) -> Engine:
    from sqlalchemy.exc import DatabaseError

    engine = create_engine(url, future=True, pool_pre_ping=True)
    for attempt in range(3):
        try:
            Base.metadata.create_all(engine)
            break
        except DatabaseError as exc:  # a concurrent creator won the race: check again
            if "already exists" not in str(exc) or attempt == 2:
                raise
    return engine


def sessions(params: MonitoringParams) -> sessionmaker[Session]:
    return sessionmaker(engine_for(db_url(params)), expire_on_commit=False)


# ------------------------------------------------------------------------------------------ store


@dataclass(frozen=True)
class Store:
    root: Path

    @classmethod
    def from_params(cls, params: MonitoringParams) -> Store:
        return cls(resolve(params.store_dir))

    def path(self, rel: str) -> Path:
        return self.root / rel

    def put_file(self, src: Path, kind: str = "images") -> tuple[str, str]:
        """Copy a file into the store under its sha256; returns (sha256, store-relative path)."""
        sha = sha256_file(src)
        rel = f"{kind}/{sha[:2]}/{sha}{src.suffix.lower()}"
        dest = self.root / rel
        if not dest.exists():
            with atomic_path(dest) as tmp:
                shutil.copyfile(src, tmp)
        return sha, rel

    def put_png(self, image, kind: str = "masks") -> tuple[str, str]:
        """Store a PIL image as PNG under the sha256 of its encoded bytes (the cut-outs' fast
        writer: 8 ms of a server request's 17 ms log write went to PIL's PNG encoder)."""
        from backdrop.png import encode_png

        data = encode_png(image)
        sha = hashlib.sha256(data).hexdigest()
        rel = f"{kind}/{sha[:2]}/{sha}.png"
        dest = self.root / rel
        if not dest.exists():
            with atomic_path(dest) as tmp:
                tmp.write_bytes(data)
        return sha, rel


# ------------------------------------------------------------------------------------------ features


def image_stats(photo) -> dict[str, float]:
    """Brightness and contrast (mean and std of luminance in [0,1]) plus size."""
    from PIL import Image

    grey = photo.convert("L")
    grey.thumbnail((STATS_SIDE, STATS_SIDE), Image.Resampling.BOX)
    arr = np.asarray(grey, dtype=np.float32) / 255.0
    return {"brightness": float(arr.mean()), "contrast": float(arr.std()),
            "width": photo.width, "height": photo.height}


def confidence(prob: np.ndarray) -> float:
    """1 - share of pixels whose foreground probability is uncertain (strictly inside 0.1..0.9)."""
    lo, hi = UNCERTAIN
    return float(1.0 - np.count_nonzero((prob > lo) & (prob < hi)) / max(1, prob.size))


def to_alpha(prob: np.ndarray) -> np.ndarray:
    """The stored 8-bit form of a probability map (what `compose` puts in the alpha channel)."""
    return (np.clip(prob, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def binary(alpha: np.ndarray, threshold: float) -> np.ndarray:
    """Foreground of a stored 8-bit mask at a probability threshold (the same cut everywhere)."""
    return alpha >= int(round(threshold * 255))


def image_id_for(sha256: str) -> str:
    return sha256[:16]


# ------------------------------------------------------------------------------------------ recording


@lru_cache(maxsize=16)
def _model_identity(source: str, tracking: str) -> tuple[str, str | None]:
    """(version, alias) of a model source: a registry alias is resolved to its version number."""
    if source.startswith("models:/"):
        ref = source[len("models:/"):]
        if "@" in ref:
            name, alias = ref.split("@", 1)
            try:
                from mlflow import MlflowClient

                return str(MlflowClient(tracking_uri=tracking).get_model_version_by_alias(name, alias).version), alias
            except Exception as exc:  # the log must not break a cut-out; keep what we know
                log.warning("cannot resolve %s to a version: %s", source, exc)
                return f"@{alias}", alias
        name, _, version = ref.partition("/")
        return version or ref, None
    path = Path(source)
    return (f"file:{sha256_file(path)[:12]}" if path.is_file() else source), None


class PredictionRecorder:
    """Writes one prediction-log row (plus stored photo and mask) per cut-out."""

    def __init__(self, params: Params, model_source: str):
        from backdrop.config import tracking_uri

        self.params = params
        self.mp = params.monitoring
        self.store = Store.from_params(self.mp)
        self.sessions = sessions(self.mp)
        self.model_source = model_source
        self.version, self.alias = _model_identity(model_source, tracking_uri(params))
        self.cluster_model = resolve(params.cluster.out_dir) / "model.joblib"
        self.threshold = params.evaluate.threshold

    def _cluster(self, photo, fg) -> tuple[int | None, str | None]:
        if not self.cluster_model.exists():
            return None, None
        from PIL import Image

        from backdrop.data.clusters import assign

        return assign(self.cluster_model, photo, Image.fromarray(fg.astype(np.uint8) * 255, mode="L"))

    def record(self, source: Path, photo, prob: np.ndarray, at: datetime | None = None) -> Prediction:
        from PIL import Image

        image_sha, image_rel = self.store.put_file(Path(source), "images")
        alpha = to_alpha(prob)
        mask_sha, mask_rel = self.store.put_png(Image.fromarray(alpha, mode="L"))
        fg = binary(alpha, self.threshold)
        cluster, cluster_name = self._cluster(photo, fg)
        stats = image_stats(photo)
        row = Prediction(
            image_id=image_id_for(image_sha), image_sha256=image_sha, stem=Path(source).stem,
            source_path=str(Path(source).resolve()), image_path=image_rel, model_uri=self.model_source,
            model_version=self.version, model_alias=self.alias, cluster=cluster, cluster_name=cluster_name,
            confidence=confidence(prob), mask_sha256=mask_sha, mask_path=mask_rel,
            width=stats["width"], height=stats["height"], brightness=stats["brightness"],
            contrast=stats["contrast"], coverage=float(fg.mean()), created_at=naive_utc(at))
        with self.sessions() as s, s.begin():
            s.add(row)
        return row


def latest_prediction(session: Session, key: str) -> Prediction | None:
    """The newest prediction for an image id, a full sha256, or a file stem."""
    stmt = (select(Prediction)
            .where((Prediction.image_id == key) | (Prediction.image_sha256 == key) | (Prediction.stem == key))
            .order_by(Prediction.created_at.desc(), Prediction.id.desc()).limit(1))
    return session.scalars(stmt).first()


def read_mask(store: Store, rel: str) -> np.ndarray:
    from PIL import Image

    with Image.open(store.path(rel)) as img:
        return np.asarray(img.convert("L"), dtype=np.uint8)


def where(mp: MonitoringParams) -> str:
    """Human-readable location of the log (for CLI messages)."""
    return f"{db_url(mp)} (project {project_dir()})"
