"""The I/O shell around the pure core: Kafka plumbing, the decider, executors.

`kafka` holds what every role shares (client configs, topics, the murmur2
partitioner, dead letters, replay helpers); each role lives in its own module.
"""
