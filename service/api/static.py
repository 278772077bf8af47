"""The chart page, the admin page and their assets, served from ``frontend/``.

``/vendor/lightweight-charts.js`` comes from the npm package installed in
``frontend/node_modules`` (``make run`` installs it); ``/charting_library/`` serves
TradingView's licensed library when a user has put it into ``frontend/charting_library``.
"""

from __future__ import annotations

from pathlib import Path

from litestar import Router, get
from litestar.exceptions import NotFoundException
from litestar.response import File
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler

FRONTEND_DIR = Path(__file__).resolve().parents[2] / "frontend"
LIGHTWEIGHT_CHARTS = "node_modules/lightweight-charts/dist/lightweight-charts.standalone.production.js"


def _file(relative: str, media_type: str | None = None) -> File:
    path = FRONTEND_DIR / relative
    if not path.is_file():
        raise NotFoundException(f"{relative} is missing; run 'make install' to fetch the frontend packages")
    return File(path, media_type=media_type, content_disposition_type="inline")


@get("/", include_in_schema=False)
async def index_page() -> File:
    return _file("index.html", "text/html")


@get("/admin", include_in_schema=False)
async def admin_page() -> File:
    return _file("admin.html", "text/html")


@get("/vendor/lightweight-charts.js", include_in_schema=False)
async def lightweight_charts() -> File:
    return _file(LIGHTWEIGHT_CHARTS, "text/javascript")


@get("/api/frontend", include_in_schema=False, sync_to_thread=False)
def frontend_info() -> dict[str, bool]:
    """What the chart page can use: ``chartingLibrary`` when the licensed TradingView
    library is installed. The page asks here instead of probing the library's file, whose
    404 would be a console error on every load of a page without it."""
    return {"chartingLibrary": (FRONTEND_DIR / "charting_library" / "charting_library.standalone.js").is_file()}


def static_routes() -> list[ControllerRouterHandler]:
    routes: list[ControllerRouterHandler] = [index_page, admin_page, lightweight_charts, frontend_info]
    routes.append(create_static_files_router(path="/static", directories=[FRONTEND_DIR], include_in_schema=False))
    routes.append(
        create_static_files_router(
            path="/charting_library", directories=[FRONTEND_DIR / "charting_library"], include_in_schema=False
        )
    )
    return routes


__all__ = ["static_routes", "FRONTEND_DIR", "Router"]
