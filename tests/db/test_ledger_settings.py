"""LedgerSettings: where the URL comes from, how it is normalized, and that it hides passwords."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from agentledger import Ledger, LedgerError, LedgerSettings

PASSWORD = "pw-Sup3rS3cret-9d41"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No AGENTLEDGER_*/DATABASE_URL from the outside, and no .env file in the directory."""
    for name in list(os.environ):
        if name.startswith("AGENTLEDGER_") or name == "DATABASE_URL":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def url_for(backend: str, name: str) -> str:
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{name}.db"
    return f"postgresql+asyncpg://app@db.example:5432/{name}"


def test_default_url_is_embedded_sqlite() -> None:
    settings = LedgerSettings()
    assert settings.database_url == "sqlite+aiosqlite:///agentledger.db"
    assert settings.url.drivername == "sqlite+aiosqlite"
    assert settings.url.database == "agentledger.db"


def test_database_url_is_honoured(monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    monkeypatch.setenv("DATABASE_URL", url_for(backend, "from_database_url"))
    settings = LedgerSettings()
    assert settings.url.database is not None
    assert settings.url.database.startswith("from_database_url")


# Regression: DATABASE_URL used to win, because the alias "database_url" matched it first.
def test_agentledger_database_url_wins(monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    monkeypatch.setenv("DATABASE_URL", url_for(backend, "generic"))
    monkeypatch.setenv("AGENTLEDGER_DATABASE_URL", url_for(backend, "specific"))
    settings = LedgerSettings()
    assert settings.url.database is not None
    assert settings.url.database.startswith("specific")


def test_explicit_argument_wins_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTLEDGER_DATABASE_URL", "sqlite+aiosqlite:///env.db")
    settings = LedgerSettings(database_url="sqlite+aiosqlite:///arg.db")
    assert settings.url.database == "arg.db"


def test_env_prefix_reaches_other_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTLEDGER_POOL_SIZE", "7")
    monkeypatch.setenv("AGENTLEDGER_MIGRATE_ON_START", "true")
    monkeypatch.setenv("AGENTLEDGER_DEFAULT_USER_ID", "svc-user")
    monkeypatch.setenv("POOL_SIZE", "99")  # unprefixed: not ours
    settings = LedgerSettings()
    assert settings.pool_size == 7
    assert settings.migrate_on_start is True
    assert settings.default_user_id == "svc-user"


def test_dotenv_file_in_the_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("AGENTLEDGER_DATABASE_URL=sqlite+aiosqlite:///dotenv.db\n")
    assert LedgerSettings().url.database == "dotenv.db"


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("postgresql://app@db.example:5432/app", "postgresql+asyncpg"),
        ("postgres://app@db.example/app", "postgresql+asyncpg"),
        ("postgresql+psycopg2://app@db.example/app", "postgresql+asyncpg"),
        ("postgresql+asyncpg://app@db.example/app", "postgresql+asyncpg"),
        ("sqlite:///local.db", "sqlite+aiosqlite"),
    ],
)
def test_plain_urls_get_the_async_driver(
    monkeypatch: pytest.MonkeyPatch, given: str, driver: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", given)
    settings = LedgerSettings()
    assert settings.url.drivername == driver
    assert settings.url.host == (None if driver.startswith("sqlite") else "db.example")


async def test_ledger_from_plain_postgresql_url_uses_asyncpg() -> None:
    ledger = Ledger.from_url("postgresql://app@db.example:5432/app")
    try:
        assert ledger.engine.url.drivername == "postgresql+asyncpg"
        assert ledger.engine.dialect.driver == "asyncpg"
    finally:
        await ledger.dispose()


@pytest.mark.parametrize("url", ["mysql://app@db/app", "definitely not a url"])
def test_unsupported_url_is_a_ledger_error(url: str) -> None:
    with pytest.raises((LedgerError, ValueError)) as raised:
        LedgerSettings(database_url=url)
    assert "postgresql" in str(raised.value).lower()


async def test_password_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"postgresql://app:{PASSWORD}@db.example:5432/app"
    settings = LedgerSettings(database_url=url)
    assert settings.url.password == PASSWORD  # kept for connecting...
    for shown in (repr(settings), str(settings), settings.safe_database_url):
        assert PASSWORD not in shown  # ...but never shown
    assert "db.example" in repr(settings)
    # Nor where settings get printed or logged as data (regression: model_dump showed it).
    with_replica = LedgerSettings(database_url=url, read_url=url.replace("db.example", "r.example"))
    for dumped in (str(with_replica.model_dump()), with_replica.model_dump_json()):
        assert PASSWORD not in dumped
        assert "r.example" in dumped
    assert with_replica.read_url is not None
    assert PASSWORD in with_replica.read_url  # the attribute is the real URL

    monkeypatch.setenv("DATABASE_URL", url)
    assert PASSWORD not in repr(LedgerSettings())

    ledger = Ledger.from_url(url)
    try:
        assert PASSWORD not in repr(ledger)
        assert PASSWORD not in repr(ledger.settings)
        assert "db.example" in repr(ledger)
    finally:
        await ledger.dispose()

    with pytest.raises((LedgerError, ValueError)) as raised:
        LedgerSettings(database_url=f"mysql://app:{PASSWORD}@db.example/app")
    assert PASSWORD not in str(raised.value)


async def test_from_settings_connects_with_a_plain_url_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    plain = make_url(database_url).set(drivername=make_url(database_url).get_backend_name())
    assert "+" not in plain.drivername  # postgresql:// or sqlite://
    monkeypatch.setenv("DATABASE_URL", plain.render_as_string(hide_password=False))
    async with Ledger.from_settings() as ledger:
        assert ledger.engine.url.drivername in ("postgresql+asyncpg", "sqlite+aiosqlite")
        session = await ledger.service.create_session("u1", "A")
        await ledger.service.add_message(session.id, "user", "hi")
        record = await ledger.service.get_session(session.id)
    assert record is not None
    assert [m.content for m in record.messages] == ["hi"]
