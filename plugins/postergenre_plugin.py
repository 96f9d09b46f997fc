"""Airflow plugin: the postergenre monitoring pages in the api-server, with a link in the UI's navigation.

Thin on purpose: the app lives in :mod:`postergenre.webapp` (tested without Airflow's server). The external
view embeds the page in the Airflow UI (an iframe at ``/plugin/postergenre``); its ``href`` is relative to the
UI's base URL, so the link also works under an ``[api] base_url`` prefix.
"""

from airflow.plugins_manager import AirflowPlugin

from postergenre.webapp import URL_PREFIX, create_app


class PostergenrePlugin(AirflowPlugin):
    name = "postergenre"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "postergenre monitoring"}]
    external_views = [
        {
            "name": "Poster genres",
            "href": f"{URL_PREFIX.lstrip('/')}/",
            "destination": "nav",
            "url_route": "postergenre",
            "nav_top_level": True,
        }
    ]
