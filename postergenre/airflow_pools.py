"""The Airflow pool the production DAGs put accelerator-bound tasks in, and its default size.

Shared by the DAG files (through :mod:`postergenre.dag_support`), the local-dev Airflow (``make airflow``) and
the test stack, which create the pool. Kept free of any airflow import: the local-dev launcher reads it before
Airflow's configuration is in the environment. Production sizes the pool per deployment
(``POSTERGENRE_GPU_POOL_SLOTS`` in docker/docker-compose.yaml).
"""

GPU_POOL = "postergenre_gpu"
"""Airflow pool that serialises accelerator-bound tasks (training, tuning)."""
GPU_POOL_SLOTS = 1
"""One slot per GPU; the local and test Airflow have at most one."""
