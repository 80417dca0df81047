from streamrank.v1 import events_pb2 as _events_pb2
from streamrank.v1 import features_pb2 as _features_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CandidateItem(_message.Message):
    __slots__ = ("item_id", "attributes")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    attributes: _events_pb2.ItemAttributes
    def __init__(self, item_id: _Optional[str] = ..., attributes: _Optional[_Union[_events_pb2.ItemAttributes, _Mapping]] = ...) -> None: ...

class RankRequest(_message.Message):
    __slots__ = ("request_id", "user_id", "query", "scenario", "candidates", "behaviors", "model", "version", "version_label")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    SCENARIO_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    BEHAVIORS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_LABEL_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    user_id: str
    query: str
    scenario: str
    candidates: _containers.RepeatedCompositeFieldContainer[CandidateItem]
    behaviors: _features_pb2.BehaviorSequence
    model: str
    version: int
    version_label: str
    def __init__(self, request_id: _Optional[str] = ..., user_id: _Optional[str] = ..., query: _Optional[str] = ..., scenario: _Optional[str] = ..., candidates: _Optional[_Iterable[_Union[CandidateItem, _Mapping]]] = ..., behaviors: _Optional[_Union[_features_pb2.BehaviorSequence, _Mapping]] = ..., model: _Optional[str] = ..., version: _Optional[int] = ..., version_label: _Optional[str] = ...) -> None: ...

class ScoredItem(_message.Message):
    __slots__ = ("item_id", "score")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    score: float
    def __init__(self, item_id: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class RankResponse(_message.Message):
    __slots__ = ("request_id", "items", "model", "model_version")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    items: _containers.RepeatedCompositeFieldContainer[ScoredItem]
    model: str
    model_version: int
    def __init__(self, request_id: _Optional[str] = ..., items: _Optional[_Iterable[_Union[ScoredItem, _Mapping]]] = ..., model: _Optional[str] = ..., model_version: _Optional[int] = ...) -> None: ...

class RetrieveRequest(_message.Message):
    __slots__ = ("request_id", "user_id", "k", "scenario", "exclude_seen", "query")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    SCENARIO_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_SEEN_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    user_id: str
    k: int
    scenario: str
    exclude_seen: bool
    query: str
    def __init__(self, request_id: _Optional[str] = ..., user_id: _Optional[str] = ..., k: _Optional[int] = ..., scenario: _Optional[str] = ..., exclude_seen: _Optional[bool] = ..., query: _Optional[str] = ...) -> None: ...

class RetrieveResponse(_message.Message):
    __slots__ = ("request_id", "items", "index", "index_version", "model", "model_version")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    items: _containers.RepeatedCompositeFieldContainer[ScoredItem]
    index: str
    index_version: int
    model: str
    model_version: int
    def __init__(self, request_id: _Optional[str] = ..., items: _Optional[_Iterable[_Union[ScoredItem, _Mapping]]] = ..., index: _Optional[str] = ..., index_version: _Optional[int] = ..., model: _Optional[str] = ..., model_version: _Optional[int] = ...) -> None: ...
