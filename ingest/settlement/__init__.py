"""Settlement: ``markets`` (the market rules, pure), ``ports`` (the
:class:`~ingest.settlement.ports.Ledger` protocol the settler talks to, and what passes through
it) and ``settler`` (the consumer that turns the stored packets into settlement events)."""
