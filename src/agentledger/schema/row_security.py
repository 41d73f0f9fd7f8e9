"""PostgreSQL row-level security on agentledger's tables: tenant setting, switch and report.

Revision ``agentledger_0003`` puts one policy on each table (a row belongs to the tenant named by
the transaction-local setting :data:`TENANT_SETTING`); this module switches the tables'
row-level security on and off and says whether it protects the role the application connects
as. Policies never apply to superusers, to roles with BYPASSRLS, or to a table's owner, so the
application must connect as a role of its own (see ``docs/security.md``).

The setting is made with ``set_config(..., true)``: local to the transaction, so it ends with the
transaction and never survives in a pooled connection for the next caller to inherit.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, text

from agentledger.db import dialect as db_dialect
from agentledger.db.models import OWNED_TABLES
from agentledger.errors import UnsupportedBackendError

#: The transaction-local setting the policies compare ``agent_sessions.user_id`` with (the
#: unit of work sends it: ``agentledger.db.dialect.PostgreSQL.tenant_scope``).
TENANT_SETTING = db_dialect.TENANT_SETTING

#: Tables that hold no tenant's data and carry no policy: the API tokens are looked up before
#: the server knows who is calling (revision ``agentledger_0007``).
UNSCOPED_TABLES: frozenset[str] = frozenset({"agentledger_api_tokens"})

#: Every other agentledger table carries the policy; the switch covers them all at once.
PROTECTED_TABLES: tuple[str, ...] = tuple(sorted(OWNED_TABLES - UNSCOPED_TABLES))


@dataclass(frozen=True)
class RowSecurityStatus:
    """Whether row-level security is on for each table and whether it binds ``role``."""

    tables: dict[str, bool]
    role: str
    #: Why the policies do not restrict ``role`` even where they are on (None: they do).
    exempt_because: str | None

    @property
    def enabled(self) -> bool:
        """On for every agentledger table."""
        return all(self.tables.values())

    @property
    def protects_role(self) -> bool:
        """On everywhere, and the connected role is subject to it."""
        return self.enabled and self.exempt_because is None


def require_postgresql(connection: Connection) -> None:
    if connection.dialect.name != "postgresql":
        raise UnsupportedBackendError(
            "row-level security is a PostgreSQL feature; a SQLite database is one file that "
            "whoever can open it can read, so keep one file per tenant or use PostgreSQL"
        )


def switch(connection: Connection, enabled: bool) -> None:
    """Turn row-level security on or off for every agentledger table, in the caller's
    transaction (it needs the tables' owner)."""
    require_postgresql(connection)
    action = "ENABLE" if enabled else "DISABLE"
    for table in PROTECTED_TABLES:
        connection.exec_driver_sql(f"ALTER TABLE {table} {action} ROW LEVEL SECURITY")


def status(connection: Connection) -> RowSecurityStatus:
    """Read the tables' switches from the catalogs, and ask the server whether the policies
    bind the connected role (``row_security_active``): ownership through role membership, or
    any other exemption, counts as the server counts it."""
    require_postgresql(connection)
    rows = connection.execute(
        text(
            "SELECT c.relname, c.relrowsecurity, row_security_active(c.oid), "
            "pg_has_role(current_user, c.relowner, 'USAGE') "
            "FROM pg_class AS c WHERE c.oid = ANY(CAST(:names AS regclass[]))"
        ),
        {"names": list(PROTECTED_TABLES)},
    ).all()
    role, superuser, bypass = connection.execute(
        text("SELECT rolname, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
    ).one()
    owned = sorted(name for name, _on, _active, owner_rights in rows if owner_rights)
    inactive = sorted(name for name, on, active, _owner in rows if on and not active)
    exempt: str | None = None
    if superuser:
        exempt = f"role {role} is a superuser"
    elif bypass:
        exempt = f"role {role} has BYPASSRLS"
    elif owned:
        exempt = f"role {role} owns (or is a member of the owner of) {', '.join(owned)}"
    elif inactive:
        exempt = f"the server does not apply it to role {role} on {', '.join(inactive)}"
    return RowSecurityStatus(
        tables={name: bool(on) for name, on, _active, _owner in rows},
        role=role,
        exempt_because=exempt,
    )
