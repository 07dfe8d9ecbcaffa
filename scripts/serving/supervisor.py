"""One machine: the application under uvicorn's process supervisor, one worker process per replica.

Every worker accepts on the one bound socket and has its own model and batcher (LocalService). The
supervisor pings each worker and starts a new one in place of one that died or hangs; a worker
whose model cannot load exits with STARTUP_FAILURE, and the supervisor then stops the server.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from scripts.serving.http_app import create_app
from scripts.serving.service import STARTUP_FAILURE, LocalService
from scripts.serving.settings import ServeError, ServeSettings, replica_environment


def worker_app(settings: ServeSettings) -> FastAPI:
    """The application of one uvicorn worker process (uvicorn calls this factory in each new worker)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    service = LocalService(settings)
    return create_app(service, settings, on_startup=service.start, on_shutdown=service.stop)


@dataclass
class LocalServer:
    """A bound socket and uvicorn's supervisor of its worker processes, for `serve` on this machine."""

    config: Any
    socket: Any
    supervisor: Any

    @property
    def port(self) -> int:
        return self.socket.getsockname()[1]

    def worker_pids(self) -> list[int]:
        return [process.pid for process in self.supervisor.processes]

    def failed_to_start(self) -> bool:
        return any(process.exitcode == STARTUP_FAILURE for process in self.supervisor.processes)


def local_server(settings: ServeSettings, host: str, port: int, replicas: int, access_log: bool = False) -> LocalServer:
    """The socket bound (port 0: a free one) and the supervisor of `replicas` worker processes, not yet started.

    Every worker accepts on the one socket and has its own model and batcher. uvicorn's supervisor pings
    each worker and starts a new one in place of one that died or hangs.
    """
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    os.environ.update(replica_environment())  # the spawned workers inherit it
    config = uvicorn.Config(
        functools.partial(worker_app, settings),
        factory=True,
        host=host,
        port=port,
        workers=replicas,
        access_log=access_log,
        # Loading a model holds the GIL for seconds at a time: give a worker that long to answer a ping.
        timeout_worker_healthcheck=30,
        timeout_graceful_shutdown=10,
        log_level="info",
    )
    try:
        sock = config.bind_socket()
    except SystemExit:
        raise ServeError(f"Cannot listen on {host}:{port}: the port is taken or the address is not this machine's. "
                         "Choose another --port (0: any free port) or --host.") from None  # fmt: skip
    return LocalServer(config, sock, Multiprocess(config, sockets=[sock]))
