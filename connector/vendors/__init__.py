"""The vendors the connector syncs to: one module each, holding its client class and its registry entry.

An entry (:class:`Vendor`) says everything the rest of the code needs to know about a vendor: its
name (``sink.kind``), its API versions (the first is the default), its default budget, the header
carrying the key and the path prefix of its API, the model an order must satisfy per API version, how
an event names its order (the key changes are coalesced by), the modes it supports, whether a tenant
may name its store instead of a base URL, and its client class. A :class:`Target` (an entry and an
API version) is what an order is checked against and sent to.

Adding a vendor: write its model (``connector/models/<vendor>.py``) and its module here (the client
class, which owns an ``HttpClient``, and ``register(Vendor(...))``), and import the module below.
Settings, tenants, the read path, the mapping stage, the sandbox's routing and ``connector validate
--kind`` take it from the registry.
"""

from connector.vendors import loop, shoplazza
from connector.vendors._registry import (
    VENDORS,
    Mode,
    ShopRule,
    SinkClass,
    Target,
    Vendor,
    make_sink,
    modes,
    register,
    shop_kinds,
    target,
    unregister,
    vendor,
)

DEFAULT_TARGET = Target(loop.LOOP)
"""What :func:`connector.decode.decode` and the mapping stage read for when given no target: the
vendor of ``sink.kind``'s default, at its default API version."""

__all__ = [
    "DEFAULT_TARGET",
    "VENDORS",
    "Mode",
    "ShopRule",
    "SinkClass",
    "Target",
    "Vendor",
    "loop",
    "make_sink",
    "modes",
    "register",
    "shop_kinds",
    "shoplazza",
    "target",
    "unregister",
    "vendor",
]
