"""Venue I/O: Binance USD-M client, payload parsers, order filters, paper and replay venues."""
