"""Kept for its documented import path; the module lives in agentledger.domain.windows."""

from agentledger.domain.windows import *  # noqa: F403
