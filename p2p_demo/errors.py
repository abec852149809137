"""The one base class of every error this library (and its training, train/) raises on purpose.

``except P2PError`` catches anything p2p_demo refuses: a bad image or canvas value, nothing drawn,
a model that cannot be found or loaded, no network for the Hub, ... Each error also keeps the
built-in class it always had (ValueError, LookupError, ConnectionError, ...), so older handlers
still catch it.
"""


class P2PError(Exception):
    """Something p2p_demo refuses, said in words a user can act on."""
