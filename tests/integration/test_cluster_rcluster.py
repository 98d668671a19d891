"""tests/integration/test_cluster_rcluster.py — several nodes (cluster = on, test_cluster.py has the tests and their
helpers): three nodes and a kill -9 failover against a three-master Redis Cluster (ops/redis_cluster.sh) instead of
one Redis.
Run: SB_BIN=build/release/switchboard python3 tests/integration/test_cluster_rcluster.py"""

import harness as h
from test_cluster import test_on_redis_cluster

if __name__ == "__main__":
    h.main(test_on_redis_cluster)
