"""A bounded load test of `melanoma serve` on localhost: the test suite's and bench/serve.py's.

`start_server` runs `melanoma serve` in a child process on a free localhost port and waits for /health;
`load` sends a fixed number of requests from N client threads, each with a deadline, so it always stops.
Every k-th request is malformed (the kinds the issue lists) and must get its own 4xx; the rest must get 200.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def start_server(model_dir: str, port: int | None = None, extra: list[str] | None = None,
                 env: dict | None = None, timeout: float = 120.0) -> Iterator[tuple[str, subprocess.Popen]]:
    """(base URL, process) of a `melanoma serve` child on 127.0.0.1; stopped (and reaped) on exit."""
    import httpx

    port = port or free_port()
    cmd = [sys.executable, "-m", "melanoma", "-q", "serve", "--model", str(model_dir), "--port", str(port),
           *(extra or [])]
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"serve exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"serve did not answer /health within {timeout:.0f} s")
            time.sleep(0.2)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def serve_in_thread(app, port: int | None = None, timeout: float = 30.0) -> Iterator[str]:
    """The app under uvicorn in a thread of this process (no start-up imports to pay): its base URL."""
    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def bomb_png(side: int = 16000) -> bytes:
    """A small PNG that declares side x side pixels (a decompression bomb for a lower max_pixels)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (side, side)).save(buf, format="PNG")
    return buf.getvalue()


def malformed_requests(image: bytes, max_body: int) -> list[tuple[str, dict, int]]:
    """(kind, httpx request kwargs, expected status) for each kind of bad input the service must refuse."""
    jpeg = ("a.jpg", image, "image/jpeg")
    return [
        ("not an image", {"files": {"image": ("a.jpg", b"this is not an image" * 10, "image/jpeg")}}, 422),
        ("truncated jpeg", {"files": {"image": ("a.jpg", image[: len(image) // 2], "image/jpeg")}}, 422),
        ("empty upload", {"files": {"image": ("a.jpg", b"", "image/jpeg")}}, 400),
        ("decompression bomb", {"files": {"image": ("b.png", bomb_png(), "image/png")}}, 413),
        ("wrong content type", {"content": image, "headers": {"content-type": "image/jpeg"}}, 415),
        ("text part", {"files": {"image": ("a.txt", image, "text/plain")}}, 415),
        ("body too large", {"files": {"image": ("a.jpg", b"\0" * (max_body + 1), "image/jpeg")}}, 413),
        ("age -5", {"files": {"image": jpeg}, "data": {"age_approx": "-5"}}, 422),
        ("unknown sex", {"files": {"image": jpeg}, "data": {"sex": "banana"}}, 422),
    ]


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)  # seconds, well-formed requests
    ok: int = 0
    failed: list[str] = field(default_factory=list)  # what went wrong, per bad answer
    malformed_ok: int = 0
    seconds: float = 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1000 if self.latencies else float("nan")

    def summary(self) -> str:
        return (f"{self.ok} ok, {self.malformed_ok} malformed refused as expected, {len(self.failed)} wrong; "
                f"p50 {self.percentile(50):.1f} ms, p99 {self.percentile(99):.1f} ms, "
                f"{self.ok / max(self.seconds, 1e-9):.1f} req/s")


def run_load(url: str, images: list[bytes], n_requests: int, clients: int, malformed_every: int = 0,
         max_body: int = 20 * 2**20, deadline_s: float = 600.0) -> LoadResult:
    """Send n_requests (every malformed_every-th one malformed) from `clients` threads; stops at the deadline."""
    import httpx

    bad = malformed_requests(images[0], max_body) if malformed_every else []
    result, lock = LoadResult(), threading.Lock()
    counter = iter(range(n_requests))
    stop_at = time.monotonic() + deadline_s

    def client() -> None:
        with httpx.Client(base_url=url, timeout=60.0) as http:
            for i in counter:  # the shared iterator hands each request number out once
                if time.monotonic() > stop_at:
                    return
                if malformed_every and i % malformed_every == malformed_every - 1:
                    kind, kw, want = bad[(i // malformed_every) % len(bad)]
                    r = http.post("/predict", **kw)
                    with lock:
                        if r.status_code == want and "error" in r.json():
                            result.malformed_ok += 1
                        else:
                            result.failed.append(f"{kind}: {r.status_code} (want {want}) {r.text[:120]}")
                    continue
                start = time.perf_counter()
                r = http.post("/predict", files={"image": ("x.jpg", images[i % len(images)], "image/jpeg")},
                              data={"age_approx": "45", "sex": "female"})
                took = time.perf_counter() - start
                with lock:
                    if r.status_code == 200 and 0.0 <= r.json()["probability"] <= 1.0:
                        result.ok += 1
                        result.latencies.append(took)
                    else:
                        result.failed.append(f"well-formed: {r.status_code} {r.text[:120]}")

    start = time.perf_counter()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(1.0, stop_at - time.monotonic() + 60))
    result.seconds = time.perf_counter() - start
    return result
