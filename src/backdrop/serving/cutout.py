"""Cut-outs from Python, and how a cut-out finds its settings and its model anywhere.

    >>> import io
    >>> import backdrop
    >>> from PIL import Image
    >>> photo = Image.new("RGB", (96, 64), (250, 250, 250))
    >>> photo.paste((20, 40, 160), (24, 16, 72, 56))   # a navy box on a white backdrop
    >>> cut = backdrop.remove(photo, model="u2netp")   # PIL in → PIL out, the photo's size
    >>> cut.mode, cut.size
    ('RGBA', (96, 64))
    >>> import numpy as np
    >>> backdrop.remove(np.asarray(photo), model="u2netp").shape   # an array in → an array out
    (64, 96, 4)
    >>> buf = io.BytesIO(); photo.save(buf, format="JPEG")
    >>> png = backdrop.remove(buf.getvalue(), model="u2netp", format="mask")   # bytes in → PNG bytes out
    >>> png[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
    True
    >>> session = backdrop.new_session("u2netp")   # load once, cut out many
    >>> [session.remove(photo, format="white").mode for _ in range(2)]
    ['RGB', 'RGB']
    >>> [cut.size for cut in session.remove_many([photo, photo.resize((48, 32))])]   # in order, on lanes
    [(96, 64), (48, 32)]

Where settings come from (`context`): `--params`/`params=` or `$BACKDROP_PARAMS` if given, else
`./params.yaml` of the project (`$BACKDROP_PROJECT_DIR` or the current directory) if there is one,
else the built-in defaults (which equal the shipped params.yaml). Outside a project nothing is
written but the cut-outs: the prediction log (monitoring) stays off unless `$BACKDROP_MONITORING_DB`
names one.

Which model (`pick_model`): the one asked for (`--model`/`model=`; rembg's names `u2netp`/`u2net`
mean `official:u2netp`/`official:u2net`), else the project's champion if its registry holds one
(asked without creating an MLflow store: `specs.registry_has`), else the stock `official:u2netp`,
which ships inside the package. A notice says which one was used and why.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from backdrop.config import Params
from backdrop.serving.outputs import FORMATS
from backdrop.serving.specs import STOCK, NoModelError, registry_has, registry_uri

log = logging.getLogger(__name__)

ALIASES = {"u2netp": "official:u2netp", "u2net": "official:u2net"}  # rembg's model names
MODEL_HELP = ("u2netp (stock, ships with backdrop) | u2net (stock, 176 MB) | champion (the project's "
              "registered model) | models:/NAME/N | models:/NAME@ALIAS | PATH/model.pt | PATH/model.onnx")
MONITORING_DB_ENV = "BACKDROP_MONITORING_DB"


def context(params: Params | str | Path | None = None) -> tuple[Params, bool]:
    """(params, inside a project). See the module doc: a given file or `$BACKDROP_PARAMS` must load
    (a bad one is a ConfigError), `./params.yaml` is used when present, else the built-in defaults
    with the prediction log off (unless `$BACKDROP_MONITORING_DB` is set)."""
    from backdrop.config import PARAMS_ENV, load_params, params_path

    if isinstance(params, Params):
        return params, True
    if params is not None or os.environ.get(PARAMS_ENV) or params_path().is_file():
        return load_params(params), True
    defaults = Params()
    if not os.environ.get(MONITORING_DB_ENV):
        defaults = defaults.model_copy(update={"monitoring": defaults.monitoring.model_copy(
            update={"record_predictions": False})})
    return defaults, False


def normalize_spec(model: str) -> str:
    """rembg's model names → backdrop specs (`u2netp` → `official:u2netp`); others unchanged."""
    return ALIASES.get(model.strip(), model.strip())


@dataclass(frozen=True)
class Choice:
    spec: str
    why: str  # "asked for" | "the project's champion" | "no champion ..."

    def notice(self) -> str:
        return f"model: {self.spec} ({self.why})"


def pick_model(model: str | None, params: Params, in_project: bool) -> Choice:
    """`model` if given, else the project's champion when its registry holds one, else `official:u2netp`."""
    if model:
        return Choice(normalize_spec(model), "asked for")
    if in_project:
        alias = params.register_.alias
        found = registry_has(registry_uri(alias, params), params)
        if found or (found is None and _has_mlflow()):
            return Choice(alias, f"the project's {registry_uri(alias, params)}")
        return Choice(STOCK, "the stock model: this project has no registered champion yet")
    return Choice(STOCK, "the stock model: no --model given and no project here")


def _has_mlflow() -> bool:
    from importlib.util import find_spec

    return find_spec("mlflow") is not None


def load(choice: Choice, params: Params, engine: str | None = None, precision: str | None = None,
         threads: int | None = None):
    """The segmenter of a choice; a champion that cannot be loaded (a registry that does not answer)
    falls back to the stock model with a warning, a model asked for by name never does."""
    from backdrop.serving.segmenter import load_segmenter

    try:
        return load_segmenter(choice.spec, engine or params.remove.engine, precision, params=params,
                              threads=threads), choice
    except NoModelError as exc:
        if choice.why == "asked for" or choice.spec == STOCK:
            raise
        log.warning("%s; using %s", exc, STOCK)
        fallback = Choice(STOCK, f"the stock model: the champion could not be loaded ({exc})")
        return load_segmenter(STOCK, engine or params.remove.engine, precision, params=params,
                              threads=threads), fallback


class Session:
    """A loaded model and its output options, for repeated cut-outs (made by `new_session`).
    `remove` runs one photo at a time on all cores (thread-safe); `remove_many` runs a sequence on
    parallel single-threaded lanes, as `backdrop remove` does with a folder, for throughput."""

    def __init__(self, segmenter, choice: Choice, params: Params, in_project: bool = False):
        from backdrop.serving.outputs import OutputOptions

        self.segmenter, self.choice, self.params, self.in_project = segmenter, choice, params, in_project
        self.options = OutputOptions.from_params(params.serve)

    @property
    def model(self) -> str:
        return self.choice.spec

    def remove(self, image, *, format: str = "rgba", alpha_matting: bool | None = None):  # noqa: A002 — rembg's name
        """Cut out one image: bytes → PNG bytes (JPEG for `white`), a PIL image → a PIL image, a
        numpy array (H,W,3 or H,W,4, uint8) → an array (H,W,4 rgba, H,W mask, H,W,3 white).

        `format`: rgba | white | mask. `alpha_matting`: clean edges, so no backdrop colour stays in
        the cut-out's fringe (`outputs.tighten_alpha` + `decontaminate`; default `serve.clean_edges`)."""
        from backdrop.serving.base import available_cores

        opts = self._options(format, alpha_matting)
        photo, kind = _to_photo(image, self.params.serve.max_pixels)
        # one call at a time: its PNG deflates on every core
        return self._output(photo, kind, self.segmenter.probabilities(photo), format, opts, available_cores())

    def remove_many(self, images, *, format: str = "rgba", alpha_matting: bool | None = None):  # noqa: A002
        """Cut out a sequence of images; yields each output in order, as `remove` would return it.

        The photos run on `remove.workers` single-threaded lanes (default: every core), decoding and
        running ahead of the one being finished, the way `backdrop remove` runs a folder: on 2 cores
        1.3–1.4× the images/s of calling `remove` in a loop (`bench/rembg_bench.py`). A bad image
        raises ValueError naming its position; the outputs before it have been yielded."""
        from backdrop.serving.base import lane_count

        opts = self._options(format, alpha_matting)
        images = list(images)
        kinds: dict[int, str] = {}

        def load(i: int):
            photo, kinds[i] = _to_photo(images[i], self.params.serve.max_pixels)
            return photo

        lanes = lane_count(self.params)
        for i, photo, pred in self.segmenter.stream(range(len(images)), load, 1, lanes):
            if isinstance(photo, BaseException):
                raise ValueError(f"image {i}: {photo}") from photo
            yield self._output(photo, kinds.pop(i), pred.prob, format, opts)

    def _options(self, format: str, alpha_matting: bool | None):  # noqa: A002
        from dataclasses import replace

        if format not in FORMATS:
            raise ValueError(f"format {format!r} is not one of {', '.join(FORMATS)}")
        return self.options if alpha_matting is None else replace(self.options, clean_edges=alpha_matting)

    @staticmethod
    def _output(photo, kind: str, prob, format: str, opts, png_parts: int = 1):  # noqa: A002
        """The published output of one photo, as the kind it came in (bytes, PIL image or array)."""
        from backdrop.serving.outputs import compose, encode, finish

        prob, shown = finish(photo, prob, format, opts)
        out = compose(shown, prob, format, opts)
        if kind == "bytes":
            return encode(out, format, parts=png_parts)[0]
        if kind == "array":
            import numpy as np

            return np.asarray(out)
        return out


def _to_photo(image, max_pixels: int):
    """(RGB PIL photo, the kind it came as: bytes | pil | array)."""
    import numpy as np
    from PIL import Image

    if isinstance(image, bytes | bytearray | memoryview):
        from backdrop.serving.images import decode

        return decode(bytes(image), max_pixels), "bytes"
    if isinstance(image, Image.Image):
        if image.width * image.height > max_pixels:
            raise ValueError(f"{image.width}x{image.height} exceeds serve.max_pixels ({max_pixels})")
        return (image if image.mode == "RGB" else image.convert("RGB")), "pil"
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
            raise ValueError(f"array of shape {image.shape} and dtype {image.dtype}: expected uint8 (H,W), "
                             "(H,W,3) or (H,W,4)")
        return Image.fromarray(image).convert("RGB"), "array"
    raise TypeError(f"cannot cut out a {type(image).__name__}: pass bytes, a PIL image or a numpy array")


def new_session(model: str | None = None, *, params: Params | str | Path | None = None,
                precision: str | None = None, threads: int | None = None, engine: str | None = None) -> Session:
    """Load a model once for many `session.remove(...)` calls (`model=None`: see `pick_model`)."""
    p, in_project = context(params)
    segmenter, choice = load(pick_model(model, p, in_project), p, engine, precision, threads)
    log.info("%s", choice.notice())
    return Session(segmenter, choice, p, in_project)


_SESSIONS: dict[tuple, Session] = {}


def remove(image, *, model: str | None = None, format: str = "rgba",  # noqa: A002 — rembg's name
           alpha_matting: bool | None = None, session: Session | None = None):
    """Cut out one image and return the same kind (bytes, PIL image or numpy array): see
    `Session.remove`. The model loads once per process and `model` (`session=` reuses one you made)."""
    if session is None:
        key = (model, os.environ.get("BACKDROP_PARAMS"), str(Path.cwd()))
        session = _SESSIONS.get(key)
        if session is None:
            session = _SESSIONS[key] = new_session(model)
    return session.remove(image, format=format, alpha_matting=alpha_matting)
