"""Serve a spaCy NER pipeline, such as the packaged en_bert_ner, over HTTP: an API, a page to try it, batching.

    python -m scripts.tools.serve en_bert_ner --replicas 1 --port 8000
    python -m scripts.tools.serve training/model-best --backend onnx-int8
    python -m scripts.tools.serve en_bert_ner --ray --replicas 2 --cpus-per-replica 1
    python -m scripts.tools.serve en_bert_ner --address auto --replicas 8 --host 0.0.0.0

`POST /ner` takes {"text": "..."} or {"texts": [...]} and answers each text as `annotate` writes
it, {"text": ..., "entities": [{"start", "end", "label", "text", ...}]}; `GET /healthz` is 200 once
the model is loaded; `/` is a page that highlights the entities of a pasted text; `/docs` is the
OpenAPI schema. Concurrent requests are batched into one nlp.pipe call (--max-batch-size texts,
waiting at most --max-wait-ms for more); a request that finds the queue full gets 503 at once.

On this machine (the default) uvicorn runs one worker process per replica and starts a new one in
place of one that dies. With --ray (a local Ray) or --address (a Ray cluster) the same application
runs as a Ray Serve deployment; `serve deploy configs/serve.yaml` deploys it from a config file.
It listens on 127.0.0.1 unless --host says otherwise.
"""

from __future__ import annotations

import ipaddress
import socket

import typer
from wasabi import msg

from scripts.lib.cli import BACKEND_OPTION, Backend, fail
from scripts.lib.machine import available_cpus
from scripts.lib.pipeline_loading import PipelineLoadError, backend_overrides, pipeline_location
from scripts.serving.settings import LOOPBACK, ServeError, ServeSettings, settings_summary
from scripts.serving.supervisor import local_server

DEFAULTS = ServeSettings(model="")


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def check_model(model: str, backend: str) -> None:
    """In a second, before any process starts: the model exists here and has the backend option."""
    location = pipeline_location(model)
    backend_overrides(model, location, backend)


def main(
    model: str = typer.Argument(..., help="Installed pipeline package (en_bert_ner) or pipeline folder"),
    host: str = typer.Option(LOOPBACK, help="Address to listen on; 0.0.0.0 opens it to the network"),
    port: int = typer.Option(8000, min=0, max=65535, help="Port to listen on (0: any free port)"),
    replicas: int = typer.Option(1, min=1, help="Copies of the model, each in its own process (or Ray actor)"),
    cpus_per_replica: int = typer.Option(
        0, min=0, help="CPUs (and torch threads) per replica; 0: this machine's CPUs / replicas"
    ),
    backend: Backend = BACKEND_OPTION,
    max_batch_size: int = typer.Option(DEFAULTS.max_batch_size, help="Most texts in one nlp.pipe call"),
    max_wait_ms: float = typer.Option(DEFAULTS.max_wait_ms, help="How long a batch waits to fill (ms)"),
    max_queue: int = typer.Option(DEFAULTS.max_queue, help="Texts (Ray: requests) waiting per replica; beyond: 503"),
    max_texts: int = typer.Option(DEFAULTS.max_texts, help="Most texts in one request"),
    max_text_chars: int = typer.Option(DEFAULTS.max_text_chars, help="Most characters in one text"),
    max_body_bytes: int = typer.Option(DEFAULTS.max_body_bytes, help="Most bytes in one request body"),
    timeout_s: float = typer.Option(DEFAULTS.timeout_s, help="A request not answered in this time gets 503"),
    ray: bool = typer.Option(False, "--ray", help="Run on Ray Serve, on a Ray started on this machine"),
    address: str = typer.Option(None, help="Ray cluster to deploy on (e.g. auto; implies --ray)"),
    access_log: bool = typer.Option(False, "--access-log", help="Log every request (uvicorn only)"),
) -> None:
    try:
        chosen = backend.value
        threads = cpus_per_replica or max(1, available_cpus() // replicas)
        settings = ServeSettings(
            model,
            chosen,
            max_batch_size=max_batch_size,
            max_wait_ms=max_wait_ms,
            max_queue=max_queue,
            max_texts=max_texts,
            max_text_chars=max_text_chars,
            max_body_bytes=max_body_bytes,
            timeout_s=timeout_s,
            torch_threads=threads,
        )
        if not address:  # on a cluster the model must be on the nodes, not necessarily here
            check_model(model, chosen)
    except (ServeError, PipelineLoadError) as err:
        fail("Cannot start the server", err)
    if not is_loopback(host):
        msg.warn(f"Listening on {host}: anyone who can reach this machine can use the model. There is no "
                 "authentication: put a proxy with one in front of it.")  # fmt: skip
    engine = "Ray Serve" if (ray or address) else "uvicorn"

    def announce(bound_port: int) -> None:
        msg.good(
            f"Serving {model} on http://{host}:{bound_port} ({engine}, {replicas} replica(s) x {threads} CPU(s)): "
            f"POST /ner, GET /healthz, the page at /, the API at /docs. Ctrl+C stops it."
        )
        msg.text(f"Settings: {settings_summary(settings)}")

    if ray or address:
        from scripts.serving.ray_app import serve_on_ray  # Ray takes seconds to import: only when it runs

        ray_port = port or free_port(host)
        try:
            serve_on_ray(settings, host, ray_port, replicas, address, on_ready=lambda: announce(ray_port))
        except ServeError as err:
            fail("The server stopped", err)
        except KeyboardInterrupt:
            pass
        return
    try:
        server = local_server(settings, host, port, replicas, access_log)
    except ServeError as err:
        fail("Cannot start the server", err)
    announce(server.port)
    server.supervisor.run()
    if server.failed_to_start():
        fail("The server stopped", "A worker could not load the model: the log above says why.")


if __name__ == "__main__":
    typer.run(main)
