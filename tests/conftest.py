import os

# Keep TensorFlow quiet and single-process friendly on the 2-core CI machine.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# The small test backbone is offered only where this is set (never in a production trigger form).
os.environ.setdefault("POSTERGENRE_TEST_BACKBONES", "1")

pytest_plugins = ["fixtures.airflow", "fixtures.s3", "fixtures.postgres", "fixtures.common"]
