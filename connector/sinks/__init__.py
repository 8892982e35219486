"""The vendor-client interface (:class:`Sink`) and the HTTP plumbing every vendor's client shares.

The clients themselves live with their vendors (``connector/vendors/``); :func:`connector.vendors.make_sink`
makes the one a deployment's settings name. This package imports no vendor.
"""

from connector.sinks._base import (
    BoundedCache,
    ErrorDetail,
    HttpClient,
    Prepaid,
    Sink,
    SinkOptions,
    parse_retry_after,
    raise_for_status,
)

__all__ = [
    "BoundedCache",
    "ErrorDetail",
    "HttpClient",
    "Prepaid",
    "Sink",
    "SinkOptions",
    "parse_retry_after",
    "raise_for_status",
]
