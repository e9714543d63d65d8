"""Read-only OpenAPI docs at ``/docs``, served entirely from this server (no CDN: it may have no internet).

The Swagger UI files come from the ``swagger-ui-bundle`` package (a dependency; its ``swagger_ui_path``
folder). The page loads ``/docs/assets/swagger-ui-bundle.js`` and ``swagger-ui.css`` from there, and
``/static/docs.js`` (this package) starts the UI on ``/openapi.json`` with every "Try it out" button
switched off (``supportedSubmitMethods: []``): the docs describe the API, they do not call it. Without
the package ``/docs`` is a short page pointing at ``/openapi.json``.
"""

from __future__ import annotations

import html
from pathlib import Path

ASSETS = {  # the only files served from the package (name -> media type)
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
}
DOCS_HEADERS = {
    # Swagger UI sets inline styles and uses data: images in its CSS; scripts stay 'self' only
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def assets_dir() -> Path | None:
    """The Swagger UI folder of the installed ``swagger-ui-bundle`` package, or None."""
    try:
        import swagger_ui_bundle
    except ImportError:
        return None
    path = Path(getattr(swagger_ui_bundle, "swagger_ui_path", ""))
    return path if (path / "swagger-ui-bundle.js").is_file() else None


def docs_page(title: str) -> str:
    t = html.escape(title, quote=True)
    if assets_dir() is None:
        return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{t} - API</title></head><body>"
                "<h1>API</h1><p>The interactive docs need the <code>swagger-ui-bundle</code> package "
                "(<code>pip install swagger-ui-bundle</code>). The OpenAPI schema is at "
                "<a href=\"/openapi.json\">/openapi.json</a>; the routes are described in docs/service.md.</p>"
                "</body></html>")
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{t} - API</title>"
            "<link rel=stylesheet href=\"/docs/assets/swagger-ui.css\"></head><body>"
            "<div id=\"swagger-ui\"></div>"
            "<script src=\"/docs/assets/swagger-ui-bundle.js\"></script>"
            "<script src=\"/static/docs.js\"></script></body></html>")
