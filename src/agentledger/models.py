"""Kept for its documented import path: the models live in :mod:`agentledger.db.models`."""

from agentledger.db.models import *  # noqa: F403
