"""The screenshots of docs/web.md: ``python -m tests.web.ui.screenshots`` (``make
screenshots``) serves a demo database with ``agentledger serve``, signs in with headless
Chromium and saves the main pages as PNG files under docs/."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from agentledger import Ledger, SessionService
from agentledger.domain.records import Usage
from tests.web.ui.served import chromium, cli, create_token, serve

DOCS = Path(__file__).resolve().parents[3] / "docs"


async def seed(url: str) -> uuid.UUID:
    """A user's sessions with two agents, tool calls, a checkpoint and two weeks of usage."""
    async with Ledger.from_url(url) as ledger:
        svc = ledger.service
        topics = ["Refund for order 1042", "Shipping to Norway", "Change billing address"]
        for topic in topics:
            s = await svc.create_session("alice", "Support", metadata={"channel": "chat"})
            await svc.add_message(s.id, "user", topic)
            await svc.add_message(s.id, "assistant", f"Happy to help with: {topic.lower()}.")
        research = await svc.create_session("alice", "Researcher", metadata={"project": "q3"})
        await svc.add_message(research.id, "user", "Compare last week's weather in Oslo and Rome")
        call = {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"cities": ["Oslo", "Rome"]}'},
        }
        await svc.add_message(research.id, "assistant", "", tool_calls=[call])
        rows = "\n".join(
            f"station {d:03}  hour {d % 24:02}:00  Oslo {d % 9 + 2:2}°C  Rome {d % 7 + 16:2}°C  ok"
            for d in range(1, 120)
        )
        log = "\x1b[32mfetched\x1b[0m 238 observations\n" + rows
        await svc.add_message(research.id, "tool", log, tool_call_id="call_1")
        await svc.add_message(
            research.id, "assistant", "Rome was about 14 °C warmer every day <b>on average</b>."
        )
        await svc.add_checkpoint(
            research.id,
            [{"role": "user", "content": "Summary: weather compared for Oslo and Rome."}],
            upto_seq=3,
            model="gpt-4.1-mini",
        )
        await svc.set_title(research.id, "Weather: Oslo vs Rome")
        now = datetime.now(UTC)
        support = await svc.create_session("alice", "Support")
        await svc.add_message(support.id, "user", "Where is my parcel?")
        for day in range(14):
            when = now - timedelta(days=13 - day)
            clocked = SessionService(ledger.unit_of_work, clock=fixed(when))
            total = 1200 + day * 120
            await clocked.record_usage(research.id, Usage(2, total - 300, 300, total))
            if day % 2 == 0:
                await clocked.record_usage(research.id, Usage(1, 400, 200, 600 + 40 * day))
            tokens = 2500 - day * 90 if day % 3 else 800
            await clocked.record_usage(support.id, Usage(1, tokens - 200, 200, tokens))
        return research.id


def fixed(when: datetime) -> Callable[[], datetime]:
    return lambda: when


def shoot(driver: WebDriver, name: str) -> None:
    driver.save_screenshot(str(DOCS / name))
    print(f"docs/{name}")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/demo.db"
        cli(url, "db", "upgrade")
        research = asyncio.run(seed(url))
        token = create_token(url, "alice")
        with serve(url) as base, chromium(Path(tmp), width=1200, height=900) as driver:
            driver.get(f"{base}/ui/login")
            field = driver.find_element(By.ID, "token")
            field.send_keys(token)
            field.send_keys(Keys.ENTER)
            WebDriverWait(driver, 15).until(lambda d: d.current_url.endswith("/ui/"))
            shoot(driver, "web-sessions.png")
            driver.get(f"{base}/ui/sessions/{research}")
            driver.find_element(By.CSS_SELECTOR, "details.tool-call summary").click()
            driver.set_window_size(1200, 1300)
            heading = driver.find_element(By.ID, "tr-h")
            driver.execute_script("arguments[0].scrollIntoView()", heading)
            shoot(driver, "web-transcript.png")
            driver.set_window_size(1200, 900)
            driver.get(f"{base}/ui/usage")
            shoot(driver, "web-usage.png")
            driver.set_window_size(400, 860)
            driver.get(f"{base}/ui/")
            shoot(driver, "web-phone.png")


if __name__ == "__main__":
    main()
