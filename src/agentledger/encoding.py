"""Kept for its documented import path; the module lives in agentledger.domain.encoding."""

from agentledger.domain.encoding import *  # noqa: F403
