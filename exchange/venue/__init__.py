"""Local Binance-compatible replay venue: serves stored market data over Binance's REST shapes.

``create_app`` builds the aiohttp application from a market-data source (the parquet lake) and the
venue's replay clock; ``BackgroundServer`` runs it on 127.0.0.1 in a thread for replay runs and
tests. A later issue adds WebSocket streams and orders.
"""

from exchange.venue.app import create_app
from exchange.venue.server import BackgroundServer
from exchange.venue.state import BinanceError, MarketData, VenueState

__all__ = ["BackgroundServer", "BinanceError", "MarketData", "VenueState", "create_app"]
