"""AIOS contracts: one Avro schema per event (``avro/*.avsc``) and the codec that frames them."""

from aios.schemas.codec import Codec, WireFormat, load_catalog
from aios.schemas.errors import (
    AiosError,
    ConfigError,
    EncodeError,
    SchemaError,
    UndecodableError,
    UnknownSchemaError,
)

__all__ = [
    "AiosError",
    "Codec",
    "ConfigError",
    "EncodeError",
    "SchemaError",
    "UndecodableError",
    "UnknownSchemaError",
    "WireFormat",
    "load_catalog",
]
