"""`/docs` (Swagger UI) and `/redoc` from files inside the installed packages, so they work offline.

FastAPI's defaults load both from a CDN: blank pages on a shop's offline network. The files come
from the pinned `fastapi-offline` wheel (its `static/` folder); only its files are used, the app
stays a plain FastAPI.
"""

from __future__ import annotations

from importlib import resources

PREFIX = "/docs-static"
FILES = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
         "redoc.standalone.js": "text/javascript", "favicon.png": "image/png"}


def add_offline_docs(app, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Serve the docs pages and their assets from the package (create the app with docs_url=None, redoc_url=None)."""
    from fastapi import HTTPException
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
    from fastapi.responses import Response

    static = resources.files("fastapi_offline").joinpath("static")

    @app.get(f"{PREFIX}/{{name}}", include_in_schema=False)
    def docs_asset(name: str):
        if name not in FILES:
            raise HTTPException(404)
        return Response(static.joinpath(name).read_bytes(), media_type=FILES[name],
                        headers={"Cache-Control": "public, max-age=86400"})

    @app.get(docs_url, include_in_schema=False)
    def swagger():
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} — API docs",
                                   swagger_js_url=f"{PREFIX}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{PREFIX}/swagger-ui.css",
                                   swagger_favicon_url=f"{PREFIX}/favicon.png")

    @app.get(redoc_url, include_in_schema=False)
    def redoc():
        return get_redoc_html(openapi_url=app.openapi_url, title=f"{app.title} — ReDoc",
                              redoc_js_url=f"{PREFIX}/redoc.standalone.js", redoc_favicon_url=f"{PREFIX}/favicon.png",
                              with_google_fonts=False)
