"""The local real cluster: a Flink standalone session cluster and a 3-broker KRaft Kafka cluster, as OS processes.

Why real processes and not the MiniCluster: a TaskManager, a JobManager or a broker that dies with `kill -9` is the
failure a production deployment has, and only separate JVMs can have it alone (docs/cluster.md).
"""
