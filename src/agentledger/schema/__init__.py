"""Schema administration: agentledger's Alembic revisions (where they live, running them on a
connection, the filters hosts use), the schema state, seed adoption and row-level security.

``agentledger.schema`` keeps the names it always had: ``upgrade``, ``downgrade``, ``stamp``,
``head_revision``, ``current_revisions``, ``include_object``, ``host_include_object``, ...;
``migration_lock`` (for a host's ``env.py``) and ``offline_upgrade_sql`` (``db upgrade --sql``).
"""

from agentledger.schema.alembic import (
    BRANCH_LABEL,
    HOST_VERSION_TABLE,
    MIGRATION_LOCK_TIMEOUT,
    VERSION_TABLE,
    alembic_config,
    downgrade,
    head_revision,
    host_include_object,
    include_object,
    migration_lock,
    migrations_path,
    offline_upgrade_sql,
    stamp,
    upgrade,
    versions_path,
)
from agentledger.schema.state import SchemaState, current_revisions, schema_state

__all__ = [
    "BRANCH_LABEL",
    "HOST_VERSION_TABLE",
    "MIGRATION_LOCK_TIMEOUT",
    "VERSION_TABLE",
    "SchemaState",
    "alembic_config",
    "current_revisions",
    "downgrade",
    "head_revision",
    "host_include_object",
    "include_object",
    "migration_lock",
    "migrations_path",
    "offline_upgrade_sql",
    "schema_state",
    "stamp",
    "upgrade",
    "versions_path",
]
