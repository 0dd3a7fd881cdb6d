"""The Kafka edge of abflow: the pinned jars, the local single-node broker, the topic catalogue and client factories.

Submodules are imported explicitly (`from experiment.kafka import broker`) so that importing the package stays cheap.
"""
