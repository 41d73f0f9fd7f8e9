"""Kept for its documented import path; the module lives in agentledger.domain.records."""

from agentledger.domain.records import *  # noqa: F403
