"""Requests as bytes: the largest valid request, counting before decoding, and decoding as a checked step.

The scorer receives Rank and Retrieve as raw bytes (no gRPC deserializer), so that

- a request that is not a valid message is the caller's error (INVALID_ARGUMENT, counted, one log line),
  not an exception inside gRPC's own deserializer (UNKNOWN with a traceback);
- the repeated fields a limit applies to are counted before the message is decoded. A full decode of a
  request with hundreds of thousands of tiny candidates allocates about six times its wire size before any
  limit could be checked (7.6 MB of wire took 47 MB); a *shallow* decode, the same field numbers declared
  as `bytes`, keeps views of the wire buffer and counts them for a fraction of that (0.6 MB, 9 ms for
  700,000 candidates; 8 us for a request of 200).

The receive limit is derived from the request limits (`max_request_bytes`): the wire size of the largest
request every limit allows, with 4-byte UTF-8 characters in every string, so no valid request is refused
for its size and nothing larger is read at all.

protobuf has no API to count a repeated field without decoding it, and the shallow message types are two
internal descriptors built here at import (not part of the API, so not in the .proto files).
"""

from __future__ import annotations

from typing import TypeVar

from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory

from streamrank.serve.requests import InvalidRequest, Limits

M = TypeVar("M", bound=message.Message)

_MAX_UTF8 = 4  # bytes per character, at most
_RANK_CANDIDATES, _RANK_BEHAVIORS = 5, 6  # RankRequest field numbers
_BEHAVIOR_ITEMS = 1  # BehaviorSequence.item_ids


def _shallow_types() -> tuple[type[message.Message], type[message.Message]]:
    """RankRequest and BehaviorSequence with only their limited repeated fields, each declared as bytes."""
    f = descriptor_pb2.FieldDescriptorProto
    fd = descriptor_pb2.FileDescriptorProto(name="streamrank_internal/shallow.proto", package="streamrank.internal",
                                            syntax="proto3")
    rank = fd.message_type.add(name="RankShallow")
    rank.field.add(name="candidates", number=_RANK_CANDIDATES, type=f.TYPE_BYTES, label=f.LABEL_REPEATED)
    # repeated, not singular: a message field sent twice is merged (its repeated fields concatenated)
    rank.field.add(name="behaviors", number=_RANK_BEHAVIORS, type=f.TYPE_BYTES, label=f.LABEL_REPEATED)
    seq = fd.message_type.add(name="BehaviorShallow")
    seq.field.add(name="item_ids", number=_BEHAVIOR_ITEMS, type=f.TYPE_BYTES, label=f.LABEL_REPEATED)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return (message_factory.GetMessageClass(pool.FindMessageTypeByName("streamrank.internal.RankShallow")),
            message_factory.GetMessageClass(pool.FindMessageTypeByName("streamrank.internal.BehaviorShallow")))


_RankShallow, _BehaviorShallow = _shallow_types()


def _varint_len(n: int) -> int:
    return max(1, (n.bit_length() + 6) // 7)


def _field(payload: int) -> int:
    """Wire bytes of one length-delimited field (1-byte tag, length varint, payload)."""
    return 1 + _varint_len(payload) + payload


def max_request_bytes(limits: Limits) -> int:
    """The wire size of the largest Rank request the limits allow (Retrieve requests are smaller): every id
    and string at its character limit in 4-byte UTF-8, every candidate with full attributes, the longest
    behaviour list with every column filled."""
    an_id = _field(_MAX_UTF8 * limits.max_id_chars)
    attributes = _field(3 * an_id + 9)  # category, brand, shop, and a double price
    candidate = _field(an_id + attributes)
    # per behaviour: item id, category, ts_ms and type (unpacked, each with its own tag: the larger encoding)
    behaviour = 2 * an_id + (1 + 10) + (1 + 2)
    behaviours = _field(limits.max_behaviors * behaviour)
    head = 4 * an_id + _field(_MAX_UTF8 * limits.max_query_chars)  # request_id, user_id, scenario, model, query
    return head + limits.max_candidates * candidate + behaviours


def check_rank_counts(raw: bytes, limits: Limits) -> None:
    """Raises InvalidRequest when a Rank request has more candidates or behaviours than allowed, or is not a
    message at all, without decoding the candidates."""
    try:
        shallow = _RankShallow.FromString(raw)
        n = len(shallow.candidates)
        if n > limits.max_candidates:
            raise InvalidRequest(f"{n} candidates (limit {limits.max_candidates})")
        behaviours = sum(len(_BehaviorShallow.FromString(chunk).item_ids) for chunk in shallow.behaviors)
    except message.DecodeError as exc:
        raise InvalidRequest(f"the request is not a valid RankRequest message ({exc})") from None
    if behaviours > limits.max_behaviors:
        raise InvalidRequest(f"{behaviours} behaviours (limit {limits.max_behaviors})")


def decode(cls: type[M], raw: bytes) -> M:
    """The message `cls` decoded from raw, or InvalidRequest naming the type (malformed wire, invalid UTF-8)."""
    try:
        return cls.FromString(raw)
    except message.DecodeError as exc:
        raise InvalidRequest(f"the request is not a valid {cls.DESCRIPTOR.name} message ({exc})") from None
