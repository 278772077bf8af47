"""Edge processes: they hold WebSocket/SSE clients and pass on the core's live bars, which
reach them from an :class:`~service.edge.upstream.Upstream` (the core's own ``/ws?v=2``
on one host, a NATS broker across hosts). Everything else they proxy to the core."""
