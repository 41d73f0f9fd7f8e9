"""agentledger's benchmark suite: ``make bench`` (full) or ``python -m bench --quick``.

See docs/performance.md for what it measures, how, and the latest numbers.
"""
