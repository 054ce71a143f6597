"""The provider's side: its vocabulary, what a frame is, the websocket client, the REST list.

``vocabulary`` (action and send types, statuses, the home/away rule), ``packet`` (classify a
frame, parse an action, how a fixture is keyed), ``client`` (the websocket feed as a
:class:`~ingest.worker.ports.Source`), ``discovery`` (the provider's REST fixtures list).
"""
