"""Database URLs: what their query parameters may say, and how a URL is shown without secrets.

Hosted ``DATABASE_URL`` values carry libpq-style parameters (``sslmode=require``,
``connect_timeout=10``, ``application_name=...``, ``options=-c statement_timeout=5s``), and a
typo there used to surface at connect time as a retryable "connection lost", every time. Here
every parameter is checked once, when the URL is read: a known one is converted to the type
the driver takes (query values are strings; asyncpg wants numbers and dicts), anything else is
a :class:`~agentledger.errors.ConfigurationError` that names it.

:func:`safe_url` is the one way a URL is shown (reprs, errors, CLI output, logs): it works on
the text, so a password hides even where the URL cannot be parsed, holds an unencoded ``@``,
or sits in the query string (``?password=``).
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from agentledger.errors import ConfigurationError

#: Query parameters whose values are never shown.
SECRET_PARAMETERS = frozenset(
    {"password", "passwd", "pass", "pwd", "sslpassword", "secret", "token", "access_token"}
)

_MASK = "***"


# -- showing a URL ------------------------------------------------------------------------------


def safe_url(url: str | URL) -> str:
    """The URL as text with its password (in the user info or the query) replaced by ``***``."""
    text = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    scheme, sep, rest = text.partition("://")
    if not sep:
        return "<unparsable URL>"
    query_start = rest.find("?")
    # The user info ends at the last "@" before the query; a password may itself hold "@"
    # (unencoded) or "?", so when no "@" precedes the first "?", the last "@" of all counts
    # (which may hide more than the password, never less).
    at = rest.rfind("@", 0, query_start) if query_start >= 0 else rest.rfind("@")
    if at < 0:
        at = rest.rfind("@")
    if at >= 0:
        user, colon, _password = rest[:at].partition(":")
        rest = f"{user}:{_MASK}@{rest[at + 1 :]}" if colon else rest
    base, question, query = rest.partition("?")
    if question:
        rest = f"{base}?{_masked_query(query)}"
    return f"{scheme}://{rest}"


def _masked_query(query: str) -> str:
    pairs = []
    for pair in query.split("&"):
        name, equals, _value = pair.partition("=")
        secret = name.strip().lower() in SECRET_PARAMETERS
        pairs.append(f"{name}={_MASK}" if equals and secret else pair)
    return "&".join(pairs)


_ASYNC_DRIVERS = {"postgresql": "asyncpg", "sqlite": "aiosqlite"}
_BACKEND_ALIASES = {"postgres": "postgresql", "postgresql": "postgresql", "sqlite": "sqlite"}


# -- checking and converting query parameters ---------------------------------------------------

_Parser = Callable[[str, str], Any]

_SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_SESSION_ATTRS = ("any", "primary", "standby", "read-write", "read-only", "prefer-standby")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _choice(*allowed: str) -> _Parser:
    def parse(name: str, value: str) -> str:
        if value not in allowed:
            raise _bad(name, value, f"one of {', '.join(allowed)}")
        return value

    return parse


def _positive_number(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number > 0 or number == float("inf"):
        raise _bad(name, value, "a number of seconds greater than 0")
    return number


def _count(name: str, value: str) -> int:
    if not value.isdigit():
        raise _bad(name, value, "a whole number, 0 or more")
    return int(value)


def _flag(name: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise _bad(name, value, "true or false")


def _text(name: str, value: str) -> str:
    if not value:
        raise _bad(name, value, "a non-empty value")
    return value


def _bad(name: str, value: str, expected: str) -> ConfigurationError:
    shown = _MASK if name.lower() in SECRET_PARAMETERS else repr(value[:80])
    return ConfigurationError(
        f"the database URL parameter {name}={shown} is not valid: expected {expected}"
    )


#: PostgreSQL (asyncpg) URL parameters: name -> (asyncpg.connect argument, parser).
#: ``application_name`` and ``options`` become ``server_settings``.
_POSTGRES: dict[str, tuple[str, _Parser]] = {
    "ssl": ("ssl", _choice(*_SSL_MODES)),
    "sslmode": ("ssl", _choice(*_SSL_MODES)),
    "timeout": ("timeout", _positive_number),
    "connect_timeout": ("timeout", _positive_number),
    "command_timeout": ("command_timeout", _positive_number),
    "statement_cache_size": ("statement_cache_size", _count),
    "prepared_statement_cache_size": ("prepared_statement_cache_size", _count),
    "max_cached_statement_lifetime": ("max_cached_statement_lifetime", _count),
    "max_cacheable_statement_size": ("max_cacheable_statement_size", _count),
    "target_session_attrs": ("target_session_attrs", _choice(*_SESSION_ATTRS)),
    "passfile": ("passfile", _text),
    "krbsrvname": ("krbsrvname", _text),
    "gsslib": ("gsslib", _choice("gssapi", "sspi")),
    "direct_tls": ("direct_tls", _flag),
    "dbname": ("database", _text),
}
#: Left in the URL for SQLAlchemy, which reads them itself.
_POSTGRES_KEPT = frozenset({"host", "port", "user", "password"})

#: SQLite (pysqlite/aiosqlite) URL parameters, checked and left in the URL for SQLAlchemy.
_SQLITE: dict[str, _Parser] = {
    "uri": _flag,
    "timeout": lambda name, value: _positive_number(name, value),
    "detect_types": _count,
    "check_same_thread": _flag,
    "cached_statements": _count,
}
#: SQLite URI parameters (only with ``uri=true``).
_SQLITE_URI: dict[str, _Parser] = {
    "mode": _choice("ro", "rw", "rwc", "memory"),
    "cache": _choice("shared", "private"),
    "vfs": _text,
    "immutable": _choice("0", "1"),
    "nolock": _choice("0", "1"),
    "psow": _choice("0", "1"),
    "modeof": _text,
}


def _single(url: URL, name: str) -> str:
    value = url.query[name]
    if not isinstance(value, str):
        raise ConfigurationError(f"the database URL gives the parameter {name} more than once")
    return value


def _postgres_arguments(url: URL) -> dict[str, Any]:
    arguments: dict[str, Any] = {}
    settings: dict[str, str] = {}
    for name in url.query:
        if name in _POSTGRES_KEPT:
            if name == "port":
                _port(name, _single(url, name))
            continue
        value = _single(url, name)
        if name == "application_name":
            settings["application_name"] = value
        elif name == "options":
            settings.update(_server_options(value))
        elif name in _POSTGRES:
            target, parse = _POSTGRES[name]
            arguments[target] = parse(name, value)
        else:
            raise _unknown(name, sorted({*_POSTGRES, *_POSTGRES_KEPT, "application_name"}))
    if settings:
        arguments["server_settings"] = settings
    return arguments


def _server_options(value: str) -> dict[str, str]:
    """libpq's ``options=-c name=value -c ...`` as server settings."""
    try:
        words = shlex.split(value)
    except ValueError:
        words = []
    settings: dict[str, str] = {}
    index = 0
    while index < len(words):
        word = words[index]
        if word == "-c" and index + 1 < len(words):
            assignment, index = words[index + 1], index + 2
        elif word.startswith("-c") and len(word) > 2:
            assignment, index = word[2:], index + 1
        else:
            assignment, index = "", len(words) + 1
        name, equals, setting = assignment.partition("=")
        if not equals or not name:
            raise ConfigurationError(
                f"the database URL parameter options={value[:80]!r} is not valid: expected "
                "-c name=value pairs, e.g. options=-c%20statement_timeout%3D5s"
            )
        settings[name] = setting
    return settings


def _unknown(name: str, known: list[str]) -> ConfigurationError:
    return ConfigurationError(
        f"unknown database URL parameter {name!r}; known parameters: {', '.join(known)}. If "
        f"{name} is a PostgreSQL server setting (such as statement_timeout or work_mem), pass "
        f"it as options=-c {name}=VALUE in the URL or "
        "connect_args={'server_settings': {...}}"
    )


def _check_sqlite(url: URL) -> None:
    use_uri = "uri" in url.query and _flag("uri", _single(url, "uri"))
    if use_uri and not (url.database or "").startswith("file:"):
        raise ConfigurationError(
            "a SQLite URL with uri=true needs a file: path, e.g. "
            "sqlite+aiosqlite:///file:app.db?mode=ro&uri=true"
        )
    for name in url.query:
        value = _single(url, name)
        if name in _SQLITE:
            _SQLITE[name](name, value)
        elif name in _SQLITE_URI:
            if not use_uri:
                raise ConfigurationError(
                    f"the SQLite URL parameter {name} needs uri=true as well (it is a SQLite "
                    "URI parameter)"
                )
            _SQLITE_URI[name](name, value)
        else:
            raise _unknown(name, sorted({*_SQLITE, *_SQLITE_URI}))


def normalize_url(url: str | URL) -> URL:
    """Return ``url`` with an async driver (asyncpg for PostgreSQL, aiosqlite for SQLite) and
    its query parameters checked (see :mod:`agentledger.db.urls`).

    Any other backend, an unparsable URL and an unknown or malformed query parameter are
    refused with a :class:`~agentledger.errors.ConfigurationError` that names the problem and
    never shows the password.
    """
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except (ArgumentError, ValueError):
        raise ConfigurationError(
            f"could not parse the database URL {safe_url(str(url))!r} (check the port and "
            "percent-encode special characters of the password, e.g. @ as %40); expected e.g. "
            "postgresql://user:password@host:5432/dbname or sqlite+aiosqlite:///path/to.db"
        ) from None
    backend, _, driver = parsed.drivername.partition("+")
    canonical = _BACKEND_ALIASES.get(backend)
    if canonical is None:
        raise ConfigurationError(
            f"unsupported database backend {backend!r} in {safe_url(parsed)}; agentledger runs "
            "on PostgreSQL (postgresql://...) and SQLite (sqlite+aiosqlite:///...)"
        )
    wanted = _ASYNC_DRIVERS[canonical]
    if driver != wanted:
        parsed = parsed.set(drivername=f"{canonical}+{wanted}")
    check_url_options(parsed)
    return parsed


def check_url_options(url: URL) -> None:
    """Refuse a URL whose parts or query parameters the driver would reject or silently
    ignore."""
    _check_parts(url)
    if url.get_backend_name() == "postgresql":
        _postgres_arguments(url)
    else:
        _check_sqlite(url)


def _check_parts(url: URL) -> None:
    for what, part in (
        ("user name", url.username),
        ("password", url.password),
        ("host", url.host),
        ("database name", url.database),
    ):
        if part and "\x00" in part:
            raise ConfigurationError(f"the database URL's {what} contains U+0000 (%00)")
    if url.port is not None and not 0 < url.port <= 65535:
        raise ConfigurationError(f"the database URL's port {url.port} is not from 1 to 65535")
    host = url.host
    if host and not host.startswith("/") and not _is_ip(host):
        labels = host.rstrip(".").split(".")
        if len(host) > 253 or any(not 0 < len(label) <= 63 for label in labels):
            raise ConfigurationError(
                f"the database URL's host {host[:80]!r} is not a valid host name (labels of 1 "
                "to 63 characters, 253 in all)"
            )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _port(name: str, value: str) -> str:
    if not value.isdigit() or not 0 < int(value) <= 65535:
        raise _bad(name, value, "a port number from 1 to 65535")
    return value


def driver_arguments(url: URL) -> tuple[URL, dict[str, Any]]:
    """``url`` without the parameters that become ``connect_args``, and those arguments (typed
    for asyncpg). SQLite URLs are returned as they are."""
    if url.get_backend_name() != "postgresql":
        return url, {}
    arguments = _postgres_arguments(url)
    moved = [name for name in url.query if name not in _POSTGRES_KEPT]
    return url.difference_update_query(moved), arguments
