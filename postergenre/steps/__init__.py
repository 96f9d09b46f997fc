"""The pipeline's stages as plain functions, one module per DAG stage, shared by the DAGs, the CLI and tests.

Data plane: ``ingest``, ``prepare``, ``drift``. Model plane (one retrain run, everything under ``runs/<id>/``,
spelled only by :mod:`postergenre.steps.layout`): ``start`` -> ``embed`` -> ``tune`` (plan, trial x N, Hyperband
halving rounds, select) -> ``train`` -> ``finetune`` -> ``evaluate`` -> ``promote`` -> ``report``; ``run`` chains
them in-process. Each step returns a small JSON-able dict (ids, URIs, metrics), never arrays, and imports
TensorFlow only inside the function that needs it.
"""
