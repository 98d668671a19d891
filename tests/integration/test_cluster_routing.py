"""tests/integration/test_cluster_routing.py — several nodes (cluster = on, test_cluster.py has the tests and their
helpers): sends, cancels, settings, broadcasts and voice webhooks posted to nodes that do not own the tenant reach
the owner: order, pace and idempotency hold across nodes, and a send is committed and answered by the node that took
it, whatever its owner is doing.
Run: SB_BIN=build/release/switchboard python3 tests/integration/test_cluster_routing.py"""

import harness as h
from test_cluster import test_sends_across_nodes, test_sends_committed_where_taken, test_voice_across_nodes

if __name__ == "__main__":
    h.main(test_sends_across_nodes, test_sends_committed_where_taken, test_voice_across_nodes)
