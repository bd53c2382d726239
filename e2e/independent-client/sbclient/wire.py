"""Frames of docs/protocol.md: u32 BE length, type byte, FlatBuffers body, CRC-32 BE.

The Python FlatBuffers code is generated from schemas/signaling.fbs by the pinned flatc when
this module is first imported (sbclient.gen), so the client always speaks the schema under
test and nothing generated is committed that could drift.
"""

import importlib
import struct
import zlib
from dataclasses import dataclass

import flatbuffers

from . import gen

gen.ensure()

MIN_LENGTH = 5
MAX_LENGTH = 65536

# Type byte -> table name, the table of docs/protocol.md "Frame layout".
TYPES = {
    1: "Hello",
    2: "Welcome",
    3: "Join",
    4: "Joined",
    5: "Leave",
    6: "Invite",
    7: "InviteResult",
    8: "Offer",
    9: "Answer",
    10: "IceCandidate",
    11: "IceBatch",
    12: "Hangup",
    13: "Event",
    14: "Ping",
    15: "Pong",
    16: "Redirect",
    17: "Migrate",
    18: "Error",
}
TYPE_OF = {name: t for t, name in TYPES.items()}

# EventKind values of the schema.
MEMBER_JOINED, MEMBER_LEFT, CALL_STATE, MEMBER_SUSPENDED, MEMBER_RESUMED = range(5)
EVENT_KIND_NAMES = {
    MEMBER_JOINED: "MemberJoined",
    MEMBER_LEFT: "MemberLeft",
    CALL_STATE: "CallState",
    MEMBER_SUSPENDED: "MemberSuspended",
    MEMBER_RESUMED: "MemberResumed",
}


class FrameError(Exception):
    """A frame the server sent does not follow the documented layout."""


def _object_class(name):
    module = importlib.import_module(f"switchboard.wire.{name}")
    return getattr(module, name + "T")


_CLASSES = {name: _object_class(name) for name in TYPES.values()}
ResumeT = _object_class("Resume")
CandidateT = _object_class("Candidate")


@dataclass
class Frame:
    """One decoded frame: its table name and its fields as a plain dict (strings as str)."""

    name: str
    fields: dict

    def __getattr__(self, key):
        try:
            return self.fields[key]
        except KeyError as e:
            raise AttributeError(key) from e

    def __repr__(self):
        shown = {k: v for k, v in self.fields.items() if v not in (None, "", 0, [], False)}
        return f"{self.name}{shown}"


# The object API's attribute names (camelCase, `from_`) -> the schema's field names.
def _schema_name(attr):
    if attr == "from_":
        return "from"
    out = ""
    for ch in attr:
        out += "_" + ch.lower() if ch.isupper() else ch
    return out


def _attr_name(field):
    if field == "from":
        return "from_"
    head, *rest = field.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _plain(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if hasattr(value, "__dict__") and not isinstance(value, type):
        return {_schema_name(k): _plain(v) for k, v in vars(value).items()}
    return value


def _object(cls, fields):
    obj = cls()
    for key, value in fields.items():
        attr = _attr_name(key)
        if not hasattr(obj, attr):
            raise KeyError(f"{cls.__name__[:-1]} has no field {key!r}")
        setattr(obj, attr, value)
    return obj


def body(name, **fields):
    """Builds the FlatBuffers body of table `name` from schema field names."""
    obj = _object(_CLASSES[name], fields)
    if name == "Hello" and isinstance(fields.get("resume"), dict):
        obj.resume = _object(ResumeT, fields["resume"])
    if name == "IceBatch" and fields.get("candidates"):
        obj.candidates = [_object(CandidateT, c) for c in fields["candidates"]]
    builder = flatbuffers.Builder(256)
    builder.Finish(obj.Pack(builder))
    return bytes(builder.Output())


def frame_bytes(type_byte, body_bytes, crc=None, length=None):
    """Lays out one frame; `crc` and `length` override the computed values for bad-input tests."""
    payload = bytes([type_byte]) + body_bytes
    if crc is None:
        crc = zlib.crc32(payload) & 0xFFFFFFFF
    if length is None:
        length = len(payload) + 4
    return struct.pack(">I", length) + payload + struct.pack(">I", crc)


def encode(name, **fields):
    """One complete frame of table `name`."""
    return frame_bytes(TYPE_OF[name], body(name, **fields))


def decode(message):
    """Decodes one WebSocket message holding exactly one frame; raises FrameError."""
    if len(message) < 4 + MIN_LENGTH:
        raise FrameError(f"message of {len(message)} bytes is shorter than a frame")
    (length,) = struct.unpack(">I", message[:4])
    if not MIN_LENGTH <= length <= MAX_LENGTH:
        raise FrameError(f"length {length} outside {MIN_LENGTH}..{MAX_LENGTH}")
    if length != len(message) - 4:
        raise FrameError(f"length {length} but the message holds {len(message) - 4} bytes")
    payload, (crc,) = message[4:-4], struct.unpack(">I", message[-4:])
    if zlib.crc32(payload) & 0xFFFFFFFF != crc:
        raise FrameError("CRC mismatch")
    name = TYPES.get(payload[0])
    if name is None:
        raise FrameError(f"unknown frame type {payload[0]}")
    try:
        obj = _CLASSES[name].InitFromPackedBuf(bytearray(payload[1:]), 0)
    except Exception as e:  # the flatbuffers runtime raises assorted errors on garbage
        raise FrameError(f"undecodable {name} body: {e}") from e
    return Frame(name, _plain(obj))
