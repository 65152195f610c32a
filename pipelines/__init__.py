"""Batch work on Ray: history download, import, offline features, labels, backtests."""
