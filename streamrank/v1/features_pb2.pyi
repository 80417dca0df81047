from streamrank.v1 import events_pb2 as _events_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LabelPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LABEL_POLICY_WINDOW: _ClassVar[LabelPolicy]
    LABEL_POLICY_FAKE_NEGATIVE: _ClassVar[LabelPolicy]

class Emission(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EMISSION_WINDOW_CLOSED: _ClassVar[Emission]
    EMISSION_IMPRESSION: _ClassVar[Emission]
    EMISSION_POSITIVE: _ClassVar[Emission]
LABEL_POLICY_WINDOW: LabelPolicy
LABEL_POLICY_FAKE_NEGATIVE: LabelPolicy
EMISSION_WINDOW_CLOSED: Emission
EMISSION_IMPRESSION: Emission
EMISSION_POSITIVE: Emission

class BehaviorSequence(_message.Message):
    __slots__ = ("item_ids", "types", "ts_ms", "categories")
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    TYPES_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    types: _containers.RepeatedScalarFieldContainer[_events_pb2.EventType]
    ts_ms: _containers.RepeatedScalarFieldContainer[int]
    categories: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, item_ids: _Optional[_Iterable[str]] = ..., types: _Optional[_Iterable[_Union[_events_pb2.EventType, str]]] = ..., ts_ms: _Optional[_Iterable[int]] = ..., categories: _Optional[_Iterable[str]] = ...) -> None: ...

class UserFeatures(_message.Message):
    __slots__ = ("user_id", "behaviors", "updated_ms", "clicks", "add_to_carts", "purchases", "impressions", "item_clicks", "category_clicks")
    class ItemClicksEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class CategoryClicksEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    BEHAVIORS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_MS_FIELD_NUMBER: _ClassVar[int]
    CLICKS_FIELD_NUMBER: _ClassVar[int]
    ADD_TO_CARTS_FIELD_NUMBER: _ClassVar[int]
    PURCHASES_FIELD_NUMBER: _ClassVar[int]
    IMPRESSIONS_FIELD_NUMBER: _ClassVar[int]
    ITEM_CLICKS_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_CLICKS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    behaviors: BehaviorSequence
    updated_ms: int
    clicks: int
    add_to_carts: int
    purchases: int
    impressions: int
    item_clicks: _containers.ScalarMap[str, int]
    category_clicks: _containers.ScalarMap[str, int]
    def __init__(self, user_id: _Optional[str] = ..., behaviors: _Optional[_Union[BehaviorSequence, _Mapping]] = ..., updated_ms: _Optional[int] = ..., clicks: _Optional[int] = ..., add_to_carts: _Optional[int] = ..., purchases: _Optional[int] = ..., impressions: _Optional[int] = ..., item_clicks: _Optional[_Mapping[str, int]] = ..., category_clicks: _Optional[_Mapping[str, int]] = ...) -> None: ...

class Labels(_message.Message):
    __slots__ = ("click", "add_to_cart", "purchase")
    CLICK_FIELD_NUMBER: _ClassVar[int]
    ADD_TO_CART_FIELD_NUMBER: _ClassVar[int]
    PURCHASE_FIELD_NUMBER: _ClassVar[int]
    click: bool
    add_to_cart: bool
    purchase: bool
    def __init__(self, click: _Optional[bool] = ..., add_to_cart: _Optional[bool] = ..., purchase: _Optional[bool] = ...) -> None: ...

class ContextCounts(_message.Message):
    __slots__ = ("item_impressions", "item_clicks", "item_purchases", "user_item_clicks", "user_category_clicks")
    ITEM_IMPRESSIONS_FIELD_NUMBER: _ClassVar[int]
    ITEM_CLICKS_FIELD_NUMBER: _ClassVar[int]
    ITEM_PURCHASES_FIELD_NUMBER: _ClassVar[int]
    USER_ITEM_CLICKS_FIELD_NUMBER: _ClassVar[int]
    USER_CATEGORY_CLICKS_FIELD_NUMBER: _ClassVar[int]
    item_impressions: int
    item_clicks: int
    item_purchases: int
    user_item_clicks: int
    user_category_clicks: int
    def __init__(self, item_impressions: _Optional[int] = ..., item_clicks: _Optional[int] = ..., item_purchases: _Optional[int] = ..., user_item_clicks: _Optional[int] = ..., user_category_clicks: _Optional[int] = ...) -> None: ...

class TrainingSample(_message.Message):
    __slots__ = ("sample_id", "user_id", "item_id", "request_id", "session_id", "position", "scenario", "query", "impression_ts_ms", "labels", "behaviors", "item", "counts", "label_policy", "emission", "emitted_ts_ms")
    SAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    SCENARIO_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    IMPRESSION_TS_MS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    BEHAVIORS_FIELD_NUMBER: _ClassVar[int]
    ITEM_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    LABEL_POLICY_FIELD_NUMBER: _ClassVar[int]
    EMISSION_FIELD_NUMBER: _ClassVar[int]
    EMITTED_TS_MS_FIELD_NUMBER: _ClassVar[int]
    sample_id: str
    user_id: str
    item_id: str
    request_id: str
    session_id: str
    position: int
    scenario: str
    query: str
    impression_ts_ms: int
    labels: Labels
    behaviors: BehaviorSequence
    item: _events_pb2.ItemAttributes
    counts: ContextCounts
    label_policy: LabelPolicy
    emission: Emission
    emitted_ts_ms: int
    def __init__(self, sample_id: _Optional[str] = ..., user_id: _Optional[str] = ..., item_id: _Optional[str] = ..., request_id: _Optional[str] = ..., session_id: _Optional[str] = ..., position: _Optional[int] = ..., scenario: _Optional[str] = ..., query: _Optional[str] = ..., impression_ts_ms: _Optional[int] = ..., labels: _Optional[_Union[Labels, _Mapping]] = ..., behaviors: _Optional[_Union[BehaviorSequence, _Mapping]] = ..., item: _Optional[_Union[_events_pb2.ItemAttributes, _Mapping]] = ..., counts: _Optional[_Union[ContextCounts, _Mapping]] = ..., label_policy: _Optional[_Union[LabelPolicy, str]] = ..., emission: _Optional[_Union[Emission, str]] = ..., emitted_ts_ms: _Optional[int] = ...) -> None: ...

class CoocUpdate(_message.Message):
    __slots__ = ("item_id", "neighbor_ids", "deltas", "producer", "batch", "ts_ms")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    NEIGHBOR_IDS_FIELD_NUMBER: _ClassVar[int]
    DELTAS_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    neighbor_ids: _containers.RepeatedScalarFieldContainer[str]
    deltas: _containers.RepeatedScalarFieldContainer[int]
    producer: str
    batch: int
    ts_ms: int
    def __init__(self, item_id: _Optional[str] = ..., neighbor_ids: _Optional[_Iterable[str]] = ..., deltas: _Optional[_Iterable[int]] = ..., producer: _Optional[str] = ..., batch: _Optional[int] = ..., ts_ms: _Optional[int] = ...) -> None: ...

class ItemStats(_message.Message):
    __slots__ = ("scenario", "item_id", "producer", "impressions", "clicks", "add_to_carts", "purchases", "updated_ms")
    SCENARIO_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_FIELD_NUMBER: _ClassVar[int]
    IMPRESSIONS_FIELD_NUMBER: _ClassVar[int]
    CLICKS_FIELD_NUMBER: _ClassVar[int]
    ADD_TO_CARTS_FIELD_NUMBER: _ClassVar[int]
    PURCHASES_FIELD_NUMBER: _ClassVar[int]
    UPDATED_MS_FIELD_NUMBER: _ClassVar[int]
    scenario: str
    item_id: str
    producer: str
    impressions: int
    clicks: int
    add_to_carts: int
    purchases: int
    updated_ms: int
    def __init__(self, scenario: _Optional[str] = ..., item_id: _Optional[str] = ..., producer: _Optional[str] = ..., impressions: _Optional[int] = ..., clicks: _Optional[int] = ..., add_to_carts: _Optional[int] = ..., purchases: _Optional[int] = ..., updated_ms: _Optional[int] = ...) -> None: ...
