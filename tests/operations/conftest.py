"""A real PgBouncer in transaction mode in front of the local PostgreSQL, for this package.

One PgBouncer per test process (session scope), started by the launcher the benchmark uses
too (:mod:`agentledger.testing_pgbouncer`), on a free loopback port, with 4 server connections
per database and user so that clients really share them; it is stopped when the session ends,
whatever happened. Each test gets a database of its own (so its own PgBouncer pool), migrated
on the direct URL: migrations never run through PgBouncer.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy.engine import make_url

from agentledger.testing import create_pg_database, drop_pg_database, pg_url
from agentledger.testing_pgbouncer import PgBouncer, running_pgbouncer
from tests.conftest import run_sync
from tests.support.docs import blocks, run_sql_script

#: The application role of docs/security.md (its GRANT block is run with a unique name).
DOC_ROLE = "agentledger_app"


@dataclass(frozen=True)
class Bouncer:
    """The running PgBouncer and the application role (not the tables' owner) it lets in."""

    pgbouncer: PgBouncer
    app_role: str


@dataclass(frozen=True)
class BouncedDatabase:
    """A database at head: its direct URL (PostgreSQL itself, as the owner) and its URLs
    through PgBouncer, as the owner and as the application role."""

    name: str
    direct_url: str
    url: str
    app_url: str
    app_role: str


@pytest.fixture(scope="session")
def bouncer() -> Iterator[Bouncer]:
    role = f"agentledger_bnc_{uuid.uuid4().hex[:10]}"
    run_sync(run_sql_script(pg_url("postgres"), f'CREATE ROLE "{role}" LOGIN'))
    try:
        with running_pgbouncer(users=("postgres", role), pool_size=4) as pgbouncer:
            yield Bouncer(pgbouncer, role)
    finally:
        run_sync(run_sql_script(pg_url("postgres"), f'DROP ROLE IF EXISTS "{role}"'))


@pytest.fixture
async def bounced(bouncer: Bouncer, pg_template: str) -> AsyncIterator[BouncedDatabase]:
    name = await create_pg_database(template=pg_template)
    try:
        (grants,) = [block.body for block in blocks("docs/security.md") if block.kind == "sql"]
        grants = re.sub(rf"CREATE ROLE {DOC_ROLE}[^;]*;", "", grants)
        await run_sql_script(pg_url(name), re.sub(rf"\b{DOC_ROLE}\b", bouncer.app_role, grants))
        url = bouncer.pgbouncer.url(name)
        app_url = make_url(url).set(username=bouncer.app_role)
        yield BouncedDatabase(
            name,
            pg_url(name),
            url,
            app_url.render_as_string(hide_password=False),
            bouncer.app_role,
        )
    finally:
        await drop_pg_database(name)
