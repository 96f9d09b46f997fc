"""Real servers (SeaweedFS S3, PostgreSQL) started on loopback for tests, benchmarks and local runs."""
