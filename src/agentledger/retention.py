"""Kept for its documented import path; the module lives in agentledger.domain.retention."""

from agentledger.domain.retention import *  # noqa: F403
