"""``agentledger serve`` on a free loopback port, and a headless Chromium to drive it: for the
end-to-end tests and the screenshots of docs/web.md. Both are stopped even when a test fails."""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

#: How long the server may take to start (an import, a schema check).
START_TIMEOUT = 60.0
_LISTENING = re.compile(r"running on (http://127\.0\.0\.1:\d+)")
_TOKEN = re.compile(r"^(\S+)$", re.MULTILINE)


def cli(database_url: str, *args: str) -> str:
    """Run ``agentledger ARGS`` on the database; its standard output."""
    result = subprocess.run(
        [sys.executable, "-m", "agentledger", *args],
        env={**os.environ, "AGENTLEDGER_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"agentledger {' '.join(args)}: {result.stderr}"
    return result.stdout


def create_token(database_url: str, user: str) -> str:
    """A new API token of ``user`` (``agentledger tokens create``)."""
    found = _TOKEN.search(cli(database_url, "tokens", "create", "--user", user))
    assert found is not None
    return found.group(1)


@contextmanager
def serve(database_url: str) -> Iterator[str]:
    """``agentledger serve --port 0`` on the database; yields its base URL, stops it after."""
    process = subprocess.Popen(
        [sys.executable, "-m", "agentledger", "serve", "--port", "0", "--log-level", "info"],
        env={**os.environ, "AGENTLEDGER_DATABASE_URL": database_url},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    output: list[str] = []

    def drain() -> None:  # keeps reading, so a chatty server never blocks on a full pipe
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=drain, daemon=True).start()
    try:
        while True:
            try:
                line = lines.get(timeout=START_TIMEOUT)
            except queue.Empty:
                raise AssertionError(
                    f"agentledger serve did not start: {''.join(output)}"
                ) from None
            if line is None:
                raise AssertionError(f"agentledger serve exited: {''.join(output)}")
            output.append(line)
            listening = _LISTENING.search(line)
            if listening:
                break
        yield listening.group(1)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def chromium_missing() -> str | None:
    """Why no headless Chromium can run here (``None``: it can)."""
    for program in ("chromium", "chromedriver"):
        if shutil.which(program) is None:
            return f"{program} is not installed (make chromium, or scripts/ensure-chromium.sh)"
    return None


@contextmanager
def chromium(
    downloads: Path, *, width: int = 1280, height: int = 900
) -> Iterator[webdriver.Chrome]:
    """Debian's Chromium, headless, through chromium-driver; downloads go to ``downloads``."""
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for argument in (
        "--headless=new",
        "--no-sandbox",  # the tests may run as root (CI containers)
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
        "--lang=en-US",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    driver = webdriver.Chrome(
        options=options, service=Service(shutil.which("chromedriver") or "chromedriver")
    )
    try:
        driver.execute_cdp_cmd(
            "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
        )
        yield driver
    finally:
        driver.quit()
