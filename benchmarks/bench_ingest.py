"""Ingest throughput into a real S3 server, side by side with s5cmd and a sequential put_object loop.

Run: ``make bench`` (all benchmarks) or ``python -m benchmarks.bench_ingest [--posters N]``.
One SeaweedFS server on 127.0.0.1 serves every contender in the same run, each into its own bucket.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3

from postergenre.snapshots import ingest
from postergenre.storage import open_store
from postergenre.synth import generate_snapshot

# The S3 launcher is test support, kept out of the shipped package (tests/support): import it as the tests do.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.seaweed import SeaweedServer


def _s5cmd(server: SeaweedServer, *args: str) -> float:
    exe = shutil.which("s5cmd", path=str(Path(sys.executable).parent)) or "s5cmd"
    start = time.perf_counter()
    subprocess.run(
        [exe, "--endpoint-url", server.endpoint, *args],
        check=True,
        env={**os.environ, **server.env()},
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def _put_loop(server: SeaweedServer, bucket: str, files: list[Path]) -> float:
    client = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name="us-east-1",
    )
    start = time.perf_counter()
    for path in files:
        client.put_object(Bucket=bucket, Key=f"posters/{path.name}", Body=path.read_bytes())
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--posters", type=int, default=5000)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="pg-bench-ingest-") as tmp, SeaweedServer() as server:
        export = Path(tmp) / "export"
        generate_snapshot(export, movies=args.posters, seed=7)
        files = sorted((export / "posters").iterdir())
        total_mb = sum(f.stat().st_size for f in files) / 1e6
        for bucket in ("ours", "s5cmd", "loop"):
            server.create_bucket(bucket)
        os.environ.update(server.env())

        store = open_store("s3://ours/store")
        first = ingest(str(export), store, snapshot_id="bench-1")
        again = ingest(str(export), store, snapshot_id="bench-2")  # same export, new id: no poster bytes

        t_s5cmd = _s5cmd(server, "cp", f"{export}/posters/*", "s3://s5cmd/posters/")
        t_sync = _s5cmd(server, "sync", f"{export}/posters/", "s3://s5cmd/posters/")
        t_loop = _put_loop(server, "loop", files)

    n = len(files)
    rows = [
        ("postergenre ingest (validate+hash+upload)", first["seconds"], n / first["seconds"]),
        ("s5cmd cp", t_s5cmd, n / t_s5cmd),
        ("sequential put_object loop", t_loop, n / t_loop),
        ("postergenre re-ingest (unchanged export)", again["seconds"], None),
        ("s5cmd sync (nothing to do)", t_sync, None),
    ]
    print(f"\n== ingest of {n} posters ({total_mb:.1f} MB) into SeaweedFS on 127.0.0.1 ==")
    for name, seconds, rate in rows:
        rate_text = f"{rate:8.0f} files/s" if rate else " " * 15
        print(f"  {name:<44} {seconds:7.2f} s  {rate_text}")
    ratios = {
        "ingest_vs_s5cmd_throughput": t_s5cmd / first["seconds"],
        "ingest_vs_put_loop_throughput": t_loop / first["seconds"],
        "reingest_vs_s5cmd_sync_time": again["seconds"] / t_sync,
        "reingest_uploaded_bytes": again["uploaded_bytes"],
    }
    print(
        f"  ratio ingest/s5cmd throughput      {ratios['ingest_vs_s5cmd_throughput']:.2f}x  (target >= 0.7)"
    )
    print(f"  ratio ingest/put-loop throughput   {ratios['ingest_vs_put_loop_throughput']:.2f}x")
    print(f"  re-ingest time / s5cmd sync time   {ratios['reingest_vs_s5cmd_sync_time']:.2f}x  (target <= 3)")
    print(f"  re-ingest poster bytes uploaded    {again['uploaded_bytes']}  (target 0)")
    return ratios


if __name__ == "__main__":
    main()
