"""The Binance USDⓈ-M adapter on python-binance; the only package that imports python-binance.

- ``rest``: public market-data REST (klines, mark/premium klines, funding history) with paging,
  request-weight limits, backoff and vendor errors translated into ``core.errors``.
- ``streams``: market stream names, URLs and the router of combined-stream messages.
- ``payloads``: stream payloads as typed structures with Binance's field names, converted to
  ``exchange.updates``; a payload that does not parse raises ``core.errors.MalformedMessage``.
- ``connection``: one supervised combined-stream connection (reconnect forever with jittered
  backoff, silence watchdog, renewal before the 24 h limit).
"""
