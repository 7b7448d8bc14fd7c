"""kinesis_producer: Python binding of the native Kinesis producer (a KPL equivalent).

    from kinesis_producer import Producer, deaggregate

    with Producer(KinesisEndpoint="http://127.0.0.1:4567", Region="us-east-1") as p:
        fut = p.put("my-stream", "key", b"data")
        print(fut.result().shard_id)

Pure Python over ctypes: loads libkinesis_producer_client.so and libkp_deagg.so from
$KP_LIB_DIR, the build tree (<repo>/build/lib) or the system loader path. See
bindings/README.md."""

from .deagg import Deaggregator, DeaggError, DeaggregationError, UserRecord, deaggregate
from .errors import (ConfigError, ErrorCode, InvalidRecord, KinesisProducerError, ProducerClosed,
                     PutFailed, QueueFull, Timeout, err2name, err2str)
from .producer import Attempt, Metric, Producer, PutResult, Stats

__version__ = "0.1.0"


def library_version():
    """The loaded client library's version string (kp_version_str)."""
    from . import _lib
    return _lib.client().kp_version_str().decode()


__all__ = [
    "Producer", "PutResult", "Attempt", "Stats", "Metric",
    "KinesisProducerError", "ConfigError", "InvalidRecord", "QueueFull", "ProducerClosed",
    "Timeout", "PutFailed", "ErrorCode", "err2str", "err2name",
    "deaggregate", "Deaggregator", "UserRecord", "DeaggregationError", "DeaggError",
    "library_version",
]
