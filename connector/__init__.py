"""orders-connector: Kafka order events, coalesced by external_id, synced to a commerce Orders API."""

__version__ = "0.2.0"

__all__ = ["__version__"]
