"""The Binance USDⓈ-M adapter; the only package that imports python-binance.

- ``rest``: public market-data REST (klines, mark/premium klines, funding history) with paging,
  request-weight limits, backoff and vendor errors translated into ``core.errors``.
- ``streams``: market stream names, URLs and the router of combined-stream messages.
- ``payloads``: stream payloads and signed REST answers (orders, algo orders, positions, balances,
  trades) as typed structures with Binance's field names, converted to ``exchange.updates`` and
  ``core.messages``; a payload that does not parse raises ``core.errors.MalformedMessage``.
- ``connection``: one supervised combined-stream connection (reconnect forever with jittered
  backoff, silence watchdog, renewal before the 24 h limit).
- ``trading``: the signed trading client (start-up checks, MARKET entries, algo SL/TP, cancels,
  queries, resolution of unknown outcomes by client id), on ``signed`` (HMAC signing, clock offset,
  rate limits, unknown-outcome vs rejection) and ``orders`` (client ids, rounding to the filters,
  Decimal wire values); it uses ``requests`` directly, not python-binance.
- ``user_stream``: the user data stream (listenKey lifecycle, 24 h rollover, ping watchdog, typed
  events, a ``Gap`` after every loss and the fills of the gap backfilled over REST exactly once).
"""
