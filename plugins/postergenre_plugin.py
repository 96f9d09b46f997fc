"""Airflow plugin: the postergenre monitoring pages in the api-server, with a link in the UI's navigation.

Thin on purpose: the app lives in :mod:`postergenre.ui`. Airflow imports every plugin module in each
process that loads plugins, including every task (for macros), so the app is only built on its first request
in the api-server: importing this file costs nothing but Airflow's own plugin base class.

The external view embeds the page in the Airflow UI (an iframe at ``/plugin/postergenre``); its ``href`` is
relative to the UI's base URL, so the link also works under an ``[api] base_url`` prefix.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/postergenre"


class LazyMonitoringApp:
    """An ASGI app that builds :func:`postergenre.ui.app.create_app` when it is first called."""

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if self._app is None:  # no await before the assignment: one event loop builds it once
            from postergenre.ui.app import create_app

            self._app = create_app()
        await self._app(scope, receive, send)


class PostergenrePlugin(AirflowPlugin):
    name = "postergenre"
    fastapi_apps = [{"app": LazyMonitoringApp(), "url_prefix": URL_PREFIX, "name": "postergenre monitoring"}]
    external_views = [
        {
            "name": "Genres",
            "href": f"{URL_PREFIX.lstrip('/')}/",
            "destination": "nav",
            "url_route": "postergenre",
            "nav_top_level": True,
        }
    ]
