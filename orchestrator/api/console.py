"""The web console: static files under /console/, served without auth.

The page itself holds no data: it asks for an API key once and sends it on
every fetch of /api/v1. Files are plain HTML, CSS and ES modules (no build
step, nothing from a CDN), read from `console_static/` and kept in memory
with an ETag; every response says `no-cache`, so a browser revalidates
(a cheap 304) and never runs a stale app.js against a newer index.html.
The Content-Security-Policy allows only this origin: no inline script, no
remote code, no framing.
"""

from __future__ import annotations

import hashlib
import mimetypes
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

__all__ = ["router", "STATIC_DIR"]

STATIC_DIR = Path(__file__).with_name("console_static")
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
}
_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
}
_files: dict[str, tuple[float, bytes, str]] = {}  # name -> (mtime, body, etag)

router = APIRouter(include_in_schema=False)


def _read(name: str) -> tuple[bytes, str] | None:
    """The file's bytes and ETag, re-read when it changed on disk; None unless it is a file of the directory."""
    if not name or name.startswith(".") or "/" in name or "\\" in name:
        return None  # flat directory: no path can climb out of it
    path = STATIC_DIR / name
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return None
    cached = _files.get(name)
    if cached is None or cached[0] != mtime:
        body = path.read_bytes()
        cached = (mtime, body, '"' + hashlib.sha256(body).hexdigest()[:20] + '"')
        _files[name] = cached
    return cached[1], cached[2]


def _serve(name: str, request: Request) -> Response:
    found = _read(name)
    if found is None:
        return Response("not found\n", status_code=404, media_type="text/plain")
    body, etag = found
    headers = {**_HEADERS, "ETag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    suffix = Path(name).suffix
    media_type = _TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
    return Response(body, media_type=media_type, headers=headers)


@router.get("/console")
def console_root() -> RedirectResponse:
    return RedirectResponse("/console/", status_code=307)


@router.get("/console/")
def console_index(request: Request) -> Response:
    return _serve("index.html", request)


@router.get("/console/{name}")
def console_file(name: str, request: Request) -> Response:
    return _serve(name, request)
