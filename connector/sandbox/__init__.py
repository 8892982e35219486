"""A local stand-in for the vendors' Orders APIs, used by the tests and the demo."""

from connector.sandbox.app import Sandbox
from connector.sandbox.state import Faults, LoggedRequest, Store, Write
from connector.sandbox.validate import validate_order

__all__ = ["Faults", "LoggedRequest", "Sandbox", "Store", "Write", "validate_order"]
