"""`/docs` (Swagger UI) and `/redoc`, with their scripts served by meterbill itself, so the
documentation works with no network: Swagger UI from the `swagger-ui-bundle` package,
ReDoc from the file vendored in `meterbill/docs_assets` (redoc 2.5.4, MIT)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import swagger_ui_bundle
from fastapi import FastAPI, HTTPException
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

ASSETS = "/docs/assets"
_MEDIA = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


def _asset_files() -> dict[str, Path]:
    swagger = Path(swagger_ui_bundle.swagger_ui_path)
    files = {
        name: swagger / name
        for name in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png")
    }
    files["redoc.standalone.js"] = Path(
        str(resources.files("meterbill.docs_assets").joinpath("redoc.standalone.js"))
    )
    return files


def install_docs(app: FastAPI) -> None:
    """Add `/docs`, `/redoc` and their assets (kept out of the OpenAPI document)."""
    files = _asset_files()
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} — API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
            swagger_ui_parameters={"persistAuthorization": True},
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} — API",
            redoc_js_url=f"{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS}/favicon-32x32.png",
            with_google_fonts=False,
        )

    @app.get(ASSETS + "/{name}", include_in_schema=False)
    def asset(name: str) -> FileResponse:
        path = files.get(name)
        if path is None:
            raise HTTPException(404)
        return FileResponse(
            path,
            media_type=_MEDIA.get(path.suffix),
            headers={"Cache-Control": "public, max-age=86400"},
        )
