from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_TYPE_UNSPECIFIED: _ClassVar[EventType]
    IMPRESSION: _ClassVar[EventType]
    CLICK: _ClassVar[EventType]
    ADD_TO_CART: _ClassVar[EventType]
    PURCHASE: _ClassVar[EventType]
EVENT_TYPE_UNSPECIFIED: EventType
IMPRESSION: EventType
CLICK: EventType
ADD_TO_CART: EventType
PURCHASE: EventType

class ItemAttributes(_message.Message):
    __slots__ = ("category", "brand", "shop", "price")
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    BRAND_FIELD_NUMBER: _ClassVar[int]
    SHOP_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    category: str
    brand: str
    shop: str
    price: float
    def __init__(self, category: _Optional[str] = ..., brand: _Optional[str] = ..., shop: _Optional[str] = ..., price: _Optional[float] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("event_id", "user_id", "item_id", "type", "ts_ms", "session_id", "request_id", "position", "scenario", "query", "item")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    SCENARIO_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    ITEM_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    user_id: str
    item_id: str
    type: EventType
    ts_ms: int
    session_id: str
    request_id: str
    position: int
    scenario: str
    query: str
    item: ItemAttributes
    def __init__(self, event_id: _Optional[str] = ..., user_id: _Optional[str] = ..., item_id: _Optional[str] = ..., type: _Optional[_Union[EventType, str]] = ..., ts_ms: _Optional[int] = ..., session_id: _Optional[str] = ..., request_id: _Optional[str] = ..., position: _Optional[int] = ..., scenario: _Optional[str] = ..., query: _Optional[str] = ..., item: _Optional[_Union[ItemAttributes, _Mapping]] = ...) -> None: ...

class Item(_message.Message):
    __slots__ = ("item_id", "title", "category", "brand", "price", "tags", "updated_ms")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    BRAND_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_MS_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    title: str
    category: str
    brand: str
    price: float
    tags: _containers.RepeatedScalarFieldContainer[str]
    updated_ms: int
    def __init__(self, item_id: _Optional[str] = ..., title: _Optional[str] = ..., category: _Optional[str] = ..., brand: _Optional[str] = ..., price: _Optional[float] = ..., tags: _Optional[_Iterable[str]] = ..., updated_ms: _Optional[int] = ...) -> None: ...
