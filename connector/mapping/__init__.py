"""Bring your own events: envelopes the connector takes off, and mappings to the vendor's body.

The mapping stage runs between decode and coalesce (``_stage.py``): it takes the envelope off a
record (``mapping.envelope``: ``native``, ``cloudevents`` or ``debezium``; JSON, or Avro in the
Confluent wire format with ``mapping.registry_url``), applies the mapping (``mapping.file``: JMESPath
expressions, see ``_file.py``; or ``mapping.function``: a Python function, see :class:`Mapped` and
:class:`Event`), and reads the result exactly as a native event. Failures are dead-lettered with
stage ``map`` (:class:`~connector.errors.MappingError`), the expression or function, and the field.
"""

from connector.mapping._avro import Registry, schema_id
from connector.mapping._file import FileMapping
from connector.mapping._function import FunctionMapping, load_function
from connector.mapping._stage import NATIVE_STEP, Mapper, TenantMapping, compile_mapping, to_native
from connector.mapping._types import Event, Mapped, MappingFunction, Trace

__all__ = [
    "NATIVE_STEP",
    "Event",
    "FileMapping",
    "FunctionMapping",
    "Mapped",
    "Mapper",
    "MappingFunction",
    "Registry",
    "TenantMapping",
    "Trace",
    "compile_mapping",
    "load_function",
    "schema_id",
    "to_native",
]
