"""Kept for its documented import path; the module lives in agentledger.domain.transcripts."""

from agentledger.domain.transcripts import *  # noqa: F403
