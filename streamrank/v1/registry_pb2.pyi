from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class ModelAnnouncement(_message.Message):
    __slots__ = ("model", "version", "checksum", "path", "created_ms", "metrics", "samples_seen", "trained_through_ms", "rollback")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    CREATED_MS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_SEEN_FIELD_NUMBER: _ClassVar[int]
    TRAINED_THROUGH_MS_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    checksum: str
    path: str
    created_ms: int
    metrics: _containers.ScalarMap[str, float]
    samples_seen: int
    trained_through_ms: int
    rollback: bool
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., checksum: _Optional[str] = ..., path: _Optional[str] = ..., created_ms: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., samples_seen: _Optional[int] = ..., trained_through_ms: _Optional[int] = ..., rollback: _Optional[bool] = ...) -> None: ...
