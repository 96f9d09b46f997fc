"""The monitoring UI the Airflow plugin mounts: ``queries`` reads, ``charts`` draws SVG, ``render`` fills the
Jinja2 templates in ``templates/``, ``app`` holds the FastAPI routes (:func:`postergenre.ui.app.create_app`)."""
