"""``agentledger serve`` on a free loopback port, and a headless Chromium to drive it: for the
end-to-end tests and the screenshots of docs/web.md. Both are stopped even when a test fails."""

from __future__ import annotations

import asyncio
import os
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

from tests.support.server import agentledger_serve

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
    """``agentledger serve`` on the database (tests/support/server.py's
    :func:`agentledger_serve`, held open from synchronous code by an event loop of its own);
    yields its base URL, stops it after."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = agentledger_serve(database_url)
    try:
        base = asyncio.run_coroutine_threadsafe(server.__aenter__(), loop).result()
        try:
            yield base
        finally:
            asyncio.run_coroutine_threadsafe(server.__aexit__(None, None, None), loop).result()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


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
