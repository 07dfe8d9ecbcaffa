"""Load benchmark of the HTTP server: batching across callers against the naive server, and the offline ceiling.

On the CoNLL test sentences, one sentence per request, over loopback from this machine only, at
each concurrency (1, 8, 32, 128 closed-loop clients): requests/s, words/s and p50/p95/p99 latency of

- `served`: `python -m scripts.tools.serve` (uvicorn, one replica, its batcher gathering concurrent
  requests into one nlp.pipe call), started as a user starts it;
- `naive`: the same model behind a hand-written FastAPI/uvicorn server that runs one `nlp(text)` per
  request (a sync endpoint in FastAPI's thread pool, no batching across requests);

beside the offline figures of the same model, backend and threads in a fresh process: `nlp.pipe`
words/s (the ceiling) and `nlp(text)` one text at a time. The load generator (aiohttp on asyncio,
in this process) shares the cores with the server: its CPU time and the server's are measured at
every level. Then overload: a served server whose queue admits --overload-queue texts, driven at
4x that concurrency, must answer every request with 200 or 503 within its timeout, stay up, and
serve normally right after. Each level is bounded by --requests and --seconds.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import typer
from pydantic import BaseModel
from wasabi import msg

from scripts.benchmarks import harness
from scripts.lib.cli import BACKEND_OPTION, Backend, fail
from scripts.lib.machine import available_cpus, use_torch_threads
from scripts.lib.pipeline_loading import PipelineLoadError, pipeline_location
from scripts.lib.reports import machine_description, md_table, write_json_and_markdown

PROJECT_DIR = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
START_DEADLINE_S = 300
# The done criteria of the serving work: words/s and p99 at 32 callers, p50 of a lone caller.
TARGET_SPEEDUP_AT_32 = 1.3
TARGET_P50_RATIO_AT_1 = 1.5


class WaitPolicy(str, Enum):
    passive = "PASSIVE"
    active = "ACTIVE"


# --- the servers ------------------------------------------------------------------------


class NaiveBody(BaseModel):
    text: str


def naive_app(model: str, backend: str, threads: int) -> Any:
    """The server people write first: one nlp(text) per request, in FastAPI's thread pool."""
    from fastapi import FastAPI

    from scripts.lib.pipeline_loading import load_pipeline
    from scripts.lib.text_entities import entity_records

    use_torch_threads(threads)
    nlp = load_pipeline(model, backend=backend, needs=["ner"])
    app = FastAPI()

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ready"}

    @app.post("/ner")
    def ner(body: NaiveBody) -> dict:
        doc = nlp(body.text)
        return {"text": doc.text, "entities": entity_records(doc)}

    return app


def run_naive_server(model: str, backend: str, threads: int, port: int) -> None:
    """The naive server's process (spawned): uvicorn with one worker, no access log, as the served one."""
    import uvicorn

    uvicorn.run(naive_app(model, backend, threads), host=LOOPBACK, port=port, log_level="warning", access_log=False)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def wait_for_health(url: str, alive: Any, deadline_s: float = START_DEADLINE_S) -> None:
    import httpx

    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"the server behind {url} exited before it was ready; see its log above")
        try:
            if httpx.get(f"{url}/healthz", timeout=10).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the server behind {url} was not ready in {deadline_s} s")


@dataclass
class Server:
    url: str
    pid: int
    alive: Any  # () -> bool


@contextmanager
def served_server(model: str, backend: str, threads: int, options: list[str]) -> Iterator[Server]:
    """`python -m scripts.tools.serve` as a user starts it, in its own process group; stopped at the end."""
    command = [sys.executable, "-m", "scripts.tools.serve", model, "--port", "0", "--backend", backend,
               "--cpus-per-replica", str(threads), *options]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=PROJECT_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "COLUMNS": "300"}, start_new_session=True,
    )  # fmt: skip
    lines: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        deadline = time.monotonic() + START_DEADLINE_S
        url = ""
        while not url:
            match = re.search(r"Serving .*? on (http://[\d.]+:\d+)", "".join(lines).replace("\n", " "))
            if match:
                url = match.group(1)
            elif process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the served server did not start:\n" + "".join(lines)[-3000:])
            else:
                time.sleep(0.2)
        wait_for_health(url, lambda: process.poll() is None)
        yield Server(url, process.pid, lambda: process.poll() is None)
    finally:
        stop_process_group(process)


def stop_process_group(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the group this benchmark started
    except ProcessLookupError:
        pass
    process.wait(30)


@contextmanager
def naive_server(model: str, backend: str, threads: int) -> Iterator[Server]:
    port = free_port()
    context = multiprocessing.get_context("spawn")
    process = context.Process(target=run_naive_server, args=(model, backend, threads, port), daemon=False)
    process.start()
    try:
        url = f"http://{LOOPBACK}:{port}"
        wait_for_health(url, process.is_alive)
        yield Server(url, process.pid, process.is_alive)
    finally:
        process.terminate()
        process.join(30)
        if process.is_alive():
            process.kill()
            process.join()


# --- the load generator ------------------------------------------------------------------


def process_tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its live descendants (the server and its workers)."""
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


async def drive(
    url: str, texts: list[str], concurrency: int, max_requests: int, max_seconds: float, timeout_s: float
) -> list[tuple[int, float, int]]:
    """`concurrency` closed-loop clients, each posting the next text as soon as its last answer is in.

    Returns (status, seconds, words) per request; status 0: no answer (a connection error or the client
    timeout). Stops after max_requests requests or max_seconds, whichever comes first.
    """
    import aiohttp

    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_seconds
    results: list[tuple[int, float, int]] = []
    next_index = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:

        async def client() -> None:
            nonlocal next_index
            while next_index < max_requests and loop.time() < deadline:
                text = texts[next_index % len(texts)]
                next_index += 1
                started = time.perf_counter()
                try:
                    async with session.post(f"{url}/ner", json={"text": text}) as response:
                        await response.read()
                        status = response.status
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    status = 0
                results.append((status, time.perf_counter() - started, len(text.split())))

        await asyncio.gather(*(client() for _ in range(concurrency)))
    return results


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile: a value that was measured."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def run_level(
    server: Server, texts: list[str], concurrency: int, max_requests: int, max_seconds: float, timeout_s: float
) -> dict[str, Any]:
    """One concurrency level against a running server: throughput, latency, and who used the CPU."""
    cores = available_cpus()
    server_cpu = process_tree_cpu_seconds(server.pid)
    own_cpu = time.process_time()
    started = time.perf_counter()
    results = asyncio.run(drive(server.url, texts, concurrency, max_requests, max_seconds, timeout_s))
    wall = time.perf_counter() - started
    own_cpu = time.process_time() - own_cpu
    server_cpu = process_tree_cpu_seconds(server.pid) - server_cpu
    ok = [(seconds, words) for status, seconds, words in results if status == 200]
    latencies = [seconds for seconds, _ in ok]
    statuses: dict[str, int] = {}
    for status, _, _ in results:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {
        "concurrency": concurrency,
        "requests": len(results),
        "ok": len(ok),
        "statuses": statuses,
        "seconds": wall,
        "requests_per_second": len(ok) / wall,
        "words_per_second": sum(words for _, words in ok) / wall,
        "p50_ms": 1000 * percentile(latencies, 0.50),
        "p95_ms": 1000 * percentile(latencies, 0.95),
        "p99_ms": 1000 * percentile(latencies, 0.99),
        "max_ms": 1000 * max((seconds for _, seconds, _ in results), default=float("nan")),
        "generator_cpu_share": own_cpu / (wall * cores),
        "generator_cpu_ms_per_request": 1000 * own_cpu / max(1, len(results)),
        "server_cpu_share": server_cpu / (wall * cores),
    }


def measure_server(
    name: str, server: Server, texts: list[str], levels: list[int], max_requests: int, max_seconds: float,
    timeout_s: float, warm_up: int,
) -> dict[str, Any]:  # fmt: skip
    warm = run_level(server, texts, min(8, max(levels)), warm_up, max_seconds, timeout_s)
    if warm["ok"] == 0:
        raise RuntimeError(f"{name}: no warm-up request was answered with 200 (statuses {warm['statuses']})")
    measured = {}
    for concurrency in levels:
        level = run_level(server, texts, concurrency, max_requests, max_seconds, timeout_s)
        measured[str(concurrency)] = level
        msg.text(
            f"  {name} c={concurrency}: {level['words_per_second']:,.0f} words/s, p50 {level['p50_ms']:.0f} ms, "
            f"p99 {level['p99_ms']:.0f} ms, {level['ok']}/{level['requests']} ok {level['statuses']}, load generator "
            f"{100 * level['generator_cpu_share']:.0f}% of the CPUs, server {100 * level['server_cpu_share']:.0f}%"
        )
    return measured


# --- offline ------------------------------------------------------------------------------


def measure_offline(model: str, backend: str, texts: list[str], threads: int) -> dict[str, Any]:
    """Runs in a fresh process: nlp.pipe over all texts (the ceiling), then nlp(text) one text at a time."""
    from scripts.lib.pipeline_loading import load_pipeline

    use_torch_threads(threads)
    nlp = load_pipeline(model, backend=backend, needs=["ner"])
    words = harness.count_words(texts)

    def pipe(batch: list[str]) -> None:
        for _ in nlp.pipe(batch):
            pass

    def one_by_one(batch: list[str]) -> None:
        for text in batch:
            nlp(text)

    [pipe_seconds] = harness.timed_passes(pipe, texts, 1)
    [single_seconds] = harness.timed_passes(one_by_one, texts, 1)
    return {"pipe_words_per_second": words / pipe_seconds, "single_words_per_second": words / single_seconds}


# --- overload ----------------------------------------------------------------------------


def measure_overload(
    model: str, backend: str, threads: int, texts: list[str], queue: int, timeout_s: float, served_options: list[str],
    max_seconds: float,
) -> dict[str, Any]:  # fmt: skip
    """A served server whose queue admits `queue` texts, at 4x that concurrency; then a lone caller."""
    concurrency = 4 * queue
    options = [*served_options, "--max-queue", str(queue), "--max-texts", str(min(queue, 64)),
               "--timeout-s", str(timeout_s)]  # fmt: skip
    with served_server(model, backend, threads, options) as server:
        client_timeout = timeout_s + 5
        burst = run_level(server, texts, concurrency, 3 * concurrency, max_seconds, client_timeout)
        alive = server.alive()
        after = run_level(server, texts, 1, 20, max_seconds, client_timeout) if alive else None
        still_alive = server.alive()
    statuses = set(burst["statuses"])
    return {
        "queue": queue,
        "concurrency": concurrency,
        "timeout_s": timeout_s,
        "burst": burst,
        "after": after,
        "only_200_or_503": statuses <= {"200", "503"},
        "within_timeout": burst["max_ms"] <= 1000 * timeout_s,
        "server_survived": alive and still_alive,
        "normal_after": after is not None and after["ok"] == after["requests"] > 0,
    }


# --- the run -----------------------------------------------------------------------------


def checks(result: dict[str, Any]) -> dict[str, Any]:
    """The done criteria, where the levels they need were measured."""
    served, naive = result["served"], result["naive"]
    found: dict[str, Any] = {}
    if "32" in served:
        speedup = served["32"]["words_per_second"] / naive["32"]["words_per_second"]
        found["speedup_at_32"] = {"value": speedup, "target": TARGET_SPEEDUP_AT_32,
                                  "passed": speedup >= TARGET_SPEEDUP_AT_32}  # fmt: skip
        found["p99_at_32_not_above_naive"] = {
            "value": served["32"]["p99_ms"], "target": naive["32"]["p99_ms"],
            "passed": served["32"]["p99_ms"] <= naive["32"]["p99_ms"],
        }  # fmt: skip
    if "1" in served:
        ratio = served["1"]["p50_ms"] / naive["1"]["p50_ms"]
        found["p50_ratio_at_1"] = {"value": ratio, "target": TARGET_P50_RATIO_AT_1,
                                   "passed": ratio <= TARGET_P50_RATIO_AT_1}  # fmt: skip
    overload = result.get("overload")
    if overload is not None:
        passed = all(overload[key] for key in ("only_200_or_503", "within_timeout", "server_survived", "normal_after"))
        found["overload"] = {"passed": passed}
    return found


def benchmark(
    model: str, texts: list[str], levels: list[int], max_requests: int, max_seconds: float, threads: int,
    backend: str, served_options: list[str], overload_queue: int, overload_timeout_s: float, warm_up: int,
) -> dict[str, Any]:  # fmt: skip
    load_before = os.getloadavg()
    timeout_s = 60.0
    msg.info(f"Offline: nlp.pipe and nlp(text) over {len(texts):,} texts, {threads} thread(s), backend {backend}")
    offline = harness.in_fresh_process("offline", measure_offline, model, backend, texts, threads)
    msg.text(f"  nlp.pipe {offline['pipe_words_per_second']:,.0f} words/s, "
             f"nlp(text) {offline['single_words_per_second']:,.0f} words/s")  # fmt: skip
    msg.info("The served server (scripts.tools.serve: batching across requests)")
    with served_server(model, backend, threads, served_options) as server:
        served = measure_server("served", server, texts, levels, max_requests, max_seconds, timeout_s, warm_up)
    msg.info("The naive server (one nlp(text) per request)")
    with naive_server(model, backend, threads) as server:
        naive = measure_server("naive", server, texts, levels, max_requests, max_seconds, timeout_s, warm_up)
    overload = None
    if overload_queue > 0:
        msg.info(f"Overload: a queue of {overload_queue} texts at {4 * overload_queue} concurrent callers")
        overload = measure_overload(model, backend, threads, texts, overload_queue, overload_timeout_s,
                                    served_options, max_seconds)  # fmt: skip
        burst = overload["burst"]
        msg.text(
            f"  statuses {burst['statuses']}, slowest answer {burst['max_ms']:.0f} ms, "
            f"server survived: {overload['server_survived']}, normal after: {overload['normal_after']}"
        )
    for runs in (served, naive):
        for level in runs.values():
            level["over_offline_pipe"] = level["words_per_second"] / offline["pipe_words_per_second"]
    result = {
        "model": model,
        "backend": backend,
        "threads": threads,
        "served_options": served_options,
        "n_texts": len(texts),
        "n_words": harness.count_words(texts),
        "max_requests_per_level": max_requests,
        "max_seconds_per_level": max_seconds,
        "offline": offline,
        "served": served,
        "naive": naive,
        "overload": overload,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "machine": machine_description(),
        "cores": available_cpus(),
    }
    result["checks"] = checks(result)
    return result


def markdown(result: dict[str, Any]) -> str:
    offline = result["offline"]
    rows = []
    for concurrency in result["served"]:
        for name in ("served", "naive"):
            level = result[name][concurrency]
            naive_wps = result["naive"][concurrency]["words_per_second"]
            rows.append([
                concurrency, f"`{name}`", f"{level['requests_per_second']:,.1f}", f"{level['words_per_second']:,.0f}",
                f"{level['words_per_second'] / naive_wps:.2f}x", f"{level['over_offline_pipe']:.2f}",
                f"{level['p50_ms']:,.0f}", f"{level['p95_ms']:,.0f}", f"{level['p99_ms']:,.0f}",
                f"{level['requests'] - level['ok']}", f"{100 * level['generator_cpu_share']:.0f}%",
                f"{level['generator_cpu_ms_per_request']:.1f}", f"{100 * level['server_cpu_share']:.0f}%",
            ])  # fmt: skip
    header = ["callers", "server", "requests/s", "words/s", "x naive", "/ offline nlp.pipe", "p50 ms", "p95 ms",
              "p99 ms", "not 200", "load generator CPU", "generator CPU ms/request", "server CPU"]  # fmt: skip
    text = (
        f"{result['n_texts']:,} CoNLL test sentences ({result['n_words']:,} words) as one-sentence requests over "
        f"loopback, at most {result['max_requests_per_level']:,} requests or {result['max_seconds_per_level']:g} s "
        f"per level; model `{result['model']}`, encoder backend `{result['backend']}`, one replica with "
        f"{result['threads']} torch thread(s), OMP_WAIT_POLICY={result['omp_wait_policy']} in every process; "
        f"`served` is `python -m scripts.tools.serve` "
        f"({' '.join(result['served_options']) or 'its defaults'}), `naive` one `nlp(text)` per request in "
        f"FastAPI's thread pool. Offline, same model, backend and threads: `nlp.pipe` "
        f"{offline['pipe_words_per_second']:,.0f} words/s, `nlp(text)` one by one "
        f"{offline['single_words_per_second']:,.0f} words/s. The load generator (aiohttp) runs on the same "
        f"{result['cores']} cores; CPU shares are of all {result['cores']} cores. Load average before "
        f"{result['load_average_before'][0]:.2f}, after {result['load_average_after'][0]:.2f}; {result['machine']}.\n\n"
        + md_table(header, rows, numeric=list(range(2, len(header))))
        + "\n"
    )
    overload = result["overload"]
    if overload is not None:
        burst = overload["burst"]
        after = overload["after"]
        after_text = f"{after['ok']}/{after['requests']} answered 200, p50 {after['p50_ms']:,.0f} ms" if after else "-"
        text += (
            f"\nOverload: queue of {overload['queue']} texts, {overload['concurrency']} concurrent callers, timeout "
            f"{overload['timeout_s']:g} s: {burst['requests']} requests, statuses {burst['statuses']}, slowest answer "
            f"{burst['max_ms']:,.0f} ms; server survived: {'yes' if overload['server_survived'] else 'no'}; a lone "
            f"caller right after: {after_text}.\n"
        )
    if result["checks"]:
        text += "\n" + "\n".join(f"- {name}: {describe_check(check)}" for name, check in result["checks"].items())
        text += "\n"
    return text


def describe_check(check: dict[str, Any]) -> str:
    verdict = "passed" if check["passed"] else "FAILED"
    if "value" not in check:
        return verdict
    return f"{check['value']:,.2f} (target {check['target']:,.2f}): {verdict}"


def parse_levels(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        levels = []
    if not levels or min(levels) < 1:
        raise typer.BadParameter(f"{text!r}: give positive numbers separated by commas, e.g. 1,8,32,128")
    return levels


def main(
    model: str = typer.Argument(..., help="Trained spaCy pipeline (folder or package)"),
    test_docbin: Path = typer.Argument(..., help="corpus/test.spacy"),
    output: Path = typer.Argument(..., help="metrics/benchmark_serve.json"),
    concurrency: str = typer.Option("1,8,32,128", help="Concurrent callers per level, comma-separated"),
    requests: int = typer.Option(600, min=1, help="Most requests per level"),
    seconds: float = typer.Option(20.0, min=1, help="Most seconds per level"),
    limit: int = typer.Option(600, min=0, help="The first N test sentences are the requests (0: all)"),
    threads: int = typer.Option(2, min=1, help="torch threads of every server and of the offline run"),
    max_batch_size: int = typer.Option(32, min=1, help="The served server's --max-batch-size"),
    max_wait_ms: float = typer.Option(2.0, min=0, help="The served server's --max-wait-ms"),
    overload_queue: int = typer.Option(32, min=0, help="Overload run: the queue (driven at 4x); 0: no overload run"),
    overload_timeout_s: float = typer.Option(10.0, min=1, help="Overload run: the server's --timeout-s"),
    warm_up: int = typer.Option(32, min=1, help="Requests before each server's first level (not measured)"),
    omp_wait_policy: WaitPolicy = typer.Option(
        WaitPolicy.passive, help="OMP_WAIT_POLICY of both servers and the offline run (the served server's default)"
    ),
    backend: Backend = BACKEND_OPTION,
) -> None:
    harness.require_docbin(test_docbin)
    levels = parse_levels(concurrency)
    try:
        backend = backend.value
        pipeline_location(model)  # in a second, before any server starts
    except PipelineLoadError as err:
        fail("Cannot load the spaCy pipeline", str(err))
    texts = harness.sentence_texts(test_docbin, limit)
    # Every process of the run (offline, both servers) starts with the same OpenMP setting: the comparison is
    # then of batching alone.
    os.environ["OMP_WAIT_POLICY"] = omp_wait_policy.value
    served_options = ["--max-batch-size", str(max_batch_size), "--max-wait-ms", f"{max_wait_ms:g}"]
    try:
        result = benchmark(model, texts, levels, requests, seconds, threads, backend, served_options, overload_queue,
                           overload_timeout_s, warm_up)  # fmt: skip
    except RuntimeError as err:
        fail("The load benchmark stopped", str(err))
    write_json_and_markdown(output, result, markdown(result))
    failed = [name for name, check in result["checks"].items() if not check["passed"]]
    msg.good(f"Wrote {output} and its .md" + (f"; not met: {', '.join(failed)}" if failed else "; all checks met"))


if __name__ == "__main__":
    typer.run(main)
