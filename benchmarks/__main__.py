"""``python -m benchmarks``: run every benchmark in turn; each prints its side-by-side table and ratios."""

from benchmarks import bench_finetune, bench_ingest, bench_labels, bench_quality, bench_training

if __name__ == "__main__":
    bench_labels.main()
    bench_ingest.main([])
    bench_training.main([])
    bench_finetune.main([])
    __import__("benchmarks.bench_orchestration", fromlist=["main"]).main([])  # starts S3 + Airflow
    bench_quality.main([])
