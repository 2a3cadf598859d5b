"""backdrop: takes the background out of e-commerce product photos.

    >>> import backdrop
    >>> cut = backdrop.remove(open("photo.jpg", "rb").read())   # doctest: +SKIP
    >>> session = backdrop.new_session("u2netp")                  # doctest: +SKIP

`remove`, `new_session` and `Session` live in `backdrop.serving.cutout` (examples there, doctested)
and are imported on first use: `import backdrop` itself loads nothing heavy and has no side effects,
so the CLI and the Airflow DAGs import stage modules lazily and stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Session", "new_session", "remove"]

if TYPE_CHECKING:
    from backdrop.serving.cutout import Session, new_session, remove


def __getattr__(name: str) -> Any:
    """The cut-out API on first use (PEP 562)."""
    if name in __all__:
        from backdrop.serving import cutout

        return getattr(cutout, name)
    raise AttributeError(f"module 'backdrop' has no attribute {name!r}")
