"""Local replay servers for the exchanges' public trade APIs (tests only).

No machine here reaches an exchange, so each venue's connector is tested against a
server on 127.0.0.1 speaking that venue's documented protocol: its WebSocket stream and
the REST endpoints tvflux calls. :mod:`.harness` holds what every venue shares (the
server-side trade log, fault injection, the thread the server runs in); one module per
venue renders its messages and answers its REST requests."""
