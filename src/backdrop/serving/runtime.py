"""One loaded model per process that follows the registry alias without a restart.

`ModelHandle("champion", params)` resolves the alias to a version (`models:/backdrop-u2net/7`), loads
that version through the segmenter factory (`serving.segmenter.load_segmenter`, ONNX engine), and
afterwards asks the registry at most every `refresh_s` seconds which version the alias points at —
one cheap metadata query. When it moved, the new version is loaded next to the old one and swapped
in atomically; requests in flight keep the segmenter they started with. Other specs (a file,
`official:u2netp`, `models:/name/N`) never change.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from backdrop.config import Params, tracking_uri
from backdrop.serving.base import Segmenter
from backdrop.serving.segmenter import load_segmenter
from backdrop.serving.specs import registry_uri

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AliasRef:
    name: str
    alias: str


def alias_ref(spec: str, params: Params) -> AliasRef | None:
    """The (model name, alias) a spec follows, or None for a fixed model."""
    uri = registry_uri(spec, params)  # `champion` → models:/<register.model_name>@<register.alias>
    if uri.startswith("models:/") and "@" in uri:
        name, alias = uri[len("models:/"):].split("@", 1)
        return AliasRef(name, alias)
    return None


def resolve_alias(ref: AliasRef, params: Params) -> str:
    """The version number the alias points at now (one registry query)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri(params))
    return str(client.get_model_version_by_alias(ref.name, ref.alias).version)


class ModelHandle:
    def __init__(self, spec: str, params: Params, threads: int | None = None, refresh_s: float = 30.0,
                 precision: str = "fp32"):
        self.spec = spec
        self.params = params
        self.precision = precision
        self.threads = threads or None
        self.refresh_s = refresh_s
        self.ref = alias_ref(spec, params)
        self.version: str | None = None
        self.loaded_at = 0.0
        self.reloads = 0
        self._segmenter: Segmenter | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- loading
    def _load(self, version: str | None) -> Segmenter:
        spec = self.spec if self.ref is None else f"models:/{self.ref.name}/{version}"
        seg = load_segmenter(spec, "onnx", self.precision, params=self.params, threads=self.threads)
        if self.ref is not None:
            seg.source = spec
        return seg

    def load(self) -> Segmenter:
        version = resolve_alias(self.ref, self.params) if self.ref else None
        seg = self._load(version)
        with self._lock:
            self._segmenter, self.version, self.loaded_at = seg, version, time.time()
        self._checked = time.monotonic()
        log.info("model loaded: %s%s", seg.source, f" ({self.ref.alias})" if self.ref else "")
        return seg

    @property
    def segmenter(self) -> Segmenter:
        seg = self._segmenter
        return seg if seg is not None else self.load()

    def check(self) -> bool:
        """Reload if the alias moved; True when a new version was swapped in."""
        if self.ref is None:
            return False
        self._checked = time.monotonic()
        try:
            version = resolve_alias(self.ref, self.params)
        except Exception as exc:  # registry briefly unreachable: keep serving what we have
            log.warning("cannot resolve %s@%s: %s", self.ref.name, self.ref.alias, exc)
            return False
        if version == self.version:
            return False
        log.info("alias %s moved: version %s → %s; loading", self.ref.alias, self.version, version)
        seg = self._load(version)
        with self._lock:
            self._segmenter, self.version, self.loaded_at = seg, version, time.time()
            self.reloads += 1
        return True

    # -- background refresh (one daemon thread per process)
    def start(self) -> None:
        if self.ref is None or self.refresh_s <= 0 or self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.wait(self.refresh_s):
                try:
                    self.check()
                except Exception:  # a broken new version must not kill the refresher
                    log.exception("model refresh failed; still serving version %s", self.version)

        self._thread = threading.Thread(target=loop, name="backdrop-model-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def info(self) -> dict:
        seg = self._segmenter
        return {"spec": self.spec, "source": seg.source if seg else None, "version": self.version,
                "alias": self.ref.alias if self.ref else None, "size": seg.size if seg else None,
                "precision": seg.precision if seg else None,
                "reloads": self.reloads, "loaded_at": self.loaded_at}
