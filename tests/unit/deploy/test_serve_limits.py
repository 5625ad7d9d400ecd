"""deploy.service under abuse, with real clients on 127.0.0.1: malformed floods, stalled
clients, overload and SIGTERM drain. Every test is bounded in time and client count."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from deploy.serve import GeneratorServer
from deploy.service import Admission, Metrics, Overloaded, ServeConfig

ROOT = Path(__file__).resolve().parents[3]


def raw_request(address, data: bytes, timeout: float = 60.0) -> bytes:
    """Send bytes, read until the server closes or a full response arrived."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(data)
        return read_response(sock)


def read_response(sock: socket.socket) -> bytes:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return buf
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0


def http(method: str, path: str, body: bytes = b"", ctype: str = "application/json") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    if ctype:
        head += f"Content-Type: {ctype}\r\n"
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


MALFORMED = [
    http("POST", "/generate", b"{not json"),
    http("POST", "/generate", b'{"seeds": "many"}'),
    http("POST", "/generate", b'{"seeds": [0], "psi": "x"}'),
    http("POST", "/generate", b'{"seeds": ' + b"7" * 5000 + b"}"),
    http("POST", "/generate", b'{"seeds": [' + b"1," * 20000 + b"1]}"),
    http("POST", "/generate", b"[" * 20000 + b"]" * 20000),
    http("POST", "/generate", b'{"seeds": [1]}' + b" " * 70000),
    http("POST", "/generate", b'{"seeds": [1]}', ctype="text/plain"),
    http("PUT", "/generate", b'{"seeds": [1]}'),
    b"GARBAGE\r\n\r\n",
    b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Length: 12abc\r\n\r\n{}",
    b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n{}",
    b"POST /generate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    + (b"8000\r\n" + b" " * 0x8000 + b"\r\n") * 3
    + b"0\r\n\r\n",
]


def test_64_clients_20_percent_malformed_get_4xx_never_5xx(loaded_uncond):
    config = ServeConfig(port=0, max_queue=128)
    srv = GeneratorServer(loaded_uncond, config=config, max_images=4).start()
    try:
        good = http("POST", "/generate", b'{"seeds": [3], "format": "base64"}')
        requests = [MALFORMED[i // 5] if i % 5 == 0 else good for i in range(64)]  # each once
        barrier = threading.Barrier(64, timeout=60)

        def client(data):
            barrier.wait()
            return status_of(raw_request(srv.address, data))

        with ThreadPoolExecutor(64) as pool:
            statuses = list(pool.map(client, requests))
        for i, (data, status) in enumerate(zip(requests, statuses)):
            if data is good:
                assert status == 200, (i, status)
            else:
                assert 400 <= status < 500, (data[:60], status)
        metrics = raw_request(srv.address, http("GET", "/metrics", ctype="")).decode()
        assert 'status="5' not in metrics
    finally:
        srv.close()


def test_stalled_half_requests_do_not_block_others_and_are_dropped(loaded_uncond):
    config = ServeConfig(port=0, read_timeout_s=3.0)
    srv = GeneratorServer(loaded_uncond, config=config).start()
    stalled = []
    try:
        for i in range(100):
            sock = socket.create_connection(srv.address, timeout=30)
            if i % 2:  # headers cut in the middle
                sock.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Le")
            else:  # complete headers, half the body
                sock.sendall(http("POST", "/generate", b'{"seeds": [1]}')[:-6])
            stalled.append(sock)
        # Served while the 100 stalled connections are open (no thread is tied to them).
        answer = raw_request(srv.address, http("POST", "/generate", b'{"seeds": [1]}'))
        assert status_of(answer) == 200
        # Past the deadline every stalled connection is closed by the server (EOF, no answer).
        for sock in stalled:
            sock.settimeout(30)
            assert sock.recv(1024) == b""
        deadline = time.monotonic() + 10
        state = srv.server.server_state
        while (state.connections or state.tasks) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not srv.server.server_state.connections and not srv.server.server_state.tasks
        metrics = raw_request(srv.address, http("GET", "/metrics", ctype="")).decode()
        assert 'ganforge_http_rejected_total{reason="read_timeout"} 100' in metrics
        assert "ganforge_http_requests_in_flight 1" in metrics  # only this /metrics request
    finally:
        for sock in stalled:
            sock.close()
        srv.close()


def test_oversized_body_is_not_read_as_a_second_request(loaded_uncond):
    srv = GeneratorServer(loaded_uncond, port=0).start()
    try:
        big = b'{"seeds": [1]}' + b" " * 70000
        head = f"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(big)}\r\n\r\n"
        with socket.create_connection(srv.address, timeout=30) as sock:
            sock.sendall(head.encode())
            first = read_response(sock)
            assert status_of(first) == 413
            try:  # the server may keep the connection (skipping the body) or close it
                sock.sendall(big + b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                second = read_response(sock)
            except OSError:
                second = b""
            assert second == b"" or status_of(second) == 200, second[:100]
    finally:
        srv.close()


def test_admission_bounds_work_and_queue():
    async def scenario():
        admission = Admission(
            ServeConfig(max_concurrency=1, max_queue=1, queue_timeout_s=0.5), Metrics()
        )
        async with admission.slot():
            waiter = asyncio.create_task(admission.slot().__aenter__())
            await asyncio.sleep(0.05)
            with pytest.raises(Overloaded, match="busy"):  # slot taken, queue full: at once
                async with admission.slot():
                    pass
            with pytest.raises(Overloaded, match="within 0.5"):  # the queued one times out
                await waiter
        async with admission.slot():  # free again
            pass
        return admission.metrics.rejected

    assert asyncio.run(asyncio.wait_for(scenario(), 30)) == {"queue_full": 1, "queue_timeout": 1}


def test_full_server_answers_503_with_retry_after(loaded_uncond):
    config = ServeConfig(port=0, max_concurrency=1, max_queue=0, retry_after_s=3)
    srv = GeneratorServer(loaded_uncond, config=config, max_images=64).start()
    try:
        body = b'{"seeds": "0-63", "format": "base64"}'
        for _attempt in range(3):  # a burst of 24: all but the first few find the server full
            barrier = threading.Barrier(24, timeout=60)

            def client(_, barrier=barrier):
                barrier.wait()
                return raw_request(srv.address, http("POST", "/generate", body))

            with ThreadPoolExecutor(24) as pool:
                answers = list(pool.map(client, range(24)))
            codes = [status_of(a) for a in answers]
            assert set(codes) <= {200, 503}, codes
            busy = [a for a in answers if status_of(a) == 503]
            assert all(b"retry-after: 3" in a.lower() for a in busy)
            if busy and 200 in codes:
                break
        assert busy and 200 in codes
    finally:
        srv.close()


def wait_until(condition, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def metrics_of(address) -> str:
    return raw_request(address, http("GET", "/metrics", ctype="")).decode()


def refused(address) -> bool:
    try:
        socket.create_connection(address, timeout=5).close()
    except OSError:
        return True
    return False


def test_sigterm_finishes_in_flight_requests_then_exits_0(export_uncond):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pipeline.cli import main; sys.exit(main())",
            "serve",
            "--model",
            str(export_uncond),
            "--port",
            "0",
            "--read-timeout",
            "30",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert " on http://127.0.0.1:" in line, line
        port = int(line.split("http://127.0.0.1:")[1].split()[0])
        body = b'{"seeds": [0, 1], "format": "base64"}'
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            request = http("POST", "/generate", body)
            sock.sendall(request[:-10])  # in flight: headers and part of the body
            wait_until(lambda: "requests_in_flight 2" in metrics_of(("127.0.0.1", port)))
            proc.send_signal(signal.SIGTERM)
            wait_until(lambda: refused(("127.0.0.1", port)))  # no new connections once draining
            sock.sendall(request[-10:])
            answer = read_response(sock)
        assert (
            status_of(answer) == 200
            and len(json.loads(answer.split(b"\r\n\r\n", 1)[1])["images"]) == 2
        )
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
