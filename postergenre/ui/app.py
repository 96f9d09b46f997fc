"""The monitoring pages of postergenre, served by the Airflow api-server under ``/postergenre``.

``plugins/postergenre_plugin.py`` mounts :func:`create_app` into the api-server. Everything here reads what the
pipeline already writes (metadata DB, data store, model registry) and never writes, so a watcher can open it at
any time. Every route needs an Airflow login: the api-server serves plugin apps without one unless asked.

Pages are server-rendered HTML with inline SVG charts; the same data is available as JSON under
``/postergenre/api/``. Links are relative so that the pages work behind a ``[api] base_url`` prefix and inside
the Airflow UI's iframe. Each section loads on its own, so an unreachable store or an empty home shows a
message in that section instead of failing the page.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse

from postergenre import registry
from postergenre.config import Settings, get_settings
from postergenre.resources import data_store, registry_store
from postergenre.storage import NotFound
from postergenre.ui import charts, queries
from postergenre.ui.render import error_page, page, section

DASHBOARD_TITLE = "postergenre: poster genres in production"


def _or_404(load: Callable[[], Any]) -> Any:
    """``load()``; a run or model that does not exist is a 404, whatever else fails is left to the caller."""
    try:
        return load()
    except (NotFound, registry.NotRegistered, registry.InvalidName) as err:
        raise HTTPException(404, str(err)) from err


def _json(load: Callable[[], Any]) -> Any:
    try:
        return _or_404(load)
    except queries.SOURCE_ERRORS as err:
        raise HTTPException(503, str(err)) from err


def _auth_dependency() -> Any:
    """Airflow's own check that a logged-in user (JWT cookie or bearer token) may use the UI at all."""
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.core_api.security import requires_access_view

    return Depends(requires_access_view(AccessView.WEBSITE))


def _login_url(next_url: str) -> str:
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager().get_url_login(next_url=next_url)


# ------------------------------------------------------------------------------------ section contexts


def champions_context(settings: Settings) -> dict:
    store = registry_store(settings)
    return {"models": queries.models_overview(store), "moves": queries.alias_log(store)}


def drift_context(settings: Settings) -> dict:
    drift = queries.drift_overview(settings)
    drift_charts, drawn = charts.drift_charts(drift) if drift["reports"] else ([], {})
    return {"reports": drift["reports"], "charts": drift_charts, "drawn": drawn}


def genres_context(settings: Settings) -> dict:
    history = queries.genre_share_history(settings)
    colours = charts.genre_colours(history["genres"])
    share_charts = charts.share_charts(history, colours) if history["snapshots"] else []
    return {**history, "colours": colours, "charts": share_charts}


def latest_run_context(settings: Settings) -> dict:
    run, runs = queries.latest_run(data_store(settings))
    return {"run": run, "runs": runs}


# ------------------------------------------------------------------------------------ app


def create_app(settings: Settings | None = None) -> FastAPI:
    """The FastAPI app the plugin mounts at ``/postergenre``; ``settings`` default to the process's own."""
    app = FastAPI(
        title="postergenre monitoring",
        dependencies=[_auth_dependency()],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    def conf() -> Settings:
        return settings or get_settings()

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Any:
        """Browsers get a readable page (with the way to log in); API clients get Airflow's JSON errors."""
        if "text/html" not in request.headers.get("accept", ""):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        login = _login_url(str(request.url)) if exc.status_code in (401, 403) else None
        return HTMLResponse(error_page(exc.status_code, str(exc.detail), login), status_code=exc.status_code)

    @app.get("/", response_class=HTMLResponse)
    def dashboard() -> str:
        sections = [
            section("champions.html", "Champions", lambda: champions_context(conf()), root=""),
            section("drift.html", "Genre drift", lambda: drift_context(conf()), root=""),
            section("genres.html", "Genre shares", lambda: genres_context(conf()), root=""),
            section("run.html", "Latest run report", lambda: latest_run_context(conf()), root=""),
        ]
        return page(DASHBOARD_TITLE, sections, root="")

    # A page of one model or run is a 404 when it does not exist; a source that fails, or a record its
    # template cannot use, shows in the page like a dashboard section.
    @app.get("/models/{name:path}", response_class=HTMLResponse)
    def model_page(name: str) -> str:
        root = "../" * (name.count("/") + 1)
        body = section(
            "model.html",
            "Versions",
            lambda: _or_404(lambda: queries.model_detail(registry_store(conf()), name)),
            root=root,
        )
        return page(f"postergenre model {name}", [body], root=root, back=True)

    @app.get("/runs/{run_id}", response_class=HTMLResponse)
    def run_page(run_id: str) -> str:
        def load() -> dict:
            return {"run": _or_404(lambda: queries.run_report(data_store(conf()), run_id)), "runs": []}

        body = section("run.html", "Run report", load, root="../")
        return page(f"postergenre run {run_id}", [body], root="../", back=True)

    @app.get("/api/snapshots")
    def api_snapshots(limit: int = queries.SNAPSHOT_HISTORY_LIMIT) -> dict:
        return _json(lambda: queries.genre_share_history(conf(), max(1, min(limit, 1000))))

    @app.get("/api/drift")
    def api_drift() -> dict:
        return _json(lambda: queries.drift_overview(conf()))

    @app.get("/api/models")
    def api_models() -> dict:
        def load() -> dict:
            store = registry_store(conf())
            return {"models": queries.models_overview(store), "alias_log": queries.alias_log(store)}

        return _json(load)

    @app.get("/api/models/{name:path}")
    def api_model(name: str) -> dict:
        return _json(lambda: queries.model_detail(registry_store(conf()), name))

    @app.get("/api/runs")
    def api_runs() -> dict:
        return _json(lambda: {"runs": queries.list_runs(data_store(conf()))})

    @app.get("/api/runs/latest")
    def api_latest_run() -> dict:
        run, _ = _json(lambda: queries.latest_run(data_store(conf())))
        if run is None:
            raise HTTPException(404, "no run report yet")
        return run

    @app.get("/api/runs/{run_id}")
    def api_run(run_id: str) -> dict:
        return _json(lambda: queries.run_report(data_store(conf()), run_id))

    return app
