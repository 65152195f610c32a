"""Local Binance-compatible replay venue: stored market data over Binance's REST and WebSocket shapes.

``ReplayVenue`` replays the lake from a start to an end time at a chosen speed: REST market data,
exchangeInfo and premiumIndex up to its replay clock, WebSocket market streams (/market, /public)
from the replay driver, fault hooks, and with API credentials the paper broker's orders and user
data (/private). ``create_app`` builds the REST-only application; ``BackgroundServer`` runs an
application on 127.0.0.1 in a thread.
"""

from exchange.venue.app import create_app
from exchange.venue.clock import ReplayClock
from exchange.venue.faults import Faults
from exchange.venue.replay import ReplayConfig, ReplayVenue, VenueUrls
from exchange.venue.server import BackgroundServer
from exchange.venue.state import BinanceError, MarketData, VenueState

__all__ = [
    "BackgroundServer",
    "BinanceError",
    "Faults",
    "MarketData",
    "ReplayClock",
    "ReplayConfig",
    "ReplayVenue",
    "VenueState",
    "VenueUrls",
    "create_app",
]
