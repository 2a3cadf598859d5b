"""Typed view of params.yaml, loaded once.

Every stage reads its own section from here, so a typo or an out-of-range value fails
before any work starts, with the offending key and the reason.

Defaults live in one place. The model defaults below EQUAL the shipped params.yaml, so a missing
section (or key) means exactly the shipped behaviour, never a second, silently different recipe
(fp32 instead of int8, another review threshold, no refinement). The few keys that differ on purpose
are training-recipe keys listed, with their reason, in tests/reliability/test_defaults.py
(ALLOWED_DIFFERENCES); serving and monitoring sections have none. An empty params.yaml is an error,
not "all defaults". Every float must be finite, and settings that size memory, divide or wait are
bounded, so a value that cannot work fails here, by dotted key, instead of in a request.

`redact` (below) is the one place that masks credentials in URLs and text before anything is logged,
stored or printed.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

PARAMS_ENV = "BACKDROP_PARAMS"
PROJECT_ENV = "BACKDROP_PROJECT_DIR"

MAX_ASPECT = 20.0  # longest:shortest side of a white canvas; the canvas grows with it (100000:1 took 14 GB)


def parse_aspect(text: str) -> tuple[float, float] | None:
    """"4:5" → (4.0, 5.0); "original" → None; ValueError otherwise (also for NaN, infinite or absurd
    ratios: the sides must be finite, positive and at most MAX_ASPECT:1 apart)."""
    if text.strip().lower() == "original":
        return None
    try:
        w, h = (float(p) for p in text.split(":"))
    except ValueError:
        raise ValueError(f"aspect {text!r}: expected W:H (e.g. 1:1, 4:5) or 'original'") from None
    if not (math.isfinite(w) and math.isfinite(h)):
        raise ValueError(f"aspect {text!r}: both sides must be finite numbers")
    if w <= 0 or h <= 0:
        raise ValueError(f"aspect {text!r}: both sides must be positive")
    if max(w / h, h / w) > MAX_ASPECT:
        raise ValueError(f"aspect {text!r}: sides more than {MAX_ASPECT:g}:1 apart (the canvas would "
                         "be mostly white and grows with the ratio)")
    return w, h


# ------------------------------------------------------------------------------------------ redaction

REDACTED = "***"
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<rest>[^\s'\"<>]*)")
_SECRET_NAME = r"[\w.\-]*(?:token|key|secret|passw(?:or)?d|pwd|sig|signature|credential|auth)[\w.\-]*"
_SECRET_PARAM = re.compile(rf"(?P<lead>[?&;]|(?<![\w.\-]))(?P<name>{_SECRET_NAME})=(?P<value>[^&;#\s'\"<>]+)",
                           re.IGNORECASE)
_WEBHOOK_PATH = re.compile(r"(?P<base>(?:hooks\.slack(?:-gov)?\.com/(?:services|workflows|triggers)"
                           r"|discord(?:app)?\.com/api/webhooks)/)[^\s'\"<>?#]+", re.IGNORECASE)
_BEARER = re.compile(r"(?P<kind>\bBearer\s+|Authorization:\s*\w+\s+)[A-Za-z0-9._~+/=\-]{4,}", re.IGNORECASE)


def _userinfo(scheme: str, rest: str) -> tuple[str, str, str] | None:
    """(user, password, tail from '@') of the URL scheme://rest, or None when it carries no password."""
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    netloc = rest[:end]
    at = netloc.rfind("@")
    if at < 0:  # no userinfo, or a malformed one: a '/', '?' or '#' inside the password
        at = rest.rfind("@")
        if at < 0 or ":" not in netloc or netloc.startswith("[") or netloc.rsplit(":", 1)[1].isdigit():
            return None
    userinfo = rest[:at]
    if ":" not in userinfo:
        return None
    user, password = userinfo.split(":", 1)
    return user, password, rest[at:]


def _mask_userinfo(match: re.Match) -> str:
    """scheme://user:password@host… → scheme://user:***@host… (a user without password is kept)."""
    found = _userinfo(match["scheme"], match["rest"])
    return match[0] if found is None else f"{match['scheme']}{found[0]}:{REDACTED}{found[2]}"


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` with every credential masked: passwords in URLs (user:***@host), secret query or
    key=value parameters (?token=***, &key=***, password=***), Slack/Discord webhook path secrets
    (hooks.slack.com/services/***) and bearer tokens. Each password or secret value found that way,
    and each of the caller's known `secrets`, is also masked wherever else it appears in the text
    (passwords and known secrets of 3 characters or more, parameter values of 6 or more): urllib
    quotes a bad URL's password alone, "nonnumeric port: 's3cret@host'". Idempotent."""
    text = str(text)
    known = {s for s in secrets if s}
    for match in _URL.finditer(text):
        found = _userinfo(match["scheme"], match["rest"])
        if found is not None:
            known.add(found[1])
    known.update(m["value"] for m in _SECRET_PARAM.finditer(text) if len(m["value"]) >= 6)
    for secret in sorted({s for s in known if len(s) >= 3 and s != REDACTED}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    text = _URL.sub(_mask_userinfo, text)
    text = _WEBHOOK_PATH.sub(lambda m: m["base"] + REDACTED, text)
    text = _SECRET_PARAM.sub(lambda m: f"{m['lead']}{m['name']}={REDACTED}", text)
    return _BEARER.sub(lambda m: m["kind"] + REDACTED, text)


def redact_url(url: str) -> str:
    """One URL, safe to log or print: `redact` of it (host, port and path stay readable)."""
    return redact(url)


def url_secrets(url: str | None) -> list[str]:
    """The parts of a secret URL (a webhook) that must never surface, even quoted alone in an error:
    user and password, query values and token-like path segments (Slack's T…/B…/X…)."""
    if not url:
        return []
    try:
        parts = urlsplit(url)
        out = [parts.password or "", *(v for _, v in parse_qsl(parts.query, keep_blank_values=True))]
        if parts.password:
            out.append(parts.username or "")
    except ValueError:  # malformed beyond parsing: everything after the scheme is secret
        return [url, url.split("://", 1)[-1]]
    path = parts.path if parts.netloc else url.split("?", 1)[0]
    for segment in path.split("/"):
        if len(segment) >= 16 or (len(segment) >= 6 and any(c.isdigit() for c in segment)
                                  and any(c.isalpha() for c in segment)):
            out.append(segment)
    return [s for s in out if s]


class ConfigError(ValueError):
    """params.yaml is missing, unreadable or holds a bad value."""


class _Section(BaseModel):
    # allow_inf_nan=False: `.inf` / `.nan` fail for every float (a NaN aspect, eps or timeout cannot work)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value, info: ValidationInfo):
        """`workers: true` is not 1: a boolean where a number belongs is a mistake."""
        if isinstance(value, bool) and cls.model_fields[info.field_name].annotation in (int, float):
            raise ValueError("expected a number, got a boolean")
        return value


_CRON_PRESETS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@weekly": "0 0 * * 0",  # Airflow's presets
                 "@monthly": "0 0 1 * *", "@quarterly": "0 0 1 */3 *", "@yearly": "0 0 1 1 *"}


def _check_cron(value: str, *, also: tuple[str, ...] = ()) -> str:
    """A cron expression (or preset) Airflow can schedule; refused here, by key, not at run time."""
    if value in also:
        return value
    expression = _CRON_PRESETS.get(value, value)
    try:
        from croniter import croniter
    except ImportError:  # no Airflow (hence no croniter) here: nothing schedules this value
        return value
    if not croniter.is_valid(expression):
        presets = ", ".join([*_CRON_PRESETS, *also])
        raise ValueError(f"{value!r} is not a cron expression (minute hour day-of-month month "
                         f"day-of-week, e.g. '0 2 * * *') or one of {presets}")
    return value


class SynthParams(_Section):
    n: int = Field(200, ge=1)
    seed: int = 7
    min_side: int = Field(600, ge=64)
    max_side: int = Field(1200, ge=64)
    white_share: float = Field(0.15, ge=0, le=1)
    black_share: float = Field(0.05, ge=0, le=1)
    variety: Literal["classic", "broad"] = "classic"  # broad: per-item studio/light/camera/framing (issue 19)

    @model_validator(mode="after")
    def _sides(self) -> SynthParams:
        if self.min_side > self.max_side:
            raise ValueError("min_side must be <= max_side")
        if self.white_share + self.black_share > 1:
            raise ValueError("white_share + black_share must be <= 1")
        return self


class FashionMnistParams(_Section):
    """`backdrop data fashion-mnist`: real Zalando products (Debian dataset-fashion-mnist) as packshots."""

    source_dir: Path = Path("/usr/share/datasets/fashion-mnist")  # idx files (.gz or not); else dpkg -L
    n: int = Field(600, ge=1, le=60_000)
    seed: int = 11
    min_side: int = Field(320, ge=64)
    max_side: int = Field(512, ge=64)
    white_share: float = Field(0.1, ge=0, le=1)
    black_share: float = Field(0.05, ge=0, le=1)
    eval_dir: Path = Path("data/eval/fashion-mnist-test")  # where --split test goes (never the training drop)
    variety: Literal["classic", "broad"] = "classic"  # broad: per-item studio/light/camera/framing (issue 19)

    @model_validator(mode="after")
    def _sides(self) -> FashionMnistParams:
        if self.min_side > self.max_side:
            raise ValueError("min_side must be <= max_side")
        if self.white_share + self.black_share > 1:
            raise ValueError("white_share + black_share must be <= 1")
        return self


class BenchmarkParams(_Section):
    """`backdrop data benchmark`: the out-of-distribution benchmark (never trained on, issue 19)."""

    n: int = Field(120, ge=1, le=4000)   # photos per style (studio, props)
    seed: int = 1919
    min_side: int = Field(320, ge=64)
    max_side: int = Field(900, ge=64)
    val_share: float = Field(0.5, gt=0, lt=1)  # part val | test by a hash of the photo id
    out_dir: Path = Path("data/benchmark")

    @model_validator(mode="after")
    def _sides(self) -> BenchmarkParams:
        if self.min_side > self.max_side:
            raise ValueError("min_side must be <= max_side")
        return self


class DropParams(_Section):
    """`backdrop data drop`: one training drop mixing sources by share (issue 19)."""

    n: int = Field(1200, ge=1)
    shares: dict[Literal["synth", "fashion_mnist"], float] = {"synth": 0.5, "fashion_mnist": 0.5}
    variety: Literal["classic", "broad"] = "broad"

    @field_validator("shares")
    @classmethod
    def _shares(cls, shares: dict) -> dict:
        if not shares or any(v < 0 for v in shares.values()) or abs(sum(shares.values()) - 1) > 1e-6:
            raise ValueError(f"shares must be >= 0 and sum to 1, got {dict(shares)}")
        return shares


class IngestParams(_Section):
    drop_dir: Path = Path("data/drop")
    raw_dir: Path = Path("data/raw")
    vendor: str = "unknown"
    license: str = "unknown"
    max_unpacked_bytes: int = Field(20_000_000_000, ge=1)  # zip drops: refuse archives that unpack to more


class ValidateParams(_Section):
    suite: Path = Path("src/backdrop/expectations/pairs_suite.json")
    min_side: int = Field(256, ge=1)
    max_pixels: int = Field(64_000_000, ge=1)
    min_coverage: float = Field(0.02, ge=0, le=1)
    max_coverage: float = Field(0.95, ge=0, le=1)
    max_gray_share: float = Field(0.05, ge=0, le=1)
    near_dup_distance: int = Field(30, ge=0, le=255)  # perceptual-hash bits (of 255) for a near duplicate
    max_bad_share: float = Field(0.2, ge=0, le=1)
    out_dir: Path = Path("data/validated")
    quarantine_dir: Path = Path("data/quarantine")

    @model_validator(mode="after")
    def _coverage(self) -> ValidateParams:
        if self.min_coverage > self.max_coverage:
            raise ValueError("min_coverage must be <= max_coverage")
        return self


class PrepareParams(_Section):
    size: int = Field(160, ge=32, le=1024)
    val_share: float = Field(0.15, gt=0, lt=1)
    test_share: float = Field(0.15, gt=0, lt=1)
    seed: int = 13
    soft_masks: bool = True  # edge pixels keep their foreground share (sub-pixel edges)
    object_crops: bool = True  # also write each pair cut to its mask's box (`backdrop.zoom`)
    crop_margin: float = Field(0.1, gt=0, le=1)  # box widened by this × its side; serving zooms the same
    out_dir: Path = Path("data/prepared")

    @field_validator("size")
    @classmethod
    def _size(cls, size: int) -> int:
        if size % 32:
            raise ValueError("size must be a multiple of 32 (U²-Net downsamples 5 times)")
        return size

    @model_validator(mode="after")
    def _shares(self) -> PrepareParams:
        if self.val_share + self.test_share >= 0.9:
            raise ValueError("val_share + test_share must leave at least 10% for training")
        return self


class ClusterParams(_Section):
    k: int = Field(6, ge=1)
    pca_components: int = Field(16, ge=1)
    feature_size: int = Field(32, ge=4)
    seed: int = 0
    overrides: Path = Path("data/cluster_overrides.csv")
    out_dir: Path = Path("data/clusters")
    match_previous: bool = True     # keep ids stable: seed + Hungarian-match to the previous model.joblib
    restart_gain: float = Field(0.1, ge=0, le=1)  # a fresh k-means wins only if its inertia is this much lower


class TrainParams(_Section):
    model: Literal["u2netp", "u2net"] = "u2netp"
    init: Literal["official", "scratch"] = "official"
    epochs: int = Field(12, ge=1)               # the production recipe (params.yaml); params.demo.yaml: 2
    batch_size: int = Field(8, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_epochs: int = Field(1, ge=0)
    seed: int = 42
    num_threads: int = Field(2, ge=1)            # per host; split between the processes on it
    out_dir: Path = Path("models/train")
    processes: int = Field(1, ge=1)              # data-parallel workers (`backdrop train --np N`)
    backend: Literal["horovod", "ddp"] = "horovod"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 where it runs natively (CUDA, AMX/AVX512-BF16)
    channels_last: Literal["auto", True, False] = "auto"  # auto: NCHW for fp32 on a CPU without AVX-512
    balanced_sampling: bool = True               # draw each epoch with equal weight per cluster
    hard_sampling: float = Field(0.0, ge=0, le=1)  # share of each epoch's draws weighted by the pair's
                                                 # last training loss (hard-example mining; 0 = off)
    iou_loss_weight: float = Field(0.5, ge=0)    # soft-Jaccard term added to the deep-supervision BCE
    early_stop_patience: int = Field(0, ge=0)    # epochs without a val IoU gain before stopping; 0 = off
    low_res_size: int = Field(0, ge=0)           # progressive resizing: the first `low_res_epochs` epochs
    low_res_epochs: int = Field(0, ge=0)         # train on batches downsampled to this size (0 = off)
    overlay_every: int = Field(2, ge=1)
    aug_hflip: float = Field(0.5, ge=0, le=1)    # probabilities / strengths of the augmentations
    aug_vflip: float = Field(0.0, ge=0, le=1)
    aug_scale: tuple[float, float] = (1.0, 1.0)  # zoom range: <1 shrinks and pads, >1 enlarges and crops
    aug_jitter: float = Field(0.0, ge=0, le=1)   # brightness/contrast/saturation factor range 1±jitter
    aug_bg_replace: float = Field(0.0, ge=0, le=1)  # share of photos composited onto a new background
    crop_share: float = Field(0.0, ge=0, le=1)   # share of samples drawn as the pair's object crop
                                                 # (prepare.object_crops), what serving's zoom pass sees
    l2sp_weight: float = Field(0.0, ge=0)        # L2-SP: weight × Σ‖w − w_init‖² pulls towards the initial weights
    encoder_lr_scale: float = Field(1.0, gt=0, le=1)  # encoder stages (stage1..stage6) train at lr × this
    distill_weight: float = Field(0.0, ge=0)     # + weight × BCE(student, the initial model's map) on each batch (0 = off)
    select_benchmarks: list[str] = []            # frozen benchmark sets whose val part picks model.pt with the
                                                 # val split (issue 19: never the training renderer's val alone)
    select_benchmark_weight: float = Field(0.5, ge=0, le=1)  # selection score = (1 − w)·val IoU + w·benchmark IoU
    wise_alphas: list[float] = []                # WiSE-FT: after training, model.pt = the best-scoring
                                                 # (1 − α)·official + α·fine-tuned of these α (and 1); [] = off

    @model_validator(mode="after")
    def _scale(self) -> TrainParams:
        lo, hi = self.aug_scale
        if not 0 < lo <= hi <= 4:
            raise ValueError("aug_scale must be [lo, hi] with 0 < lo <= hi <= 4")
        if self.low_res_epochs and (self.low_res_size < 32 or self.low_res_size % 32):
            raise ValueError("low_res_size must be a multiple of 32 (>= 32) when low_res_epochs > 0")
        if self.distill_weight and self.init != "official":
            raise ValueError("distill_weight distils the official weights' maps: it needs init: official")
        if any(not 0 <= a <= 1 for a in self.wise_alphas):
            raise ValueError(f"wise_alphas must lie in [0, 1] (0 = the official weights): {self.wise_alphas}")
        if self.wise_alphas and self.init != "official":
            raise ValueError("wise_alphas blends the fine-tune with the official weights: it needs init: official")
        return self


class EvaluateParams(_Section):
    threshold: float = Field(0.5, gt=0, lt=1)
    out_dir: Path = Path("metrics")
    benchmarks: list[str] = ["data/benchmark"]  # frozen benchmark set directories (index.csv id,image,mask,style,part)


class RegisterParams(_Section):
    model_name: str = "backdrop-u2net"
    alias: str = "champion"
    min_improvement: float = Field(0.0, ge=0)
    max_cluster_drop: float = Field(0.01, ge=0, le=1)
    confidence: float = Field(0.95, gt=0, lt=1)
    bootstrap_resamples: int = Field(2000, ge=100)
    bootstrap_seed: int = 0
    stock_model: str = "official:u2netp"  # the floor, served the same way; "" = no floor
    stock_margin: float = Field(0.0, ge=0, le=1)


class MlflowParams(_Section):
    tracking_uri: str = "sqlite:///mlflow/mlflow.db"
    artifact_root: str = "mlflow/artifacts"  # a path (relative to the project) or a URI: s3://bucket/prefix
    experiment: str = "backdrop"


class AirflowParams(_Section):
    schedule: str = "0 2 * * *"
    retries: int = Field(1, ge=0, le=100)

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        return _check_cron(value)


class RemoveParams(_Section):
    """`backdrop remove`: output format and engine (the output options are the `serve:` ones)."""

    format: Literal["rgba", "white", "mask"] = "rgba"
    engine: Literal["auto", "onnx", "torch"] = "auto"  # auto: the ONNX fast path, PyTorch if it fails
    batch_size: int = Field(1, ge=1, le=256)           # photos per session run
    workers: int = Field(0, ge=0, le=1024)             # parallel lanes (1 thread each); 0 = one per core


class ProfileParams(_Section):
    """Deployment profile (src/backdrop/profiles.py); the env var BACKDROP_PROFILE wins over `name`."""

    name: Literal["local", "production"] = "local"


class SmtpParams(_Section):
    host: str = ""                 # empty: no email
    port: int = Field(25, ge=1, le=65535)
    starttls: bool = False
    sender: str = "backdrop-monitoring@localhost"
    recipients: list[str] = []
    username_env: str = "BACKDROP_SMTP_USER"      # credentials only from the environment
    password_env: str = "BACKDROP_SMTP_PASSWORD"
    timeout_s: float = Field(10.0, gt=0, le=600)


MAX_HOURS = 24 * 366  # monitoring windows: up to a year


class MonitoringParams(_Section):
    db_url: str = "sqlite:///monitoring/monitoring.db"  # BACKDROP_MONITORING_DB overrides
    store_dir: Path = Path("monitoring/store")           # content-addressed photos and masks
    inbox_dir: Path = Path("monitoring/inbox")           # reviewers drop <image-id or stem>.png here
    reports_dir: Path = Path("monitoring/reports")
    export_dir: Path = Path("data/drop")                 # corrected pairs become a vendor drop here
    record_predictions: bool = True
    schedule: str = "@hourly"
    threshold: float = Field(0.99, gt=0, le=1)
    min_samples: int = Field(20, ge=1)
    window_hours: float = Field(24.0, gt=0, le=MAX_HOURS)
    reference_hours: float = Field(168.0, gt=0, le=MAX_HOURS)
    max_gray_share: float = Field(0.05, ge=0, le=1)     # a correction must be (nearly) binary
    worst_examples: int = Field(5, ge=0, le=100)
    retrain_on_alert: bool = True
    mlflow_experiment: str = "backdrop-monitoring"
    mlflow_ui_url: str = "http://127.0.0.1:5000"
    report_base_url: str = ""                           # empty: links are file paths
    webhook_conn_id: str = "backdrop_alert_webhook"     # Airflow connection with the webhook URL (wins over the env)
    webhook_url_env: str = "BACKDROP_ALERT_WEBHOOK_URL"  # the URL is a secret: only from a connection or the env
    webhook_timeout_s: float = Field(10.0, gt=0, le=600)
    smtp: SmtpParams = SmtpParams()
    smtp_conn_id: str = "backdrop_smtp"                 # Airflow connection: SMTP login/password (and host/port)
    simulate_shift_white_share: float = Field(0.6, ge=0, le=1)
    simulate_shift_black_share: float = Field(0.3, ge=0, le=1)
    alert_confidence: float = Field(0.95, ge=0.5, lt=1)  # one-sided bound on the audit sample's mean IoU

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        return _check_cron(value, also=("@once", "@continuous"))

    @model_validator(mode="after")
    def _shares(self) -> MonitoringParams:
        if self.simulate_shift_white_share + self.simulate_shift_black_share > 1:
            raise ValueError("simulate_shift_white_share + simulate_shift_black_share must be <= 1")
        return self


class ServeParams(_Section):
    """`backdrop serve` (HTTP API), `backdrop watch` (upload folder) and the backdrop_inference DAG."""

    model: str = "champion"          # champion | models:/name/N | model.pt | model.onnx | official:u2netp
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=256)
    threads: int = Field(0, ge=0, le=1024)  # onnxruntime intra-op threads per worker; 0 = the cores available
    batch_size: int = Field(4, ge=1, le=256)
    max_upload_bytes: int = Field(25_000_000, ge=1, le=2_000_000_000)
    max_pixels: int = Field(40_000_000, ge=1, le=250_000_000)  # checked from the header, before decoding
    max_batch_files: int = Field(16, ge=1, le=1000)
    refresh_s: float = Field(30.0, ge=0, le=86_400)  # how often a worker checks whether the alias moved; 0 = never
    token_env: str = "BACKDROP_API_TOKEN"       # bearer token required when this env var is set
    format: Literal["rgba", "white", "mask"] = "rgba"
    review_threshold: float = Field(0.941, ge=0, le=1)  # confidence below this → review queue
    review_dir: Path = Path("review")
    upload_dir: Path = Path("uploads")          # watched folder (backdrop watch / backdrop_inference DAG)
    out_dir: Path = Path("cutouts")             # published cut-outs of watched uploads
    watch_retries: int = Field(2, ge=0, le=100)  # extra attempts before a photo goes to failed/
    watch_settle_s: float = Field(0.5, ge=0, le=3600)  # a file must keep its size this long before it is read
    watch_poke_s: float = Field(2.0, gt=0, le=3600)    # the DAG's trigger: seconds between directory scans
    precision: Literal["fp32", "int8"] = "int8"   # int8: partially quantized graph (serving/quantize.py)
    white_aspect: str = "1:1"                   # white output canvas: "W:H" (e.g. "1:1") or "original"
    white_margin: float = Field(0.05, ge=0, le=0.25)  # free border, share of the canvas' shorter side
                                                # (at 0.25 the canvas is up to 4x the product's box)
    zoom: Literal["auto", "always", "never"] = "auto"  # second pass on the product's box (prepare.crop_margin);
                                                # auto: for models trained on object crops (train.crop_share > 0)
    zoom_max_area: float = Field(0.6, gt=0, le=1)  # ...when that box covers at most this share of the frame
    zoom_blend: float = Field(0.0, ge=0, le=1)  # weight of the whole-photo pass inside the box (0 = the zoom pass alone)
    zoom_min_agreement: float = Field(0.8, ge=0, le=1)  # passes' mask IoU in the box below which the first pass stands
    tta: Literal["none", "hflip"] = "none"      # hflip: each pass also on the mirror image, maps averaged (2× cost)
    refine: Literal["none", "guided", "guided_rgb"] = "guided"  # edge refinement of the upsampled mask
    refine_radius: int = Field(2, ge=1, le=64)
    refine_eps: float = Field(1e-3, gt=0, le=1)
    clean_edges: bool = True                    # decontaminate the edge band of rgba outputs (serving/outputs.py)
    audit_share: float = Field(0.02, ge=0, le=1)  # published cut-outs also queued for review (unbiased audit)

    @field_validator("zoom", mode="before")
    @classmethod
    def _zoom(cls, value):
        return {True: "always", False: "never"}.get(value, value) if isinstance(value, bool) else value

    @field_validator("white_aspect")
    @classmethod
    def _aspect(cls, value: str) -> str:
        parse_aspect(value)
        return value


class ReviewParams(_Section):
    """`backdrop review serve`: the review station (src/backdrop/review/)."""

    host: str = "127.0.0.1"
    port: int = Field(8010, ge=0, le=65535)
    users: dict[str, str] = {}               # name → `backdrop review hash-password` output (scrypt); never plain text
    session_minutes: float = Field(480.0, gt=0, le=10_080)  # a sign-in expires after this
    secret_env: str = "BACKDROP_REVIEW_SECRET"  # signs sessions; unset: a random key per process
    page_size: int = Field(100, ge=1, le=5000)  # queue rows per page

    @field_validator("users")
    @classmethod
    def _hashed(cls, value: dict[str, str]) -> dict[str, str]:
        for name, hashed in value.items():
            if not str(hashed).startswith("scrypt$"):
                raise ValueError(f"user {name!r}: not a password hash (make one with `backdrop review hash-password`)")
        return value


class Params(_Section):
    synth: SynthParams = SynthParams()
    fashion_mnist: FashionMnistParams = FashionMnistParams()
    benchmark: BenchmarkParams = BenchmarkParams()
    drop: DropParams = DropParams()
    ingest: IngestParams = IngestParams()
    validate_: ValidateParams = Field(ValidateParams(), alias="validate")
    prepare: PrepareParams = PrepareParams()
    cluster: ClusterParams = ClusterParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    register_: RegisterParams = Field(RegisterParams(), alias="register")
    mlflow: MlflowParams = MlflowParams()
    airflow: AirflowParams = AirflowParams()
    remove: RemoveParams = RemoveParams()
    profile: ProfileParams = ProfileParams()
    monitoring: MonitoringParams = MonitoringParams()
    serve: ServeParams = ServeParams()
    review: ReviewParams = ReviewParams()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)


def project_dir() -> Path:
    """The project root: $BACKDROP_PROJECT_DIR, else the current directory (where dvc runs stages)."""
    return Path(os.environ.get(PROJECT_ENV) or Path.cwd()).resolve()


def params_path() -> Path:
    return Path(os.environ.get(PARAMS_ENV) or project_dir() / "params.yaml")


def parse_params(raw: dict, source: str = "params.yaml") -> Params:
    """Validate a raw mapping; errors name the dotted key and the reason."""
    try:
        return Params.model_validate(raw or {})
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            lines.append(redact(f"  {key}: {err['msg']} (got {err.get('input')!r})"))
        raise ConfigError(f"{source}: invalid value(s)\n" + "\n".join(lines)) from None


def read_yaml(text: str):
    """YAML 1.2, as DVC reads and rewrites params.yaml (`dvc exp run -S` drops quotes): PyYAML's 1.1
    would turn an unquoted `1:1` into the base-60 integer 61 and `no` into False."""
    from ruamel.yaml import YAML

    return YAML(typ="safe", pure=True).load(text)


@lru_cache(maxsize=8)
def _load(path: Path) -> Params:
    from ruamel.yaml import YAMLError

    try:
        raw = read_yaml(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found (run from the project root or set {PARAMS_ENV})") from None
    except YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if raw is None:  # empty, blank or only comments: never a silent run on built-in defaults
        raise ConfigError(f"{path}: empty (no sections); write the settings, e.g. copy the shipped params.yaml")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections (got {type(raw).__name__})")
    return parse_params(raw, str(path))


def load_params(path: str | Path | None = None) -> Params:
    """params.yaml as typed models; parsed once per path and process."""
    return _load(Path(path or params_path()).resolve())


def apply_overlay(params_file: str | Path, overlay_file: str | Path) -> list[str]:
    """Write a recipe overlay (e.g. params.demo.yaml) into a params.yaml, comments and order kept.

    Why write rather than merge at load time: DVC reads params.yaml, so the values a stage ran with
    are the ones dvc.lock records. Every overlay key must already exist in params.yaml (a typo is an
    error naming the overlay and the key), and the result must validate before it is written.
    Returns the dotted keys whose value changed."""
    import io

    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedSeq

    params_file, overlay_file = Path(params_file), Path(overlay_file)
    rt = YAML()  # round trip: comments, order, quotes and flow style survive
    rt.width, rt.preserve_quotes = 4096, True
    base = rt.load(params_file.read_text())
    overlay = read_yaml(overlay_file.read_text()) or {}
    if not isinstance(overlay, dict):
        raise ConfigError(f"{overlay_file}: top level must be a mapping of sections")
    changed: list[str] = []

    def merge(dst, src, prefix: str) -> None:
        for key, value in src.items():
            dotted = prefix + str(key)
            if key not in dst:
                raise ConfigError(f"{overlay_file}: {dotted} is not a key of {params_file}")
            if isinstance(value, dict):
                merge(dst[key], value, dotted + ".")
                continue
            if dst[key] != value:
                changed.append(dotted)
            if isinstance(value, list):
                value = CommentedSeq(value)
                value.fa.set_flow_style()
            dst[key] = value

    merge(base, overlay, "")
    buf = io.StringIO()
    rt.dump(base, buf)
    text = buf.getvalue()
    parse_params(read_yaml(text), str(overlay_file))  # never write a params.yaml that does not load
    if changed:
        params_file.write_text(text)
        _load.cache_clear()
    return changed


def resolve(path: str | Path) -> Path:
    """A params path made absolute against the project root."""
    p = Path(path)
    return p if p.is_absolute() else project_dir() / p


def tracking_uri(params: Params) -> str:
    """MLflow URI with a relative sqlite path anchored at the project root.

    `sqlite:///mlflow/mlflow.db` would otherwise land wherever the process happens to run.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI") or params.mlflow.tracking_uri
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        uri = prefix + str(resolve(uri[len(prefix):]))
    return uri
