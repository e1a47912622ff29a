"""Fixtures of the pytest suite: koop's fake Koordinates site, run as a process.

The site is `koop testkit-server` (the binary of koop-cli, found through ``KOOP_BIN`` or on
``PATH``; ``cargo xtask test`` sets ``KOOP_BIN``): the same in-process test server the Rust
tests use, built from real Koordinates responses, with request counters at
``/_testkit/counters/``.
"""

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest


def koop_bin() -> str:
    found = os.environ.get("KOOP_BIN") or shutil.which("koop")
    if not found:
        raise RuntimeError(
            "the tests need the koop binary for its test server: set KOOP_BIN "
            "(cargo xtask test does) or put koop on PATH"
        )
    return found


class Site:
    """A running `koop testkit-server`."""

    def __init__(self, work: Path, export_latency_ms: int) -> None:
        work.mkdir(parents=True, exist_ok=True)
        ready = work / "ready.json"
        self.process = subprocess.Popen(
            [
                koop_bin(),
                "testkit-server",
                "--ready-file",
                str(ready),
                "--export-latency-ms",
                str(export_latency_ms),
                "--fresh-exports",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while not ready.exists():
            if self.process.poll() is not None:
                raise RuntimeError(
                    "koop testkit-server exited: " + self.process.stderr.read().decode()
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("koop testkit-server did not start within 60 s")
            time.sleep(0.02)
        info = json.loads(ready.read_text())
        self.domain: str = info["domain"]
        self.api_key: str = info["api_key"]
        self.base_url: str = info["base_url"]
        self.layers = info["layers"]

    def get(self, path: str, key: bool = True):
        """GET `path` of the site as JSON, with the key when `key`."""
        headers = {"Authorization": f"key {self.api_key}"} if key else {}
        request = urllib.request.Request(self.base_url + path, headers=headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def counters(self) -> dict:
        """The site's request counters."""
        return self.get("/_testkit/counters/", key=False)

    def details(self, layer_id: int) -> dict:
        """A layer's details (`GET layers/{id}/`)."""
        return self.get(f"/services/api/v1.x/layers/{layer_id}/")

    def exports(self) -> list:
        """The site's exports (`GET exports/`), newest first."""
        return self.get("/services/api/v1.x/exports/")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="session")
def site(tmp_path_factory):
    """The fake site, exports taking 0.3 s."""
    running = Site(tmp_path_factory.mktemp("site"), 300)
    yield running
    running.stop()


@pytest.fixture()
def new_site(tmp_path):
    """`new_site(export_latency_ms)`: a fake site of the test's own, which has made no export
    yet (koop reuses a recent complete export of the same layer it finds on a site)."""
    started = []

    def start(export_latency_ms: int) -> Site:
        running = Site(tmp_path / f"site-{len(started)}", export_latency_ms)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    """A fresh KOOPCACHE_DIR, and no key in the environment unless a test sets it."""
    directory = tmp_path / "cache"
    monkeypatch.setenv("KOOPCACHE_DIR", str(directory))
    monkeypatch.delenv("KOORDINATES_API_KEY", raising=False)
    return directory


class Delta:
    """Counters of the site since the block started."""

    def __init__(self, site: Site) -> None:
        self.site = site

    def __enter__(self) -> "Delta":
        self.before = self.site.counters()
        return self

    def __exit__(self, *exc) -> None:
        after = self.site.counters()
        self.counts = {key: after[key] - self.before.get(key, 0) for key in after}

    def __getitem__(self, key: str) -> int:
        return self.counts[key]


@pytest.fixture()
def requests_to(site):
    """`with requests_to() as made: …` then `made["api_requests"]`."""
    return lambda: Delta(site)
