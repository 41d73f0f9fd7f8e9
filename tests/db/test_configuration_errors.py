"""A configuration mistake is a non-retryable error that names the mistake, and no form of a URL
ever shows its password: not in a repr, an error, a validation message or CLI output."""

from __future__ import annotations

import logging
import traceback
import uuid

import pytest
from sqlalchemy.engine import make_url

from agentledger import Ledger, LedgerSettings, SchemaNotReadyError
from agentledger.cli import main
from agentledger.db.urls import safe_url
from agentledger.errors import ConfigurationError, LedgerError
from tests.conftest import run_sync

PASSWORD = "Hunter2-s3cret"


def shown(error: BaseException) -> str:
    return "".join(traceback.format_exception(error)) + repr(error)


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://app@db.example/app?password={PASSWORD}",
        f"postgresql://app@db.example/app?sslmode=require&PassWord={PASSWORD}",
        f"postgresql://app:{PASSWORD}@@db.example/app",
        f"postgresql://app:p@ss{PASSWORD}@db.example/app",
        f"postgresql://app:pa?ss{PASSWORD}@db.example/app",
        f"postgresql://app:{PASSWORD}@db.example:notaport/app",
        f"mysql://app:{PASSWORD}@db.example/app",
        f"no-scheme-{PASSWORD}",
    ],
)
def test_no_form_of_a_url_shows_its_password(url: str) -> None:
    assert PASSWORD not in safe_url(url)
    refused: LedgerError | None = None
    try:
        settings = LedgerSettings(database_url=url)
    except LedgerError as error:  # unusable URLs are refused without echoing them
        refused = error
    if refused is not None:
        assert isinstance(refused, ConfigurationError)
        assert PASSWORD not in shown(refused)
        return
    assert PASSWORD not in repr(settings)
    assert PASSWORD not in str(settings)
    assert PASSWORD not in settings.safe_database_url
    ledger = Ledger.from_settings(settings)
    try:
        assert PASSWORD not in repr(ledger)
        assert "db.example" in repr(ledger)
    finally:
        run_sync(ledger.dispose())


def test_a_malformed_port_is_a_configuration_error_without_the_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app:{PASSWORD}@db.example:5o32/app")
    with pytest.raises(ConfigurationError) as raised:
        LedgerSettings()
    assert "port" in str(raised.value)
    assert PASSWORD not in shown(raised.value)


def test_a_non_string_setting_does_not_echo_its_input() -> None:
    with pytest.raises(Exception) as raised:  # noqa: PT011 - pydantic's ValidationError
        LedgerSettings(database_url=f"postgresql://app:{PASSWORD}@db/app", pool_size="x")  # type: ignore[arg-type]
    assert PASSWORD not in shown(raised.value)


def test_schema_errors_and_cli_output_never_show_a_query_password(
    empty_database_url: str, backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if backend == "postgresql":  # trust auth: the password is sent and ignored
        url = f"{empty_database_url}?password={PASSWORD}"
    else:
        url = empty_database_url

    async def first_use() -> None:
        async with Ledger.from_url(url) as ledger:
            await ledger.service.get_session(uuid.uuid4())

    with pytest.raises(SchemaNotReadyError) as raised:
        run_sync(first_use())
    assert PASSWORD not in shown(raised.value)
    for command in (["db", "current"], ["db", "upgrade"], ["db", "current", "--json"]):
        assert main(["--database-url", url, *command]) == 0
        captured = capsys.readouterr()
        assert PASSWORD not in captured.out + captured.err


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("sslmode=requried", "sslmode"),
        ("ssl=bogus", "ssl"),
        ("server_settings=x", "server_settings"),
        ("statement_timeout=5s", "statement_timeout"),
        ("command_timeout=abc", "command_timeout"),
        ("connect_timeout=-1", "connect_timeout"),
        ("options=statement_timeout", "options"),
        ("target_session_attrs=primaryy", "target_session_attrs"),
    ],
)
def test_a_bad_postgresql_url_parameter_is_named_and_not_retryable(
    query: str, named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:5432/postgres?{query}"
    with pytest.raises(ConfigurationError) as raised:
        Ledger.from_url(url)
    assert raised.value.retryable is False
    assert named in str(raised.value)
    assert PASSWORD not in shown(raised.value)
    assert main(["--database-url", url, "db", "current"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert named in err
    assert PASSWORD not in err


@pytest.mark.parametrize(
    ("query", "named"), [("mode=ro", "uri=true"), ("cache_size=5", "cache_size")]
)
def test_a_bad_sqlite_url_parameter_is_named(tmp_path: object, query: str, named: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        Ledger.from_url(f"sqlite+aiosqlite:///{tmp_path}/x.db?{query}")
    assert named in str(raised.value)


async def test_libpq_style_parameters_reach_the_server(pg_database_url: str) -> None:
    url = (
        f"{pg_database_url}?sslmode=disable&connect_timeout=5&command_timeout=30"
        "&application_name=ledger-app&options=-c%20statement_timeout%3D7s"
    )
    async with Ledger.from_url(url) as ledger:
        async with ledger.engine.connect() as connection:
            timeout = await connection.exec_driver_sql("SHOW statement_timeout")
            name = await connection.exec_driver_sql("SHOW application_name")
            assert (timeout.scalar(), name.scalar()) == ("7s", "ledger-app")
        session = await ledger.service.create_session("u", "a")
        await ledger.service.add_message(session.id, "user", "hi")
        assert len(await ledger.service.get_items(session.id)) == 1


async def test_driver_refusals_of_connect_args_are_configuration_errors(
    pg_database_url: str,
) -> None:
    for connect_args in ({"server_settings": "x"}, {"bogus_argument": 1}):
        async with Ledger.from_url(pg_database_url, connect_args=connect_args) as ledger:
            with pytest.raises(ConfigurationError) as raised:
                await ledger.service.get_session(uuid.uuid4())
            assert raised.value.retryable is False


async def test_engines_never_log_parameters_even_when_the_host_turns_logging_up(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "content-that-must-not-be-logged-0451"
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")
    async with Ledger.from_url(database_url) as ledger:
        session = await ledger.service.create_session("u", "a")
        await ledger.service.add_message(session.id, "user", secret)
        await ledger.service.get_items(session.id)
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "conversation_messages" in text  # the host asked for statements and gets them
    assert secret not in text


def test_the_url_host_stays_visible() -> None:
    assert safe_url(make_url("postgresql://a:b@host.example:6543/db")) == (
        "postgresql://a:***@host.example:6543/db"
    )


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("postgresql://app@db.example:70000/app", "port"),
        ("postgresql://app@db.example/app?port=0", "port"),
        ("postgresql://app@db.example/app?port=99999", "port"),
        ("postgresql://app@db\x00.example/app", "U+0000"),
        ("postgresql://app@db.example/a\x00pp", "U+0000"),
        (f"postgresql://app@{'x' * 64}.example/app", "host"),
        ("postgresql://app@db..example/app", "host"),
        ("sqlite+aiosqlite:///relative.db?uri=true", "file:"),
    ],
)
def test_unusable_url_parts_are_configuration_errors(url: str, named: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        Ledger.from_settings(LedgerSettings(database_url=url))
    assert named in str(raised.value)
    assert "Traceback" not in str(raised.value)


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("[" * 50_000 + "]" * 50_000, "nested too deeply"),
        ('{"*": {"days": -1}}', "days"),
        ('{"*": {"weeks": 1}}', "allowed keys"),
        ("not json", "not valid JSON"),
    ],
)
def test_a_bad_retention_setting_is_refused_with_its_rule(
    monkeypatch: pytest.MonkeyPatch, value: str, said: str
) -> None:
    monkeypatch.setenv("AGENTLEDGER_RETENTION", value)
    with pytest.raises(Exception) as raised:  # noqa: PT011 - pydantic's ValidationError
        LedgerSettings()
    assert said in str(raised.value)


def test_a_retention_setting_from_the_environment_is_parsed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "AGENTLEDGER_RETENTION", '{"*": {"days": 30}, "support": {"days": 9, "archive": true}}'
    )
    parsed = LedgerSettings().retention
    assert parsed["*"].days == 30
    assert parsed["support"].archive is True
