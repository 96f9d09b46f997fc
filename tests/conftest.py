import os

# Keep TensorFlow quiet and single-process friendly on the 2-core CI machine.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

pytest_plugins = ["fixtures.airflow", "fixtures.s3", "fixtures.postgres", "fixtures.common"]
