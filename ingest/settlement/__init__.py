"""Settlement: ``markets`` (the market rules, pure) and ``settler`` (the consumer that turns the
stored packets into settlement events, behind the :class:`~ingest.settlement.settler.Ledger`
protocol)."""
