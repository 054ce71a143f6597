"""The worker side: orchestration that imports no driver.

``supervisor`` (a follower per fixture and named side tasks), ``follower`` (one fixture's
connect / read / resume loop), ``writer`` (batches committed in order, the barrier, a
failover's rewind check), ``assignment`` (which fixtures are this worker's), ``retry`` (the one
retry policy), ``progress`` (what a run knows of each fixture: counters and state),
``tracker`` (those states as gauges and saved to the registry), ``reconcile`` (the watch on the
provider's summary) and ``ports`` (the protocols between all of these and their drivers).
"""
