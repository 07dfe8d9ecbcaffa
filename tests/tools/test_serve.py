"""scripts/tools/serve.py: real server processes on free loopback ports, a real HTTP client, the page in Chromium.

The servers serve the workflow's trained pipeline: the installed package en_bert_ner, or its
folder training/model-best; the page is also shown a rule-based pipeline of other labels, served
by uvicorn in this process. Each test bounds its waits; the servers are stopped (SIGINT, then
SIGKILL of their own process group) whatever happens.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import spacy
from spacy.language import Language

from scripts.lib.labels import label_colour, label_colours
from scripts.lib.pipeline_loading import load_pipeline
from scripts.lib.text_entities import entity_records
from scripts.serving.http_app import create_app
from scripts.serving.service import LocalService
from scripts.serving.settings import ServeSettings
from tests.conftest import FIXTURE_CONLL_DIR, PROJECT_DIR, WorkflowRun, flat
from tests.tools.test_annotate import NEWS_LINES

START_DEADLINE_S = 240  # spawning a worker and loading the model, on 2 busy cores
REQUEST_TIMEOUT_S = 60
IN_CI = os.environ.get("CI", "").lower() == "true"


@dataclass
class RunningServer:
    process: subprocess.Popen
    url: str = ""
    output: list[str] = field(default_factory=list)

    def log(self) -> str:
        return "".join(self.output)[-6000:]

    def workers(self) -> list[psutil.Process]:
        """uvicorn's worker processes: the spawned children of the server."""
        children = psutil.Process(self.process.pid).children()
        return [child for child in children if "spawn_main" in " ".join(child.cmdline())]


def read_output(server: RunningServer) -> None:
    assert server.process.stdout is not None
    for line in server.process.stdout:
        server.output.append(line)


def wait_until_ready(server: RunningServer, deadline_s: float = START_DEADLINE_S) -> None:
    deadline = time.monotonic() + deadline_s
    while not server.url:
        match = re.search(r"Serving .*? on (http://[\d.]+:\d+)", "".join(server.output).replace("\n", " "))
        if match:
            server.url = match.group(1)
        elif server.process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the server did not start:\n{server.log()}")
        else:
            time.sleep(0.2)
    while True:
        try:
            if httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if server.process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the server was not ready in {deadline_s} s:\n{server.log()}")
        time.sleep(0.5)


@contextmanager
def running_server(model: str, *options: str, env: dict[str, str] | None = None) -> Iterator[RunningServer]:
    """`python -m scripts.tools.serve MODEL --port 0 OPTIONS` in its own process group, ready (/healthz 200)."""
    command = [sys.executable, "-m", "scripts.tools.serve", model, "--port", "0", *options]
    process = subprocess.Popen(
        command, cwd=PROJECT_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "COLUMNS": "300", **(env or {})}, start_new_session=True,
    )  # fmt: skip
    server = RunningServer(process)
    threading.Thread(target=read_output, args=(server,), daemon=True).start()
    try:
        wait_until_ready(server)
        yield server
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the group this test started: workers left behind, if any
    except ProcessLookupError:
        pass
    process.wait(30)


def conll_sentences(limit: int) -> list[str]:
    """Sentences of the fixture CoNLL test file, as the model's users send them."""
    sentences, words = [], []
    for line in (FIXTURE_CONLL_DIR / "test.txt").read_text(encoding="utf-8").splitlines():
        if line.startswith("-DOCSTART-"):
            continue
        if line.strip():
            words.append(line.split(" ")[0])
        elif words:
            sentences.append(" ".join(words))
            words = []
    return sentences[:limit]


def same_entities(served: list[dict], expected: list[dict]) -> bool:
    """Equal, but a score (where the pipeline gives one) may differ in the last digits between batches."""
    if len(served) != len(expected):
        return False
    for got, want in zip(served, expected, strict=True):
        if {key: value for key, value in got.items() if key != "score"} != {
            key: value for key, value in want.items() if key != "score"
        }:
            return False
        if want.get("score") is None:
            if got.get("score") is not None:
                return False
        elif got.get("score") is None or got["score"] != pytest.approx(want["score"], abs=1e-3):
            return False
    return True


def post(url: str, body: Any, timeout: float = REQUEST_TIMEOUT_S) -> httpx.Response:
    return httpx.post(f"{url}/ner", json=body, timeout=timeout)


# --- the packaged model behind the default server -----------------------------------


@pytest.fixture(scope="module")
def site_dir(installed_model: str) -> Path:
    return spacy.util.get_package_path(installed_model).parent


@pytest.fixture(scope="module")
def nlp(installed_model: str):
    return load_pipeline(installed_model, needs=["ner"])


LIMITS = ("--max-texts", "8", "--max-text-chars", "2000", "--max-body-bytes", "20000")


@pytest.fixture(scope="module")
def server(installed_model: str, site_dir: Path) -> Iterator[RunningServer]:
    with running_server(installed_model, *LIMITS, env={"PYTHONPATH": str(site_dir)}) as running:
        yield running


@pytest.mark.slow
def test_concurrent_requests_get_the_entities_nlp_pipe_finds(server: RunningServer, nlp):
    texts = [line for line in NEWS_LINES if line] + conll_sentences(40)
    expected = [entity_records(doc) for doc in nlp.pipe(texts)]
    assert any(expected), "the trained model found no entity: the comparison would be empty"
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda text: post(server.url, {"text": text}), texts))
    assert all(answer.status_code == 200 for answer in answers), [a.text for a in answers if a.status_code != 200]
    for text, answer, want in zip(texts, answers, expected, strict=True):
        assert answer.json()["text"] == text
        assert same_entities(answer.json()["entities"], want), (text, answer.json(), want)
    several = post(server.url, {"texts": texts[:8]})
    assert [result["text"] for result in several.json()["results"]] == texts[:8]
    for result, want in zip(several.json()["results"], expected[:8], strict=True):
        assert same_entities(result["entities"], want)


@pytest.mark.slow
def test_healthz_names_the_model_not_its_path(server: RunningServer):
    answer = httpx.get(f"{server.url}/healthz", timeout=REQUEST_TIMEOUT_S).json()
    assert answer["status"] == "ready" and answer["model"].startswith("en_bert_ner ")
    assert set(answer["labels"]) == {"PER", "ORG", "LOC", "MISC"} and answer["backend"] == "torch"
    assert answer["limits"]["max_texts"] == 8 and "/" not in json.dumps(answer["model"])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b'{"text": ', 400, "not valid JSON"),
        (b"{}", 422, 'needs "text" (a string) or "texts"'),
        (b'{"text": ["a"]}', 422, '"text" must be a string'),
        (b'{"texts": ["a", 1]}', 422, '"texts[1]" must be a string'),
        (b'{"text": "a", "backend": "onnx"}', 422, 'unknown field "backend"'),
        (json.dumps({"text": "x" * 2001}).encode(), 413, "the limit is 2,000"),
        (json.dumps({"texts": ["a"] * 9}).encode(), 413, "at most 8 in one request"),
        # Within the text and count limits, but 72 kB of JSON escapes (\u00e9: 6 bytes a character).
        (json.dumps({"texts": ["é" * 1500] * 8}).encode(), 413, "at most 20,000 bytes"),
    ],
)
def test_a_bad_request_gets_its_status_and_message(server: RunningServer, body: bytes, status: int, message: str):
    answer = httpx.post(
        f"{server.url}/ner", content=body, headers={"content-type": "application/json"}, timeout=REQUEST_TIMEOUT_S
    )
    assert answer.status_code == status, answer.text[:300]
    assert message in answer.json()["detail"] and "Traceback" not in answer.text


def raw_exchange(url: str, head: bytes, body_parts: list[bytes]) -> tuple[bytes, int]:
    """Send a request head and what body parts the server takes, never the whole body; (answer, parts sent)."""
    host, port = url.removeprefix("http://").split(":")
    sent = 0
    with socket.create_connection((host, int(port)), timeout=REQUEST_TIMEOUT_S) as connection:
        connection.sendall(head)
        for part in body_parts:
            try:
                connection.sendall(part)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 1
            time.sleep(0.01)
        connection.settimeout(REQUEST_TIMEOUT_S)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = connection.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer, sent


@pytest.mark.slow
def test_an_oversized_body_is_refused_before_it_is_read_whole(server: RunningServer):
    declared = b"POST /ner HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500000000\r\n\r\n"
    answer, _ = raw_exchange(server.url, declared, [b'{"text": "'])  # 10 bytes of the 500 MB declared
    assert answer.startswith(b"HTTP/1.1 413") and b"at most 20,000 bytes" in answer
    chunked = b"POST /ner HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"1000\r\n" + b"x" * 0x1000 + b"\r\n"  # 4,096 bytes a chunk, and no last chunk is ever sent
    answer, _ = raw_exchange(server.url, chunked, [chunk] * 6)
    assert answer.startswith(b"HTTP/1.1 413") and b"more than 20,000 bytes" in answer


def listening_addresses(port: int) -> set[str]:
    """The IPv4 addresses with a socket listening on PORT, from /proc/net/tcp."""
    addresses = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if int(hex_port, 16) == port and state == "0A":
            addresses.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return addresses


def non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # no packet is sent: this only picks the outgoing interface
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


@pytest.mark.slow
def test_the_worker_runs_its_model_threads_passive(server: RunningServer):
    [worker] = server.workers()
    assert worker.environ().get("OMP_WAIT_POLICY") == os.environ.get("OMP_WAIT_POLICY", "PASSIVE")


@pytest.mark.slow
def test_the_default_listens_on_loopback_only(server: RunningServer):
    port = int(server.url.rsplit(":", 1)[1])
    assert listening_addresses(port) == {"127.0.0.1"}
    address = non_loopback_address()
    if address is not None:
        with pytest.raises(OSError), socket.create_connection((address, port), timeout=5):
            pass


# --- the page, in headless Chromium ------------------------------------------------


def chromium(window: tuple[int, int] = (1000, 700)) -> Any:
    """Debian's chromium through its chromedriver (selenium), headless; in CI their absence fails the test."""
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser is None or driver is None:
        message = "the page test needs Debian's chromium and chromium-driver: apt-get install chromium chromium-driver"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={window[0]},{window[1]}"):  # fmt: skip
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(driver), options=options)


PAGE_ENTITIES = """
return Array.from(document.querySelectorAll("#result mark.entity")).map(mark => ({
  start: Number(mark.dataset.start), end: Number(mark.dataset.end), label: mark.dataset.label,
  text: mark.querySelector(".span").textContent, shown_label: mark.querySelector(".label").textContent,
  score: mark.dataset.score === undefined ? null : Number(mark.dataset.score),
  shown_score: mark.querySelector(".score") ? mark.querySelector(".score").textContent : null}));
"""


def submit_on_page(browser: Any, url: str, text: str) -> list[dict]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{url}/")
    box = browser.find_element(By.ID, "text")
    box.clear()
    browser.execute_script("arguments[0].value = arguments[1];", box, text)  # send_keys cannot type emoji
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, REQUEST_TIMEOUT_S).until(
        lambda page: page.find_element(By.ID, "status").get_attribute("data-state") in ("done", "error")
    )
    status = browser.find_element(By.ID, "status")
    assert status.get_attribute("data-state") == "done", status.text
    return browser.execute_script(PAGE_ENTITIES)


@pytest.mark.slow
def test_the_page_highlights_the_entities_the_api_finds(server: RunningServer, tmp_path: Path):
    from selenium.webdriver.common.by import By

    candidates = [line for line in NEWS_LINES if line] + conll_sentences(20)
    answers = [post(server.url, {"text": "🎉 " + text}).json() for text in candidates]
    best = max(answers, key=lambda answer: len(answer["entities"]))
    assert best["entities"], "the trained model found no entity in any candidate text"
    browser = chromium()
    try:
        shown = submit_on_page(browser, server.url, best["text"])
        result_text = browser.find_element(By.ID, "result").text
        browser.save_screenshot(str(tmp_path / "page.png"))
    finally:
        browser.quit()
    assert [(e["start"], e["end"], e["label"], e["text"]) for e in shown] == [
        (e["start"], e["end"], e["label"], e["text"]) for e in best["entities"]
    ]
    assert all(entity["shown_label"] == entity["label"] for entity in shown)
    for entity, api_entity in zip(shown, best["entities"], strict=True):
        if api_entity.get("score") is not None:
            assert entity["score"] == pytest.approx(api_entity["score"]) and entity["shown_score"]
    assert result_text.startswith("🎉 ")
    assert (tmp_path / "page.png").stat().st_size > 1000


def rule_pipeline(_: ServeSettings) -> Language:
    """A pipeline whose "ner" is an entity ruler: labels outside CoNLL's four (and one of them), found in no time."""
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler", name="ner")
    ruler.add_patterns(
        [
            {"label": "DRUG", "pattern": "aspirin"},
            {"label": "Dose form", "pattern": "tablets"},
            {"label": "PER", "pattern": "Anna"},
        ]
    )
    return nlp


@contextmanager
def app_in_this_process(app: Any) -> Iterator[str]:
    """The application under uvicorn in a thread of this process, on a free loopback port, ready; its URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
        while httpx.get(f"{url}/healthz", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "the pipeline did not load"
            time.sleep(0.1)
        yield url
    finally:
        server.should_exit = True
        thread.join(30)


PAGE_COLOURS = """
const probe = document.createElement("span");
const normal = colour => { probe.style.background = colour; return probe.style.backgroundColor; };
const shown = selector => Array.from(document.querySelectorAll(selector)).map(
  element => [element.dataset.label, element.style.backgroundColor]);
return {legend: shown("#legend span"), marks: shown("#result mark.entity"),
        expected: Object.fromEntries(Object.entries(arguments[0]).map(([label, colour]) => [label, normal(colour)])),
        hashed: arguments[1].map(label => labelColour(label))};
"""
# The page's JavaScript copy of scripts.lib.labels.label_colour must give the same colour for each of these.
HASHED_LABELS = ["DRUG", "Dose form", "PER", "MISC", "💊 Médicament", "constructor"]


def test_the_page_colours_and_lists_any_label_the_pipeline_has():
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    settings = ServeSettings("rules")
    service = LocalService(settings, load=rule_pipeline)
    app = create_app(service, settings, on_startup=service.start, on_shutdown=service.stop)
    browser = chromium()
    try:
        with app_in_this_process(app) as url:
            shown = submit_on_page(browser, url, "Anna took two aspirin tablets.")
            WebDriverWait(browser, 30).until(lambda page: page.find_elements(By.CSS_SELECTOR, "#legend span"))
            colours = browser.execute_script(PAGE_COLOURS, label_colours(["DRUG", "Dose form", "PER"]), HASHED_LABELS)
            about = browser.find_element(By.CLASS_NAME, "about").text
    finally:
        browser.quit()
    assert [(e["label"], e["text"]) for e in shown] == [("PER", "Anna"), ("DRUG", "aspirin"), ("Dose form", "tablets")]
    expected = colours["expected"]
    assert colours["legend"] == [[label, expected[label]] for label in ("PER", "DRUG", "Dose form")]
    assert colours["marks"] == [[label, expected[label]] for label in ("PER", "DRUG", "Dose form")]
    assert len(set(expected.values())) == 3  # each label its own colour, none the fallback grey
    assert colours["hashed"] == [label_colour(label) for label in HASHED_LABELS]
    assert "people" not in about


# --- overload, recovery and a killed worker ----------------------------------------

# A batch waits up to a second to fill, so the texts that arrive meanwhile stay queued: 4 are admitted, and the
# queue is full for the rest of a burst however fast the model is.
OVERLOAD = ("--max-wait-ms", "1000", "--max-queue", "4", "--max-texts", "4", "--timeout-s", "20")


@pytest.fixture(scope="module")
def small_queue_server(workflow: WorkflowRun) -> Iterator[RunningServer]:
    """The pipeline folder behind a server whose queue admits 4 texts."""
    with running_server(str(workflow.model_best), *OVERLOAD) as running:
        yield running


@pytest.mark.slow
def test_overload_gets_503_at_once_and_normal_service_right_after(small_queue_server: RunningServer, nlp):
    url = small_queue_server.url
    text = " ".join(conll_sentences(6))
    with ThreadPoolExecutor(max_workers=16) as pool:  # 16 at once: 4x what the queue admits
        answers = list(pool.map(lambda _: timed_post(url, {"text": text}), range(16)))
    statuses = [answer.status_code for answer, _ in answers]
    assert set(statuses) <= {200, 503} and statuses.count(200) >= 4 and 503 in statuses, statuses
    assert all(seconds < 20 + 5 for _, seconds in answers), "an answer came after the configured timeout"
    refused = [(answer, seconds) for answer, seconds in answers if answer.status_code == 503]
    admitted = [seconds for answer, seconds in answers if answer.status_code == 200]
    assert all("busy" in answer.json()["detail"] and answer.headers["retry-after"] == "1" for answer, _ in refused)
    # At once: a refused request does not wait for the batch that the admitted ones wait for.
    assert statistics.median(seconds for _, seconds in refused) < min(admitted)
    assert small_queue_server.process.poll() is None, "the server died under overload"
    texts = conll_sentences(5)
    expected = [entity_records(doc) for doc in nlp.pipe(texts)]
    for text, want in zip(texts, expected, strict=True):
        answer = post(url, {"text": text})
        assert answer.status_code == 200 and same_entities(answer.json()["entities"], want)


def timed_post(url: str, body: Any) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    answer = post(url, body)
    return answer, time.monotonic() - started


@pytest.mark.slow
def test_a_killed_worker_is_replaced(small_queue_server: RunningServer):
    [worker] = small_queue_server.workers()
    worker.kill()
    worker.wait(30)
    deadline = time.monotonic() + START_DEADLINE_S
    while True:
        replacements = [process for process in small_queue_server.workers() if process.pid != worker.pid]
        if replacements:
            try:
                if post(small_queue_server.url, {"text": "Peter went to Paris ."}).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
        assert time.monotonic() < deadline, f"no worker took over:\n{small_queue_server.log()}"
        time.sleep(0.5)
    assert small_queue_server.process.poll() is None
    assert f"Child process [{worker.pid}] died" in small_queue_server.log()


# --- start-up errors -------------------------------------------------------------------


def test_a_missing_model_is_named_before_any_worker_starts(tmp_path: Path):
    command = [sys.executable, "-m", "scripts.tools.serve", str(tmp_path / "missing"), "--port", "0"]
    result = subprocess.run(command, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "no such folder" in flat(output) and "Traceback" not in output


def test_settings_that_cannot_work_stop_the_cli(tmp_path: Path):
    command = [sys.executable, "-m", "scripts.tools.serve", str(tmp_path), "--max-texts", "10", "--max-queue", "5"]
    result = subprocess.run(command, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "--max-texts (10) is more than --max-queue (5)" in result.stdout


# --- Ray Serve ----------------------------------------------------------------------


def replica_processes(server: RunningServer) -> list[psutil.Process]:
    """Ray Serve's replica actors among the descendants of the server (the local Ray it started)."""
    found = []
    for process in psutil.Process(server.process.pid).children(recursive=True):
        try:
            if "ServeReplica:en_bert_ner:NerReplica" in " ".join(process.cmdline()):
                found.append(process)
        except psutil.NoSuchProcess:
            pass
    return found


@pytest.mark.slow
def test_ray_serve_batches_answers_alike_and_replaces_a_killed_replica(workflow: WorkflowRun, nlp):
    options = ("--ray", "--replicas", "2", "--cpus-per-replica", "1", *LIMITS)
    with running_server(str(workflow.model_best), *options) as server:
        texts = conll_sentences(16)
        expected = [entity_records(doc) for doc in nlp.pipe(texts)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(lambda text: post(server.url, {"text": text}), texts))
        for answer, want in zip(answers, expected, strict=True):
            assert answer.status_code == 200 and same_entities(answer.json()["entities"], want), answer.text
        declared = b"POST /ner HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 900000\r\n\r\n"
        answer, _ = raw_exchange(server.url, declared, [b"{"])
        assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
        assert post(server.url, {"text": 3}).status_code == 422

        replicas = replica_processes(server)
        assert len(replicas) == 2, [p.cmdline() for p in replicas]
        policy = os.environ.get("OMP_WAIT_POLICY", "PASSIVE")
        assert all(replica.environ().get("OMP_WAIT_POLICY") == policy for replica in replicas)
        replicas[0].kill()
        answered_while_replacing = []
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            try:
                answered_while_replacing.append(post(server.url, {"text": texts[0]}, timeout=30).status_code)
            except httpx.HTTPError:
                answered_while_replacing.append(0)
            pids = {process.pid for process in replica_processes(server)}
            if len(pids) == 2 and replicas[0].pid not in pids and answered_while_replacing[-1] == 200:
                break
            assert time.monotonic() < deadline, (answered_while_replacing, server.log())
            time.sleep(0.5)
        assert 200 in answered_while_replacing[:-1] or len(answered_while_replacing) == 1
