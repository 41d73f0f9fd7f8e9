"""agentledger's benchmark suite: ``make bench`` (full) or ``python -m bench --quick``.

See docs/performance.md for what it measures, how, and the latest numbers.
"""

import os

#: Set (to anything but "" or "0") to run every benchmark command in smoke mode: each workload
#: at a token size, files in a new temporary directory. Checks that the commands work (the test
#: suite runs docs/performance.md's commands so); the numbers mean nothing.
SMOKE_ENV = "AGENTLEDGER_BENCH_SMOKE"


def smoke_mode() -> bool:
    return os.environ.get(SMOKE_ENV, "") not in ("", "0")
