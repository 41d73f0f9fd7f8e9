"""End to end: ``agentledger serve`` on a free loopback port, driven by headless Chromium
(Debian's ``chromium`` through ``chromium-driver``). One server per backend and one browser
for the module; both are stopped even when a test fails.

Without Chromium these tests skip on a developer's machine and fail in CI (``CI=true``):
``make test`` installs it (scripts/ensure-chromium.sh).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver import Chrome as WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from agentledger import Ledger
from agentledger.domain.records import Usage
from agentledger.testing import create_pg_database, drop_pg_database, pg_url
from agentledger.transcripts import loads_jsonl
from tests.conftest import BACKENDS, run_sync
from tests.web.ui.hostile import IMG, MEGABYTE, SCRIPT
from tests.web.ui.served import chromium, chromium_missing, cli, create_token, serve

WAIT = 15.0


@dataclass(frozen=True)
class Site:
    base: str
    database_url: str
    token: str
    giraffe: uuid.UUID
    live: uuid.UUID


async def seed(database_url: str) -> tuple[uuid.UUID, uuid.UUID]:
    """alice's sessions (one with hostile content and a paired tool call, one to follow
    live) and one of bob's."""
    async with Ledger.from_url(database_url) as ledger:
        svc = ledger.service
        for number in range(12):
            other = await svc.create_session("alice", "Planner", metadata={"n": number})
            await svc.add_message(other.id, "user", f"plan number {number}")
        giraffe = await svc.create_session("alice", "Zookeeper", metadata={"zoo": "berlin"})
        await svc.set_title(giraffe.id, "Giraffe chat")
        await svc.add_message(giraffe.id, "user", f"where is the giraffe? {SCRIPT} {IMG}")
        call = {"id": "c1", "type": "function", "function": {"name": "find", "arguments": "{}"}}
        await svc.add_message(giraffe.id, "assistant", "", tool_calls=[call])
        await svc.add_message(giraffe.id, "tool", MEGABYTE, tool_call_id="c1")
        await svc.add_message(giraffe.id, "assistant", "In the north enclosure.")
        await svc.record_usage(giraffe.id, Usage(1, 1200, 300, 1500))
        live = await svc.create_session("alice", "Streamer")
        await svc.set_title(live.id, "Live session")
        await svc.add_message(live.id, "user", "count for me")
        hidden = await svc.create_session("bob", "Zookeeper")
        await svc.add_message(hidden.id, "user", "bob's giraffe secret")
        return giraffe.id, live.id


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WebDriver, Path]]:
    missing = chromium_missing()
    if missing is not None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(missing)
        pytest.skip(missing)
    downloads = tmp_path_factory.mktemp("downloads")
    with chromium(downloads) as driver:
        yield driver, downloads


@pytest.fixture(scope="module", params=BACKENDS)
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("served") / "ledger.db"
        url = f"sqlite+aiosqlite:///{path}"
        cli(url, "db", "upgrade")
        cleanup = None
    else:
        name = run_sync(create_pg_database(template=request.getfixturevalue("pg_template")))
        url, cleanup = pg_url(name), name
    try:
        giraffe, live = run_sync(seed(url))
        token = create_token(url, "alice")
        with serve(url) as base:
            yield Site(base, url, token, giraffe, live)
    finally:
        if cleanup is not None:
            run_sync(drop_pg_database(cleanup))


def sign_in(driver: WebDriver, site: Site) -> None:
    driver.delete_all_cookies()
    driver.get(f"{site.base}/ui/")
    WebDriverWait(driver, WAIT).until(lambda d: "/ui/login" in d.current_url)
    field = driver.find_element(By.ID, "token")
    field.send_keys(site.token)
    field.send_keys(Keys.ENTER)
    WebDriverWait(driver, WAIT).until(lambda d: d.current_url.endswith("/ui/"))


def no_alert(driver: WebDriver) -> None:
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.accept()


def csp_reports(driver: WebDriver) -> list[str]:
    return [
        entry["message"]
        for entry in driver.get_log("browser")  # type: ignore[no-untyped-call]
        if "Content Security Policy" in entry["message"]
    ]


def test_login_list_search_and_open_a_transcript(
    browser: tuple[WebDriver, Path], site: Site
) -> None:
    driver, _ = browser
    driver.delete_all_cookies()
    driver.get(f"{site.base}/ui/")
    field = driver.find_element(By.ID, "token")
    field.send_keys("al_not-a-token")
    field.send_keys(Keys.ENTER)
    assert "unknown or revoked" in driver.find_element(By.CSS_SELECTOR, "[role=alert]").text
    sign_in(driver, site)
    cookie = driver.get_cookie("agentledger_ui_token")
    assert cookie is not None
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Lax"
    rows = driver.find_elements(By.CSS_SELECTOR, "table.sessions tbody tr")
    assert len(rows) == 14
    assert "Live session" in rows[0].text
    assert "Giraffe chat" in rows[1].text
    assert "4" in rows[1].find_element(By.CSS_SELECTOR, "td[data-label=Messages]").text
    assert "bob" not in driver.page_source
    search = driver.find_element(By.ID, "q")
    search.send_keys("giraffe")
    search.send_keys(Keys.ENTER)
    hits = WebDriverWait(driver, WAIT).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "ol.hits li a")
    )
    assert len(hits) == 1  # bob's giraffe is not alice's
    hits[0].click()
    WebDriverWait(driver, WAIT).until(lambda d: str(site.giraffe) in d.current_url)
    assert driver.find_element(By.TAG_NAME, "h1").text == "Giraffe chat"
    first = driver.find_element(By.ID, "m1").text
    assert SCRIPT in first
    assert IMG in first
    no_alert(driver)
    assert driver.find_elements(By.CSS_SELECTOR, "main img") == []
    assert csp_reports(driver) == []


def test_expand_a_tool_output_with_the_keyboard_and_show_all(
    browser: tuple[WebDriver, Path], site: Site
) -> None:
    driver, _ = browser
    sign_in(driver, site)
    driver.get(f"{site.base}/ui/sessions/{site.giraffe}")
    call = driver.find_element(By.CSS_SELECTOR, "details.tool-call")
    output = call.find_element(By.CSS_SELECTOR, ".tool-output-slot pre")
    assert not output.is_displayed()
    summary = call.find_element(By.TAG_NAME, "summary")
    assert "find" in summary.text
    assert "output #3" in summary.text
    driver.execute_script("arguments[0].focus()", summary)
    summary.send_keys(Keys.ENTER)
    WebDriverWait(driver, WAIT).until(lambda _: output.is_displayed())
    assert output.text.startswith("AAAA")
    assert len(output.text) == 4096
    show_all = call.find_element(By.LINK_TEXT, "Show all")
    show_all.click()
    WebDriverWait(driver, WAIT).until(lambda d: d.current_url.endswith("/messages/3"))
    body = driver.find_element(By.TAG_NAME, "body").text
    assert body.endswith(SCRIPT)  # the whole megabyte, as plain text
    no_alert(driver)


def test_follow_a_live_session_while_another_process_appends(
    browser: tuple[WebDriver, Path], site: Site
) -> None:
    driver, _ = browser
    sign_in(driver, site)
    driver.get(f"{site.base}/ui/sessions/{site.live}")
    status = driver.find_element(By.ID, "live-status")
    WebDriverWait(driver, WAIT).until(lambda _: "live" in status.text)

    async def append() -> None:
        async with Ledger.from_url(site.database_url) as ledger:
            for number in (1, 2, 3):
                await ledger.service.add_message(site.live, "assistant", f"{number} {SCRIPT}")

    started = time.monotonic()
    run_sync(append())  # this test process, not the server, writes
    arrived = WebDriverWait(driver, WAIT).until(lambda d: d.find_elements(By.ID, "m4"))
    assert f"3 {SCRIPT}" in arrived[0].text
    assert [e.text.split("\n")[-1] for e in driver.find_elements(By.CSS_SELECTOR, ".message pre")][
        -3:
    ] == [f"{n} {SCRIPT}" for n in (1, 2, 3)]
    assert time.monotonic() - started < WAIT
    assert "New message #4" in status.text

    async def call_then_output() -> None:
        call = {"id": "live-call", "type": "function", "function": {"name": "f", "arguments": ""}}
        async with Ledger.from_url(site.database_url) as ledger:
            await ledger.service.add_message(site.live, "assistant", "", tool_calls=[call])
            WebDriverWait(driver, WAIT).until(lambda d: d.find_elements(By.ID, "m5"))
            await ledger.service.add_message(
                site.live, "tool", "live output", tool_call_id="live-call"
            )

    run_sync(call_then_output())
    # The output arrives later, on its own, and goes under the call it answers.
    slot = driver.find_element(By.CSS_SELECTOR, "#m5 .tool-output-slot")
    WebDriverWait(driver, WAIT).until(lambda _: slot.find_elements(By.ID, "m6"))
    no_alert(driver)
    assert csp_reports(driver) == []


def test_export_downloads_jsonl(browser: tuple[WebDriver, Path], site: Site) -> None:
    driver, downloads = browser
    sign_in(driver, site)
    driver.get(f"{site.base}/ui/sessions/{site.giraffe}")
    driver.find_element(By.LINK_TEXT, "JSONL").click()
    target = downloads / f"session-{site.giraffe}.jsonl"
    WebDriverWait(driver, WAIT).until(lambda _: target.exists() and target.stat().st_size > 0)
    transcript = loads_jsonl(target.read_text(encoding="utf-8"))
    target.unlink()
    assert transcript.id == site.giraffe
    assert transcript.messages[2].item["output"] == MEGABYTE


def test_revoking_the_token_ends_the_login(browser: tuple[WebDriver, Path], site: Site) -> None:
    driver, _ = browser
    token = create_token(site.database_url, "alice")
    driver.delete_all_cookies()
    driver.get(f"{site.base}/ui/login")
    field = driver.find_element(By.ID, "token")
    field.send_keys(token)
    field.send_keys(Keys.ENTER)
    WebDriverWait(driver, WAIT).until(lambda d: d.current_url.endswith("/ui/"))
    cli(site.database_url, "tokens", "revoke", token)
    driver.get(f"{site.base}/ui/usage")
    WebDriverWait(driver, WAIT).until(lambda d: "/ui/login" in d.current_url)
