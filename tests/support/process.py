"""What the project's test servers (SeaweedFS, PostgreSQL, the Airflow stack) share: free loopback ports and
being a context manager that always stops what it started."""

from __future__ import annotations

import socket
from abc import ABC, abstractmethod
from contextlib import ExitStack
from types import TracebackType
from typing import Self


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free right now on 127.0.0.1 (held open together so none repeats)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


class ManagedServer(ABC):
    """``with Server() as s: ...`` starts it and stops it on the way out, also when the body raised."""

    @abstractmethod
    def start(self) -> Self: ...

    @abstractmethod
    def stop(self) -> None: ...

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
