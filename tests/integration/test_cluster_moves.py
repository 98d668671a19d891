"""tests/integration/test_cluster_moves.py — several nodes (cluster = on, test_cluster.py has the tests and their
helpers): a paused (SIGSTOP) owner fenced out, its late work refused and nothing lost or doubled; a node joining
while webhooks stream takes its share without losing anything; an owner killed with entries handed over and not
applied reads them again when it comes back.
Run: SB_BIN=build/release/switchboard python3 tests/integration/test_cluster_moves.py"""

import harness as h
from test_cluster import test_join_while_streaming, test_redelivered_after_restart, test_sigstop_fenced

if __name__ == "__main__":
    h.main(test_sigstop_fenced, test_join_while_streaming, test_redelivered_after_restart)
