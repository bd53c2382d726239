// src/errors.ts
var LABELS = {
  [1001 /* InvalidSdp */]: "invalid_sdp",
  [1002 /* Timeout */]: "timeout",
  [1003 /* AuthFailed */]: "auth_failed",
  [1004 /* InvalidTransition */]: "invalid_transition",
  [1005 /* RoomFull */]: "room_full",
  [1006 /* NotOwner */]: "not_owner",
  [1007 /* RateLimited */]: "rate_limited",
  [1008 /* BadFrame */]: "bad_frame",
  [1009 /* VersionUnsupported */]: "version_unsupported",
  [1010 /* Draining */]: "draining",
  [1011 /* Internal */]: "internal"
};
function errorCodeFrom(raw) {
  return raw in LABELS ? raw : void 0;
}
function errorLabel(raw) {
  const code = errorCodeFrom(raw);
  return code === void 0 ? "unknown" : LABELS[code];
}
var CloseCode = {
  Normal: 1e3,
  GoingAway: 1001,
  ProtocolError: 1002,
  Abnormal: 1006,
  PolicyViolation: 1008,
  TooBig: 1009,
  TryAgainLater: 1013
};
var ClientError = class _ClientError extends Error {
  constructor(kind, message, details = {}) {
    super(message);
    this.kind = kind;
    this.rawCode = details.rawCode;
    this.closeCode = details.closeCode;
    this.attempts = details.attempts;
    this.cause = details.cause;
  }
  kind;
  name = "ClientError";
  /** The protocol code as sent by the server, when it answered with an `Error` frame. */
  rawCode;
  /** The close code of the WebSocket, when a close ended the connection. */
  closeCode;
  /** Attempts made before giving up (reconnect_failed). */
  attempts;
  /** The wrapped error (reconnect_failed). */
  cause;
  /** The typed form of an `Error` frame. */
  static fromFrame(frame) {
    return new _ClientError(
      "server",
      `server error ${frame.code} (${errorLabel(frame.code)}): ${frame.message}`,
      { rawCode: frame.code }
    );
  }
  /** A malformed frame from the server. */
  static fromFrameError(err) {
    return new _ClientError("bad_frame", `bad frame from server: ${err.message}`);
  }
  /** The protocol error code, when the server answered with an `Error` frame. */
  get code() {
    if (this.kind === "reconnect_failed") return this.cause?.code;
    return this.rawCode === void 0 ? void 0 : errorCodeFrom(this.rawCode);
  }
  /** Whether retrying later can help (false for auth or version refusals and local mistakes). */
  get retriable() {
    switch (this.kind) {
      case "connect":
      case "websocket":
      case "timeout":
      case "connection_lost":
        return true;
      case "server":
        return this.code === 1010 /* Draining */ || this.code === 1011 /* Internal */ || this.code === 1002 /* Timeout */ || this.code === 1007 /* RateLimited */;
      default:
        return false;
    }
  }
};

// src/crc32.ts
var TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n2 = 0; n2 < 256; n2++) {
    let c = n2;
    for (let k = 0; k < 8; k++) {
      c = c & 1 ? 3988292384 ^ c >>> 1 : c >>> 1;
    }
    table[n2] = c >>> 0;
  }
  return table;
})();
function crc32Update(crc, bytes) {
  let c = ~crc >>> 0;
  for (let i = 0; i < bytes.length; i++) {
    c = TABLE[(c ^ bytes[i]) & 255] ^ c >>> 8;
  }
  return ~c >>> 0;
}

// src/frame.ts
var MIN_FRAME_LEN = 5;
var MAX_FRAME_LEN = 65536;
var MAX_BODY_LEN = MAX_FRAME_LEN - 1 - 4;
var FrameType = /* @__PURE__ */ ((FrameType2) => {
  FrameType2[FrameType2["Hello"] = 1] = "Hello";
  FrameType2[FrameType2["Welcome"] = 2] = "Welcome";
  FrameType2[FrameType2["Join"] = 3] = "Join";
  FrameType2[FrameType2["Joined"] = 4] = "Joined";
  FrameType2[FrameType2["Leave"] = 5] = "Leave";
  FrameType2[FrameType2["Invite"] = 6] = "Invite";
  FrameType2[FrameType2["InviteResult"] = 7] = "InviteResult";
  FrameType2[FrameType2["Offer"] = 8] = "Offer";
  FrameType2[FrameType2["Answer"] = 9] = "Answer";
  FrameType2[FrameType2["IceCandidate"] = 10] = "IceCandidate";
  FrameType2[FrameType2["IceBatch"] = 11] = "IceBatch";
  FrameType2[FrameType2["Hangup"] = 12] = "Hangup";
  FrameType2[FrameType2["Event"] = 13] = "Event";
  FrameType2[FrameType2["Ping"] = 14] = "Ping";
  FrameType2[FrameType2["Pong"] = 15] = "Pong";
  FrameType2[FrameType2["Redirect"] = 16] = "Redirect";
  FrameType2[FrameType2["Migrate"] = 17] = "Migrate";
  FrameType2[FrameType2["Error"] = 18] = "Error";
  return FrameType2;
})(FrameType || {});
function isFrameType(byte) {
  return Number.isInteger(byte) && byte >= 1 /* Hello */ && byte <= 18 /* Error */;
}
var FrameError = class extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind;
  }
  kind;
  name = "FrameError";
};
function encodeFrame(type, body) {
  if (body.length > MAX_BODY_LEN) {
    throw new FrameError("body_too_large", `body of ${body.length} bytes exceeds ${MAX_BODY_LEN}`);
  }
  const len = 1 + body.length + 4;
  const out = new Uint8Array(4 + len);
  const view = new DataView(out.buffer);
  view.setUint32(0, len, false);
  out[4] = type;
  out.set(body, 5);
  const crc = crc32Update(crc32Update(0, out.subarray(4, 5)), body);
  view.setUint32(5 + body.length, crc, false);
  return out;
}
function decodeFrame(bytes) {
  if (bytes.length < 4) {
    throw new FrameError("truncated", `truncated frame: needs ${4 + MIN_FRAME_LEN} bytes, message has ${bytes.length}`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const len = view.getUint32(0, false);
  if (len < MIN_FRAME_LEN) {
    throw new FrameError("too_short", `frame length field ${len} is below the minimum of ${MIN_FRAME_LEN}`);
  }
  if (len > MAX_FRAME_LEN) {
    throw new FrameError("too_long", `frame length field ${len} exceeds the maximum of ${MAX_FRAME_LEN}`);
  }
  const total = 4 + len;
  if (bytes.length < total) {
    throw new FrameError("truncated", `truncated frame: needs ${total} bytes, message has ${bytes.length}`);
  }
  if (bytes.length > total) {
    throw new FrameError("trailing_bytes", `${bytes.length - total} trailing bytes after a ${total}-byte frame`);
  }
  const expected = view.getUint32(total - 4, false);
  const actual = crc32Update(0, bytes.subarray(4, total - 4));
  if (expected !== actual) {
    throw new FrameError(
      "crc_mismatch",
      `crc mismatch: trailer says 0x${hex(expected)}, type and body hash to 0x${hex(actual)}`
    );
  }
  const type = bytes[4];
  if (!isFrameType(type)) {
    throw new FrameError("unknown_type", `unknown frame type byte ${type}`);
  }
  return { type, body: bytes.subarray(5, total - 4) };
}
function hex(n2) {
  return n2.toString(16).padStart(8, "0");
}

// node_modules/flatbuffers/mjs/constants.js
var SIZEOF_SHORT = 2;
var SIZEOF_INT = 4;
var FILE_IDENTIFIER_LENGTH = 4;
var SIZE_PREFIX_LENGTH = 4;

// node_modules/flatbuffers/mjs/utils.js
var int32 = new Int32Array(2);
var float32 = new Float32Array(int32.buffer);
var float64 = new Float64Array(int32.buffer);
var isLittleEndian = new Uint16Array(new Uint8Array([1, 0]).buffer)[0] === 1;

// node_modules/flatbuffers/mjs/encoding.js
var Encoding;
(function(Encoding2) {
  Encoding2[Encoding2["UTF8_BYTES"] = 1] = "UTF8_BYTES";
  Encoding2[Encoding2["UTF16_STRING"] = 2] = "UTF16_STRING";
})(Encoding || (Encoding = {}));

// node_modules/flatbuffers/mjs/byte-buffer.js
var ByteBuffer = class _ByteBuffer {
  /**
   * Create a new ByteBuffer with a given array of bytes (`Uint8Array`)
   */
  constructor(bytes_) {
    this.bytes_ = bytes_;
    this.position_ = 0;
    this.text_decoder_ = new TextDecoder();
  }
  /**
   * Create and allocate a new ByteBuffer with a given size.
   */
  static allocate(byte_size) {
    return new _ByteBuffer(new Uint8Array(byte_size));
  }
  clear() {
    this.position_ = 0;
  }
  /**
   * Get the underlying `Uint8Array`.
   */
  bytes() {
    return this.bytes_;
  }
  /**
   * Get the buffer's position.
   */
  position() {
    return this.position_;
  }
  /**
   * Set the buffer's position.
   */
  setPosition(position) {
    this.position_ = position;
  }
  /**
   * Get the buffer's capacity.
   */
  capacity() {
    return this.bytes_.length;
  }
  readInt8(offset) {
    return this.readUint8(offset) << 24 >> 24;
  }
  readUint8(offset) {
    return this.bytes_[offset];
  }
  readInt16(offset) {
    return this.readUint16(offset) << 16 >> 16;
  }
  readUint16(offset) {
    return this.bytes_[offset] | this.bytes_[offset + 1] << 8;
  }
  readInt32(offset) {
    return this.bytes_[offset] | this.bytes_[offset + 1] << 8 | this.bytes_[offset + 2] << 16 | this.bytes_[offset + 3] << 24;
  }
  readUint32(offset) {
    return this.readInt32(offset) >>> 0;
  }
  readInt64(offset) {
    return BigInt.asIntN(64, BigInt(this.readUint32(offset)) + (BigInt(this.readUint32(offset + 4)) << BigInt(32)));
  }
  readUint64(offset) {
    return BigInt.asUintN(64, BigInt(this.readUint32(offset)) + (BigInt(this.readUint32(offset + 4)) << BigInt(32)));
  }
  readFloat32(offset) {
    int32[0] = this.readInt32(offset);
    return float32[0];
  }
  readFloat64(offset) {
    int32[isLittleEndian ? 0 : 1] = this.readInt32(offset);
    int32[isLittleEndian ? 1 : 0] = this.readInt32(offset + 4);
    return float64[0];
  }
  writeInt8(offset, value) {
    this.bytes_[offset] = value;
  }
  writeUint8(offset, value) {
    this.bytes_[offset] = value;
  }
  writeInt16(offset, value) {
    this.bytes_[offset] = value;
    this.bytes_[offset + 1] = value >> 8;
  }
  writeUint16(offset, value) {
    this.bytes_[offset] = value;
    this.bytes_[offset + 1] = value >> 8;
  }
  writeInt32(offset, value) {
    this.bytes_[offset] = value;
    this.bytes_[offset + 1] = value >> 8;
    this.bytes_[offset + 2] = value >> 16;
    this.bytes_[offset + 3] = value >> 24;
  }
  writeUint32(offset, value) {
    this.bytes_[offset] = value;
    this.bytes_[offset + 1] = value >> 8;
    this.bytes_[offset + 2] = value >> 16;
    this.bytes_[offset + 3] = value >> 24;
  }
  writeInt64(offset, value) {
    this.writeInt32(offset, Number(BigInt.asIntN(32, value)));
    this.writeInt32(offset + 4, Number(BigInt.asIntN(32, value >> BigInt(32))));
  }
  writeUint64(offset, value) {
    this.writeUint32(offset, Number(BigInt.asUintN(32, value)));
    this.writeUint32(offset + 4, Number(BigInt.asUintN(32, value >> BigInt(32))));
  }
  writeFloat32(offset, value) {
    float32[0] = value;
    this.writeInt32(offset, int32[0]);
  }
  writeFloat64(offset, value) {
    float64[0] = value;
    this.writeInt32(offset, int32[isLittleEndian ? 0 : 1]);
    this.writeInt32(offset + 4, int32[isLittleEndian ? 1 : 0]);
  }
  /**
   * Return the file identifier.   Behavior is undefined for FlatBuffers whose
   * schema does not include a file_identifier (likely points at padding or the
   * start of a the root vtable).
   */
  getBufferIdentifier() {
    if (this.bytes_.length < this.position_ + SIZEOF_INT + FILE_IDENTIFIER_LENGTH) {
      throw new Error("FlatBuffers: ByteBuffer is too short to contain an identifier.");
    }
    let result = "";
    for (let i = 0; i < FILE_IDENTIFIER_LENGTH; i++) {
      result += String.fromCharCode(this.readInt8(this.position_ + SIZEOF_INT + i));
    }
    return result;
  }
  /**
   * Look up a field in the vtable, return an offset into the object, or 0 if the
   * field is not present.
   */
  __offset(bb_pos, vtable_offset) {
    const vtable = bb_pos - this.readInt32(bb_pos);
    return vtable_offset < this.readInt16(vtable) ? this.readInt16(vtable + vtable_offset) : 0;
  }
  /**
   * Initialize any Table-derived type to point to the union at the given offset.
   */
  __union(t, offset) {
    t.bb_pos = offset + this.readInt32(offset);
    t.bb = this;
    return t;
  }
  /**
   * Create a JavaScript string from UTF-8 data stored inside the FlatBuffer.
   * This allocates a new string and converts to wide chars upon each access.
   *
   * To avoid the conversion to string, pass Encoding.UTF8_BYTES as the
   * "optionalEncoding" argument. This is useful for avoiding conversion when
   * the data will just be packaged back up in another FlatBuffer later on.
   *
   * @param offset
   * @param opt_encoding Defaults to UTF16_STRING
   */
  __string(offset, opt_encoding) {
    offset += this.readInt32(offset);
    const length = this.readInt32(offset);
    offset += SIZEOF_INT;
    const utf8bytes = this.bytes_.subarray(offset, offset + length);
    if (opt_encoding === Encoding.UTF8_BYTES)
      return utf8bytes;
    else
      return this.text_decoder_.decode(utf8bytes);
  }
  /**
   * Handle unions that can contain string as its member, if a Table-derived type then initialize it,
   * if a string then return a new one
   *
   * WARNING: strings are immutable in JS so we can't change the string that the user gave us, this
   * makes the behaviour of __union_with_string different compared to __union
   */
  __union_with_string(o, offset) {
    if (typeof o === "string") {
      return this.__string(offset);
    }
    return this.__union(o, offset);
  }
  /**
   * Retrieve the relative offset stored at "offset"
   */
  __indirect(offset) {
    return offset + this.readInt32(offset);
  }
  /**
   * Get the start of data of a vector whose offset is stored at "offset" in this object.
   */
  __vector(offset) {
    return offset + this.readInt32(offset) + SIZEOF_INT;
  }
  /**
   * Get the length of a vector whose offset is stored at "offset" in this object.
   */
  __vector_len(offset) {
    return this.readInt32(offset + this.readInt32(offset));
  }
  __has_identifier(ident) {
    if (ident.length != FILE_IDENTIFIER_LENGTH) {
      throw new Error("FlatBuffers: file identifier must be length " + FILE_IDENTIFIER_LENGTH);
    }
    for (let i = 0; i < FILE_IDENTIFIER_LENGTH; i++) {
      if (ident.charCodeAt(i) != this.readInt8(this.position() + SIZEOF_INT + i)) {
        return false;
      }
    }
    return true;
  }
  /**
   * A helper function for generating list for obj api
   */
  createScalarList(listAccessor, listLength) {
    const ret = [];
    for (let i = 0; i < listLength; ++i) {
      const val = listAccessor(i);
      if (val !== null) {
        ret.push(val);
      }
    }
    return ret;
  }
  /**
   * A helper function for generating list for obj api
   * @param listAccessor function that accepts an index and return data at that index
   * @param listLength listLength
   * @param res result list
   */
  createObjList(listAccessor, listLength) {
    const ret = [];
    for (let i = 0; i < listLength; ++i) {
      const val = listAccessor(i);
      if (val !== null) {
        ret.push(val.unpack());
      }
    }
    return ret;
  }
};

// node_modules/flatbuffers/mjs/builder.js
var Builder = class _Builder {
  /**
   * Create a FlatBufferBuilder.
   */
  constructor(opt_initial_size) {
    this.minalign = 1;
    this.vtable = null;
    this.vtable_in_use = 0;
    this.isNested = false;
    this.object_start = 0;
    this.vtables = [];
    this.vector_num_elems = 0;
    this.force_defaults = false;
    this.string_maps = null;
    this.text_encoder = new TextEncoder();
    let initial_size;
    if (!opt_initial_size) {
      initial_size = 1024;
    } else {
      initial_size = opt_initial_size;
    }
    this.bb = ByteBuffer.allocate(initial_size);
    this.space = initial_size;
  }
  clear() {
    this.bb.clear();
    this.space = this.bb.capacity();
    this.minalign = 1;
    this.vtable = null;
    this.vtable_in_use = 0;
    this.isNested = false;
    this.object_start = 0;
    this.vtables = [];
    this.vector_num_elems = 0;
    this.force_defaults = false;
    this.string_maps = null;
  }
  /**
   * In order to save space, fields that are set to their default value
   * don't get serialized into the buffer. Forcing defaults provides a
   * way to manually disable this optimization.
   *
   * @param forceDefaults true always serializes default values
   */
  forceDefaults(forceDefaults) {
    this.force_defaults = forceDefaults;
  }
  /**
   * Get the ByteBuffer representing the FlatBuffer. Only call this after you've
   * called finish(). The actual data starts at the ByteBuffer's current position,
   * not necessarily at 0.
   */
  dataBuffer() {
    return this.bb;
  }
  /**
   * Get the bytes representing the FlatBuffer. Only call this after you've
   * called finish().
   */
  asUint8Array() {
    return this.bb.bytes().subarray(this.bb.position(), this.bb.position() + this.offset());
  }
  /**
   * Prepare to write an element of `size` after `additional_bytes` have been
   * written, e.g. if you write a string, you need to align such the int length
   * field is aligned to 4 bytes, and the string data follows it directly. If all
   * you need to do is alignment, `additional_bytes` will be 0.
   *
   * @param size This is the of the new element to write
   * @param additional_bytes The padding size
   */
  prep(size, additional_bytes) {
    if (size > this.minalign) {
      this.minalign = size;
    }
    const align_size = ~(this.bb.capacity() - this.space + additional_bytes) + 1 & size - 1;
    while (this.space < align_size + size + additional_bytes) {
      const old_buf_size = this.bb.capacity();
      this.bb = _Builder.growByteBuffer(this.bb);
      this.space += this.bb.capacity() - old_buf_size;
    }
    this.pad(align_size);
  }
  pad(byte_size) {
    for (let i = 0; i < byte_size; i++) {
      this.bb.writeInt8(--this.space, 0);
    }
  }
  writeInt8(value) {
    this.bb.writeInt8(this.space -= 1, value);
  }
  writeInt16(value) {
    this.bb.writeInt16(this.space -= 2, value);
  }
  writeInt32(value) {
    this.bb.writeInt32(this.space -= 4, value);
  }
  writeInt64(value) {
    this.bb.writeInt64(this.space -= 8, value);
  }
  writeFloat32(value) {
    this.bb.writeFloat32(this.space -= 4, value);
  }
  writeFloat64(value) {
    this.bb.writeFloat64(this.space -= 8, value);
  }
  /**
   * Add an `int8` to the buffer, properly aligned, and grows the buffer (if necessary).
   * @param value The `int8` to add the buffer.
   */
  addInt8(value) {
    this.prep(1, 0);
    this.writeInt8(value);
  }
  /**
   * Add an `int16` to the buffer, properly aligned, and grows the buffer (if necessary).
   * @param value The `int16` to add the buffer.
   */
  addInt16(value) {
    this.prep(2, 0);
    this.writeInt16(value);
  }
  /**
   * Add an `int32` to the buffer, properly aligned, and grows the buffer (if necessary).
   * @param value The `int32` to add the buffer.
   */
  addInt32(value) {
    this.prep(4, 0);
    this.writeInt32(value);
  }
  /**
   * Add an `int64` to the buffer, properly aligned, and grows the buffer (if necessary).
   * @param value The `int64` to add the buffer.
   */
  addInt64(value) {
    this.prep(8, 0);
    this.writeInt64(value);
  }
  /**
   * Add a `float32` to the buffer, properly aligned, and grows the buffer (if necessary).
   * @param value The `float32` to add the buffer.
   */
  addFloat32(value) {
    this.prep(4, 0);
    this.writeFloat32(value);
  }
  /**
   * Add a `float64` to the buffer, properly aligned, and grows the buffer (if necessary).
   * @param value The `float64` to add the buffer.
   */
  addFloat64(value) {
    this.prep(8, 0);
    this.writeFloat64(value);
  }
  addFieldInt8(voffset, value, defaultValue) {
    if (this.force_defaults || value != defaultValue) {
      this.addInt8(value);
      this.slot(voffset);
    }
  }
  addFieldInt16(voffset, value, defaultValue) {
    if (this.force_defaults || value != defaultValue) {
      this.addInt16(value);
      this.slot(voffset);
    }
  }
  addFieldInt32(voffset, value, defaultValue) {
    if (this.force_defaults || value != defaultValue) {
      this.addInt32(value);
      this.slot(voffset);
    }
  }
  addFieldInt64(voffset, value, defaultValue) {
    if (this.force_defaults || value !== defaultValue) {
      this.addInt64(value);
      this.slot(voffset);
    }
  }
  addFieldFloat32(voffset, value, defaultValue) {
    if (this.force_defaults || value != defaultValue) {
      this.addFloat32(value);
      this.slot(voffset);
    }
  }
  addFieldFloat64(voffset, value, defaultValue) {
    if (this.force_defaults || value != defaultValue) {
      this.addFloat64(value);
      this.slot(voffset);
    }
  }
  addFieldOffset(voffset, value, defaultValue) {
    if (this.force_defaults || value != defaultValue) {
      this.addOffset(value);
      this.slot(voffset);
    }
  }
  /**
   * Structs are stored inline, so nothing additional is being added. `d` is always 0.
   */
  addFieldStruct(voffset, value, defaultValue) {
    if (value != defaultValue) {
      this.nested(value);
      this.slot(voffset);
    }
  }
  /**
   * Structures are always stored inline, they need to be created right
   * where they're used.  You'll get this assertion failure if you
   * created it elsewhere.
   */
  nested(obj) {
    if (obj != this.offset()) {
      throw new TypeError("FlatBuffers: struct must be serialized inline.");
    }
  }
  /**
   * Should not be creating any other object, string or vector
   * while an object is being constructed
   */
  notNested() {
    if (this.isNested) {
      throw new TypeError("FlatBuffers: object serialization must not be nested.");
    }
  }
  /**
   * Set the current vtable at `voffset` to the current location in the buffer.
   */
  slot(voffset) {
    if (this.vtable !== null)
      this.vtable[voffset] = this.offset();
  }
  /**
   * @returns Offset relative to the end of the buffer.
   */
  offset() {
    return this.bb.capacity() - this.space;
  }
  /**
   * Doubles the size of the backing ByteBuffer and copies the old data towards
   * the end of the new buffer (since we build the buffer backwards).
   *
   * @param bb The current buffer with the existing data
   * @returns A new byte buffer with the old data copied
   * to it. The data is located at the end of the buffer.
   *
   * uint8Array.set() formally takes {Array<number>|ArrayBufferView}, so to pass
   * it a uint8Array we need to suppress the type check:
   * @suppress {checkTypes}
   */
  static growByteBuffer(bb) {
    const old_buf_size = bb.capacity();
    if (old_buf_size & 3221225472) {
      throw new Error("FlatBuffers: cannot grow buffer beyond 2 gigabytes.");
    }
    const new_buf_size = old_buf_size << 1;
    const nbb = ByteBuffer.allocate(new_buf_size);
    nbb.setPosition(new_buf_size - old_buf_size);
    nbb.bytes().set(bb.bytes(), new_buf_size - old_buf_size);
    return nbb;
  }
  /**
   * Adds on offset, relative to where it will be written.
   *
   * @param offset The offset to add.
   */
  addOffset(offset) {
    this.prep(SIZEOF_INT, 0);
    this.writeInt32(this.offset() - offset + SIZEOF_INT);
  }
  /**
   * Start encoding a new object in the buffer.  Users will not usually need to
   * call this directly. The FlatBuffers compiler will generate helper methods
   * that call this method internally.
   */
  startObject(numfields) {
    this.notNested();
    if (this.vtable == null) {
      this.vtable = [];
    }
    this.vtable_in_use = numfields;
    for (let i = 0; i < numfields; i++) {
      this.vtable[i] = 0;
    }
    this.isNested = true;
    this.object_start = this.offset();
  }
  /**
   * Finish off writing the object that is under construction.
   *
   * @returns The offset to the object inside `dataBuffer`
   */
  endObject() {
    if (this.vtable == null || !this.isNested) {
      throw new Error("FlatBuffers: endObject called without startObject");
    }
    this.addInt32(0);
    const vtableloc = this.offset();
    let i = this.vtable_in_use - 1;
    for (; i >= 0 && this.vtable[i] == 0; i--) {
    }
    const trimmed_size = i + 1;
    for (; i >= 0; i--) {
      this.addInt16(this.vtable[i] != 0 ? vtableloc - this.vtable[i] : 0);
    }
    const standard_fields = 2;
    this.addInt16(vtableloc - this.object_start);
    const len = (trimmed_size + standard_fields) * SIZEOF_SHORT;
    this.addInt16(len);
    let existing_vtable = 0;
    const vt1 = this.space;
    outer_loop: for (i = 0; i < this.vtables.length; i++) {
      const vt2 = this.bb.capacity() - this.vtables[i];
      if (len == this.bb.readInt16(vt2)) {
        for (let j = SIZEOF_SHORT; j < len; j += SIZEOF_SHORT) {
          if (this.bb.readInt16(vt1 + j) != this.bb.readInt16(vt2 + j)) {
            continue outer_loop;
          }
        }
        existing_vtable = this.vtables[i];
        break;
      }
    }
    if (existing_vtable) {
      this.space = this.bb.capacity() - vtableloc;
      this.bb.writeInt32(this.space, existing_vtable - vtableloc);
    } else {
      this.vtables.push(this.offset());
      this.bb.writeInt32(this.bb.capacity() - vtableloc, this.offset() - vtableloc);
    }
    this.isNested = false;
    return vtableloc;
  }
  /**
   * Finalize a buffer, poiting to the given `root_table`.
   */
  finish(root_table, opt_file_identifier, opt_size_prefix) {
    const size_prefix = opt_size_prefix ? SIZE_PREFIX_LENGTH : 0;
    if (opt_file_identifier) {
      const file_identifier = opt_file_identifier;
      this.prep(this.minalign, SIZEOF_INT + FILE_IDENTIFIER_LENGTH + size_prefix);
      if (file_identifier.length != FILE_IDENTIFIER_LENGTH) {
        throw new TypeError("FlatBuffers: file identifier must be length " + FILE_IDENTIFIER_LENGTH);
      }
      for (let i = FILE_IDENTIFIER_LENGTH - 1; i >= 0; i--) {
        this.writeInt8(file_identifier.charCodeAt(i));
      }
    }
    this.prep(this.minalign, SIZEOF_INT + size_prefix);
    this.addOffset(root_table);
    if (size_prefix) {
      this.addInt32(this.bb.capacity() - this.space);
    }
    this.bb.setPosition(this.space);
  }
  /**
   * Finalize a size prefixed buffer, pointing to the given `root_table`.
   */
  finishSizePrefixed(root_table, opt_file_identifier) {
    this.finish(root_table, opt_file_identifier, true);
  }
  /**
   * This checks a required field has been set in a given table that has
   * just been constructed.
   */
  requiredField(table, field) {
    const table_start = this.bb.capacity() - table;
    const vtable_start = table_start - this.bb.readInt32(table_start);
    const ok = field < this.bb.readInt16(vtable_start) && this.bb.readInt16(vtable_start + field) != 0;
    if (!ok) {
      throw new TypeError("FlatBuffers: field " + field + " must be set");
    }
  }
  /**
   * Start a new array/vector of objects.  Users usually will not call
   * this directly. The FlatBuffers compiler will create a start/end
   * method for vector types in generated code.
   *
   * @param elem_size The size of each element in the array
   * @param num_elems The number of elements in the array
   * @param alignment The alignment of the array
   */
  startVector(elem_size, num_elems, alignment) {
    this.notNested();
    this.vector_num_elems = num_elems;
    this.prep(SIZEOF_INT, elem_size * num_elems);
    this.prep(alignment, elem_size * num_elems);
  }
  /**
   * Finish off the creation of an array and all its elements. The array must be
   * created with `startVector`.
   *
   * @returns The offset at which the newly created array
   * starts.
   */
  endVector() {
    this.writeInt32(this.vector_num_elems);
    return this.offset();
  }
  /**
   * Encode the string `s` in the buffer using UTF-8. If the string passed has
   * already been seen, we return the offset of the already written string
   *
   * @param s The string to encode
   * @return The offset in the buffer where the encoded string starts
   */
  createSharedString(s2) {
    if (!s2) {
      return 0;
    }
    if (!this.string_maps) {
      this.string_maps = /* @__PURE__ */ new Map();
    }
    if (this.string_maps.has(s2)) {
      return this.string_maps.get(s2);
    }
    const offset = this.createString(s2);
    this.string_maps.set(s2, offset);
    return offset;
  }
  /**
   * Encode the string `s` in the buffer using UTF-8. If a Uint8Array is passed
   * instead of a string, it is assumed to contain valid UTF-8 encoded data.
   *
   * @param s The string to encode
   * @return The offset in the buffer where the encoded string starts
   */
  createString(s2) {
    if (s2 === null || s2 === void 0) {
      return 0;
    }
    let utf8;
    if (s2 instanceof Uint8Array) {
      utf8 = s2;
    } else {
      utf8 = this.text_encoder.encode(s2);
    }
    this.addInt8(0);
    this.startVector(1, utf8.length, 1);
    this.bb.setPosition(this.space -= utf8.length);
    this.bb.bytes().set(utf8, this.space);
    return this.endVector();
  }
  /**
   * Create a byte vector.
   *
   * @param v The bytes to add
   * @returns The offset in the buffer where the byte vector starts
   */
  createByteVector(v) {
    if (v === null || v === void 0) {
      return 0;
    }
    this.startVector(1, v.length, 1);
    this.bb.setPosition(this.space -= v.length);
    this.bb.bytes().set(v, this.space);
    return this.endVector();
  }
  /**
   * A helper function to pack an object
   *
   * @returns offset of obj
   */
  createObjectOffset(obj) {
    if (obj === null) {
      return 0;
    }
    if (typeof obj === "string") {
      return this.createString(obj);
    } else {
      return obj.pack(this);
    }
  }
  /**
   * A helper function to pack a list of object
   *
   * @returns list of offsets of each non null object
   */
  createObjectOffsetList(list) {
    const ret = [];
    for (let i = 0; i < list.length; ++i) {
      const val = list[i];
      if (val !== null) {
        ret.push(this.createObjectOffset(val));
      } else {
        throw new TypeError("FlatBuffers: Argument for createObjectOffsetList cannot contain null.");
      }
    }
    return ret;
  }
  createStructOffsetList(list, startFunc) {
    startFunc(this, list.length);
    this.createObjectOffsetList(list.slice().reverse());
    return this.endVector();
  }
};

// src/generated/switchboard/wire/answer.ts
var Answer = class _Answer {
  bb = null;
  bb_pos = 0;
  __init(i, bb) {
    this.bb_pos = i;
    this.bb = bb;
    return this;
  }
  static getRootAsAnswer(bb, obj) {
    return (obj || new _Answer()).__init(bb.readInt32(bb.position()) + bb.position(), bb);
  }
  static getSizePrefixedRootAsAnswer(bb, obj) {
    bb.setPosition(bb.position() + SIZE_PREFIX_LENGTH);
    return (obj || new _Answer()).__init(bb.readInt32(bb.position()) + bb.position(), bb);
  }
  requestId() {
    const offset = this.bb.__offset(this.bb_pos, 4);
    return offset ? this.bb.readUint32(this.bb_pos + offset) : 0;
  }
  room(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 6);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  callId(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 8);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  from(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 10);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  to(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 12);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  sdp(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 14);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  static startAnswer(builder) {
    builder.startObject(6);
  }
  static addRequestId(builder, requestId) {
    builder.addFieldInt32(0, requestId, 0);
  }
  static addRoom(builder, roomOffset) {
    builder.addFieldOffset(1, roomOffset, 0);
  }
  static addCallId(builder, callIdOffset) {
    builder.addFieldOffset(2, callIdOffset, 0);
  }
  static addFrom(builder, fromOffset) {
    builder.addFieldOffset(3, fromOffset, 0);
  }
  static addTo(builder, toOffset) {
    builder.addFieldOffset(4, toOffset, 0);
  }
  static addSdp(builder, sdpOffset) {
    builder.addFieldOffset(5, sdpOffset, 0);
  }
  static endAnswer(builder) {
    const offset = builder.endObject();
    return offset;
  }
  static createAnswer(builder, requestId, roomOffset, callIdOffset, fromOffset, toOffset, sdpOffset) {
    _Answer.startAnswer(builder);
    _Answer.addRequestId(builder, requestId);
    _Answer.addRoom(builder, roomOffset);
    _Answer.addCallId(builder, callIdOffset);
    _Answer.addFrom(builder, fromOffset);
    _Answer.addTo(builder, toOffset);
    _Answer.addSdp(builder, sdpOffset);
    return _Answer.endAnswer(builder);
  }
};

// src/generated/switchboard/wire/candidate.ts
var Candidate = class _Candidate {
  bb = null;
  bb_pos = 0;
  __init(i, bb) {
    this.bb_pos = i;
    this.bb = bb;
    return this;
  }
  static getRootAsCandidate(bb, obj) {
    return (obj || new _Candidate()).__init(bb.readInt32(bb.position()) + bb.position(), bb);
  }
  static getSizePrefixedRootAsCandidate(bb, obj) {
    bb.setPosition(bb.position() + SIZE_PREFIX_LENGTH);
    return (obj || new _Candidate()).__init(bb.readInt32(bb.position()) + bb.position(), bb);
  }
  candidate(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 4);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  sdpMid(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 6);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  sdpMlineIndex() {
    const offset = this.bb.__offset(this.bb_pos, 8);
    return offset ? this.bb.readUint32(this.bb_pos + offset) : 0;
  }
  static startCandidate(builder) {
    builder.startObject(3);
  }
  static addCandidate(builder, candidateOffset) {
    builder.addFieldOffset(0, candidateOffset, 0);
  }
  static addSdpMid(builder, sdpMidOffset) {
    builder.addFieldOffset(1, sdpMidOffset, 0);
  }
  static addSdpMlineIndex(builder, sdpMlineIndex) {
    builder.addFieldInt32(2, sdpMlineIndex, 0);
  }
  static endCandidate(builder) {
    const offset = builder.endObject();
    return offset;
  }
  static createCandidate(builder, candidateOffset, sdpMidOffset, sdpMlineIndex) {
    _Candidate.startCandidate(builder);
    _Candidate.addCandidate(builder, candidateOffset);
    _Candidate.addSdpMid(builder, sdpMidOffset);
    _Candidate.addSdpMlineIndex(builder, sdpMlineIndex);
    return _Candidate.endCandidate(builder);
  }
};

// src/generated/switchboard/wire/error.ts
var Error2 = class _Error {
  bb = null;
  bb_pos = 0;
  __init(i, bb) {
    this.bb_pos = i;
    this.bb = bb;
    return this;
  }
  static getRootAsError(bb, obj) {
    return (obj || new _Error()).__init(bb.readInt32(bb.position()) + bb.position(), bb);
  }
  static getSizePrefixedRootAsError(bb, obj) {
    bb.setPosition(bb.position() + SIZE_PREFIX_LENGTH);
    return (obj || new _Error()).__init(bb.readInt32(bb.position()) + bb.position(), bb);
  }
  code() {
    const offset = this.bb.__offset(this.bb_pos, 4);
    return offset ? this.bb.readUint16(this.bb_pos + offset) : 0;
  }
  message(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 6);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  requestId() {
    const offset = this.bb.__offset(this.bb_pos, 8);
    return offset ? this.bb.readUint32(this.bb_pos + offset) : 0;
  }
  static startError(builder) {
    builder.startObject(3);
  }
  static addCode(builder, code) {
    builder.addFieldInt16(0, code, 0);
  }
  static addMessage(builder, messageOffset) {
    builder.addFieldOffset(1, messageOffset, 0);
  }
  static addRequestId(builder, requestId) {
    builder.addFieldInt32(2, requestId, 0);
  }
  static endError(builder) {
    const offset = builder.endObject();
    return offset;
  }
  static createError(builder, code, messageOffset, requestId) {
    _Error.startError(builder);
    _Error.addCode(builder, code);
    _Error.addMessage(builder, messageOffset);
    _Error.addRequestId(builder, requestId);
    return _Error.endError(builder);
  }
};

// src/generated/switchboard/wire/event.ts
var Event = class _Event {
  bb = null;
  bb_pos = 0;
  __init(i, bb) {
    this.bb_pos = i;
    this.bb = bb;
    return this;
  }
  static getRootAsEvent(bb, obj) {
    return (obj || new _Event()).__init(bb.readInt32(bb.position()) + bb.position(), bb);
  }
  static getSizePrefixedRootAsEvent(bb, obj) {
    bb.setPosition(bb.position() + SIZE_PREFIX_LENGTH);
    return (obj || new _Event()).__init(bb.readInt32(bb.position()) + bb.position(), bb);
  }
  room(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 4);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  seq() {
    const offset = this.bb.__offset(this.bb_pos, 6);
    return offset ? this.bb.readUint64(this.bb_pos + offset) : BigInt("0");
  }
  kind() {
    const offset = this.bb.__offset(this.bb_pos, 8);
    return offset ? this.bb.readUint8(this.bb_pos + offset) : 0 /* MemberJoined */;
  }
  user(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 10);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  callId(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 12);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  state(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 14);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  atMs() {
    const offset = this.bb.__offset(this.bb_pos, 16);
    return offset ? this.bb.readUint64(this.bb_pos + offset) : BigInt("0");
  }
  static startEvent(builder) {
    builder.startObject(7);
  }
  static addRoom(builder, roomOffset) {
    builder.addFieldOffset(0, roomOffset, 0);
  }
  static addSeq(builder, seq) {
    builder.addFieldInt64(1, seq, BigInt("0"));
  }
  static addKind(builder, kind) {
    builder.addFieldInt8(2, kind, 0 /* MemberJoined */);
  }
  static addUser(builder, userOffset) {
    builder.addFieldOffset(3, userOffset, 0);
  }
  static addCallId(builder, callIdOffset) {
    builder.addFieldOffset(4, callIdOffset, 0);
  }
  static addState(builder, stateOffset) {
    builder.addFieldOffset(5, stateOffset, 0);
  }
  static addAtMs(builder, atMs) {
    builder.addFieldInt64(6, atMs, BigInt("0"));
  }
  static endEvent(builder) {
    const offset = builder.endObject();
    return offset;
  }
  static createEvent(builder, roomOffset, seq, kind, userOffset, callIdOffset, stateOffset, atMs) {
    _Event.startEvent(builder);
    _Event.addRoom(builder, roomOffset);
    _Event.addSeq(builder, seq);
    _Event.addKind(builder, kind);
    _Event.addUser(builder, userOffset);
    _Event.addCallId(builder, callIdOffset);
    _Event.addState(builder, stateOffset);
    _Event.addAtMs(builder, atMs);
    return _Event.endEvent(builder);
  }
};

// src/generated/switchboard/wire/hangup.ts
var Hangup = class _Hangup {
  bb = null;
  bb_pos = 0;
  __init(i, bb) {
    this.bb_pos = i;
    this.bb = bb;
    return this;
  }
  static getRootAsHangup(bb, obj) {
    return (obj || new _Hangup()).__init(bb.readInt32(bb.position()) + bb.position(), bb);
  }
  static getSizePrefixedRootAsHangup(bb, obj) {
    bb.setPosition(bb.position() + SIZE_PREFIX_LENGTH);
    return (obj || new _Hangup()).__init(bb.readInt32(bb.position()) + bb.position(), bb);
  }
  requestId() {
    const offset = this.bb.__offset(this.bb_pos, 4);
    return offset ? this.bb.readUint32(this.bb_pos + offset) : 0;
  }
  room(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 6);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  callId(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 8);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  from(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 10);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  reason(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 12);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  static startHangup(builder) {
    builder.startObject(5);
  }
  static addRequestId(builder, requestId) {
    builder.addFieldInt32(0, requestId, 0);
  }
  static addRoom(builder, roomOffset) {
    builder.addFieldOffset(1, roomOffset, 0);
  }
  static addCallId(builder, callIdOffset) {
    builder.addFieldOffset(2, callIdOffset, 0);
  }
  static addFrom(builder, fromOffset) {
    builder.addFieldOffset(3, fromOffset, 0);
  }
  static addReason(builder, reasonOffset) {
    builder.addFieldOffset(4, reasonOffset, 0);
  }
  static endHangup(builder) {
    const offset = builder.endObject();
    return offset;
  }
  static createHangup(builder, requestId, roomOffset, callIdOffset, fromOffset, reasonOffset) {
    _Hangup.startHangup(builder);
    _Hangup.addRequestId(builder, requestId);
    _Hangup.addRoom(builder, roomOffset);
    _Hangup.addCallId(builder, callIdOffset);
    _Hangup.addFrom(builder, fromOffset);
    _Hangup.addReason(builder, reasonOffset);
    return _Hangup.endHangup(builder);
  }
};

// src/generated/switchboard/wire/resume.ts
var Resume = class _Resume {
  bb = null;
  bb_pos = 0;
  __init(i, bb) {
    this.bb_pos = i;
    this.bb = bb;
    return this;
  }
  static getRootAsResume(bb, obj) {
    return (obj || new _Resume()).__init(bb.readInt32(bb.position()) + bb.position(), bb);
  }
  static getSizePrefixedRootAsResume(bb, obj) {
    bb.setPosition(bb.position() + SIZE_PREFIX_LENGTH);
    return (obj || new _Resume()).__init(bb.readInt32(bb.position()) + bb.position(), bb);
  }
  session(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 4);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  lastSeq() {
    const offset = this.bb.__offset(this.bb_pos, 6);
    return offset ? this.bb.readUint64(this.bb_pos + offset) : BigInt("0");
  }
  static startResume(builder) {
    builder.startObject(2);
  }
  static addSession(builder, sessionOffset) {
    builder.addFieldOffset(0, sessionOffset, 0);
  }
  static addLastSeq(builder, lastSeq) {
    builder.addFieldInt64(1, lastSeq, BigInt("0"));
  }
  static endResume(builder) {
    const offset = builder.endObject();
    return offset;
  }
  static createResume(builder, sessionOffset, lastSeq) {
    _Resume.startResume(builder);
    _Resume.addSession(builder, sessionOffset);
    _Resume.addLastSeq(builder, lastSeq);
    return _Resume.endResume(builder);
  }
};

// src/generated/switchboard/wire/hello.ts
var Hello = class _Hello {
  bb = null;
  bb_pos = 0;
  __init(i, bb) {
    this.bb_pos = i;
    this.bb = bb;
    return this;
  }
  static getRootAsHello(bb, obj) {
    return (obj || new _Hello()).__init(bb.readInt32(bb.position()) + bb.position(), bb);
  }
  static getSizePrefixedRootAsHello(bb, obj) {
    bb.setPosition(bb.position() + SIZE_PREFIX_LENGTH);
    return (obj || new _Hello()).__init(bb.readInt32(bb.position()) + bb.position(), bb);
  }
  token(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 4);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  versions(index) {
    const offset = this.bb.__offset(this.bb_pos, 6);
    return offset ? this.bb.readUint8(this.bb.__vector(this.bb_pos + offset) + index) : 0;
  }
  versionsLength() {
    const offset = this.bb.__offset(this.bb_pos, 6);
    return offset ? this.bb.__vector_len(this.bb_pos + offset) : 0;
  }
  versionsArray() {
    const offset = this.bb.__offset(this.bb_pos, 6);
    return offset ? new Uint8Array(this.bb.bytes().buffer, this.bb.bytes().byteOffset + this.bb.__vector(this.bb_pos + offset), this.bb.__vector_len(this.bb_pos + offset)) : null;
  }
  resume(obj) {
    const offset = this.bb.__offset(this.bb_pos, 8);
    return offset ? (obj || new Resume()).__init(this.bb.__indirect(this.bb_pos + offset), this.bb) : null;
  }
  static startHello(builder) {
    builder.startObject(3);
  }
  static addToken(builder, tokenOffset) {
    builder.addFieldOffset(0, tokenOffset, 0);
  }
  static addVersions(builder, versionsOffset) {
    builder.addFieldOffset(1, versionsOffset, 0);
  }
  static createVersionsVector(builder, data) {
    builder.startVector(1, data.length, 1);
    for (let i = data.length - 1; i >= 0; i--) {
      builder.addInt8(data[i]);
    }
    return builder.endVector();
  }
  static startVersionsVector(builder, numElems) {
    builder.startVector(1, numElems, 1);
  }
  static addResume(builder, resumeOffset) {
    builder.addFieldOffset(2, resumeOffset, 0);
  }
  static endHello(builder) {
    const offset = builder.endObject();
    return offset;
  }
};

// src/generated/switchboard/wire/ice-batch.ts
var IceBatch = class _IceBatch {
  bb = null;
  bb_pos = 0;
  __init(i, bb) {
    this.bb_pos = i;
    this.bb = bb;
    return this;
  }
  static getRootAsIceBatch(bb, obj) {
    return (obj || new _IceBatch()).__init(bb.readInt32(bb.position()) + bb.position(), bb);
  }
  static getSizePrefixedRootAsIceBatch(bb, obj) {
    bb.setPosition(bb.position() + SIZE_PREFIX_LENGTH);
    return (obj || new _IceBatch()).__init(bb.readInt32(bb.position()) + bb.position(), bb);
  }
  room(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 4);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  callId(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 6);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  from(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 8);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  to(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 10);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  candidates(index, obj) {
    const offset = this.bb.__offset(this.bb_pos, 12);
    return offset ? (obj || new Candidate()).__init(this.bb.__indirect(this.bb.__vector(this.bb_pos + offset) + index * 4), this.bb) : null;
  }
  candidatesLength() {
    const offset = this.bb.__offset(this.bb_pos, 12);
    return offset ? this.bb.__vector_len(this.bb_pos + offset) : 0;
  }
  static startIceBatch(builder) {
    builder.startObject(5);
  }
  static addRoom(builder, roomOffset) {
    builder.addFieldOffset(0, roomOffset, 0);
  }
  static addCallId(builder, callIdOffset) {
    builder.addFieldOffset(1, callIdOffset, 0);
  }
  static addFrom(builder, fromOffset) {
    builder.addFieldOffset(2, fromOffset, 0);
  }
  static addTo(builder, toOffset) {
    builder.addFieldOffset(3, toOffset, 0);
  }
  static addCandidates(builder, candidatesOffset) {
    builder.addFieldOffset(4, candidatesOffset, 0);
  }
  static createCandidatesVector(builder, data) {
    builder.startVector(4, data.length, 4);
    for (let i = data.length - 1; i >= 0; i--) {
      builder.addOffset(data[i]);
    }
    return builder.endVector();
  }
  static startCandidatesVector(builder, numElems) {
    builder.startVector(4, numElems, 4);
  }
  static endIceBatch(builder) {
    const offset = builder.endObject();
    return offset;
  }
  static createIceBatch(builder, roomOffset, callIdOffset, fromOffset, toOffset, candidatesOffset) {
    _IceBatch.startIceBatch(builder);
    _IceBatch.addRoom(builder, roomOffset);
    _IceBatch.addCallId(builder, callIdOffset);
    _IceBatch.addFrom(builder, fromOffset);
    _IceBatch.addTo(builder, toOffset);
    _IceBatch.addCandidates(builder, candidatesOffset);
    return _IceBatch.endIceBatch(builder);
  }
};

// src/generated/switchboard/wire/ice-candidate.ts
var IceCandidate = class _IceCandidate {
  bb = null;
  bb_pos = 0;
  __init(i, bb) {
    this.bb_pos = i;
    this.bb = bb;
    return this;
  }
  static getRootAsIceCandidate(bb, obj) {
    return (obj || new _IceCandidate()).__init(bb.readInt32(bb.position()) + bb.position(), bb);
  }
  static getSizePrefixedRootAsIceCandidate(bb, obj) {
    bb.setPosition(bb.position() + SIZE_PREFIX_LENGTH);
    return (obj || new _IceCandidate()).__init(bb.readInt32(bb.position()) + bb.position(), bb);
  }
  room(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 4);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  callId(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 6);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  from(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 8);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  to(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 10);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  candidate(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 12);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  sdpMid(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 14);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  sdpMlineIndex() {
    const offset = this.bb.__offset(this.bb_pos, 16);
    return offset ? this.bb.readUint32(this.bb_pos + offset) : 0;
  }
  static startIceCandidate(builder) {
    builder.startObject(7);
  }
  static addRoom(builder, roomOffset) {
    builder.addFieldOffset(0, roomOffset, 0);
  }
  static addCallId(builder, callIdOffset) {
    builder.addFieldOffset(1, callIdOffset, 0);
  }
  static addFrom(builder, fromOffset) {
    builder.addFieldOffset(2, fromOffset, 0);
  }
  static addTo(builder, toOffset) {
    builder.addFieldOffset(3, toOffset, 0);
  }
  static addCandidate(builder, candidateOffset) {
    builder.addFieldOffset(4, candidateOffset, 0);
  }
  static addSdpMid(builder, sdpMidOffset) {
    builder.addFieldOffset(5, sdpMidOffset, 0);
  }
  static addSdpMlineIndex(builder, sdpMlineIndex) {
    builder.addFieldInt32(6, sdpMlineIndex, 0);
  }
  static endIceCandidate(builder) {
    const offset = builder.endObject();
    return offset;
  }
  static createIceCandidate(builder, roomOffset, callIdOffset, fromOffset, toOffset, candidateOffset, sdpMidOffset, sdpMlineIndex) {
    _IceCandidate.startIceCandidate(builder);
    _IceCandidate.addRoom(builder, roomOffset);
    _IceCandidate.addCallId(builder, callIdOffset);
    _IceCandidate.addFrom(builder, fromOffset);
    _IceCandidate.addTo(builder, toOffset);
    _IceCandidate.addCandidate(builder, candidateOffset);
    _IceCandidate.addSdpMid(builder, sdpMidOffset);
    _IceCandidate.addSdpMlineIndex(builder, sdpMlineIndex);
    return _IceCandidate.endIceCandidate(builder);
  }
};

// src/generated/switchboard/wire/invite.ts
var Invite = class _Invite {
  bb = null;
  bb_pos = 0;
  __init(i, bb) {
    this.bb_pos = i;
    this.bb = bb;
    return this;
  }
  static getRootAsInvite(bb, obj) {
    return (obj || new _Invite()).__init(bb.readInt32(bb.position()) + bb.position(), bb);
  }
  static getSizePrefixedRootAsInvite(bb, obj) {
    bb.setPosition(bb.position() + SIZE_PREFIX_LENGTH);
    return (obj || new _Invite()).__init(bb.readInt32(bb.position()) + bb.position(), bb);
  }
  requestId() {
    const offset = this.bb.__offset(this.bb_pos, 4);
    return offset ? this.bb.readUint32(this.bb_pos + offset) : 0;
  }
  room(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 6);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  callId(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 8);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  from(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 10);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  to(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 12);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  static startInvite(builder) {
    builder.startObject(5);
  }
  static addRequestId(builder, requestId) {
    builder.addFieldInt32(0, requestId, 0);
  }
  static addRoom(builder, roomOffset) {
    builder.addFieldOffset(1, roomOffset, 0);
  }
  static addCallId(builder, callIdOffset) {
    builder.addFieldOffset(2, callIdOffset, 0);
  }
  static addFrom(builder, fromOffset) {
    builder.addFieldOffset(3, fromOffset, 0);
  }
  static addTo(builder, toOffset) {
    builder.addFieldOffset(4, toOffset, 0);
  }
  static endInvite(builder) {
    const offset = builder.endObject();
    return offset;
  }
  static createInvite(builder, requestId, roomOffset, callIdOffset, fromOffset, toOffset) {
    _Invite.startInvite(builder);
    _Invite.addRequestId(builder, requestId);
    _Invite.addRoom(builder, roomOffset);
    _Invite.addCallId(builder, callIdOffset);
    _Invite.addFrom(builder, fromOffset);
    _Invite.addTo(builder, toOffset);
    return _Invite.endInvite(builder);
  }
};

// src/generated/switchboard/wire/invite-result.ts
var InviteResult = class _InviteResult {
  bb = null;
  bb_pos = 0;
  __init(i, bb) {
    this.bb_pos = i;
    this.bb = bb;
    return this;
  }
  static getRootAsInviteResult(bb, obj) {
    return (obj || new _InviteResult()).__init(bb.readInt32(bb.position()) + bb.position(), bb);
  }
  static getSizePrefixedRootAsInviteResult(bb, obj) {
    bb.setPosition(bb.position() + SIZE_PREFIX_LENGTH);
    return (obj || new _InviteResult()).__init(bb.readInt32(bb.position()) + bb.position(), bb);
  }
  requestId() {
    const offset = this.bb.__offset(this.bb_pos, 4);
    return offset ? this.bb.readUint32(this.bb_pos + offset) : 0;
  }
  room(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 6);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  callId(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 8);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  from(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 10);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  to(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 12);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  accepted() {
    const offset = this.bb.__offset(this.bb_pos, 14);
    return offset ? !!this.bb.readInt8(this.bb_pos + offset) : false;
  }
  reason(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 16);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  static startInviteResult(builder) {
    builder.startObject(7);
  }
  static addRequestId(builder, requestId) {
    builder.addFieldInt32(0, requestId, 0);
  }
  static addRoom(builder, roomOffset) {
    builder.addFieldOffset(1, roomOffset, 0);
  }
  static addCallId(builder, callIdOffset) {
    builder.addFieldOffset(2, callIdOffset, 0);
  }
  static addFrom(builder, fromOffset) {
    builder.addFieldOffset(3, fromOffset, 0);
  }
  static addTo(builder, toOffset) {
    builder.addFieldOffset(4, toOffset, 0);
  }
  static addAccepted(builder, accepted) {
    builder.addFieldInt8(5, +accepted, 0);
  }
  static addReason(builder, reasonOffset) {
    builder.addFieldOffset(6, reasonOffset, 0);
  }
  static endInviteResult(builder) {
    const offset = builder.endObject();
    return offset;
  }
  static createInviteResult(builder, requestId, roomOffset, callIdOffset, fromOffset, toOffset, accepted, reasonOffset) {
    _InviteResult.startInviteResult(builder);
    _InviteResult.addRequestId(builder, requestId);
    _InviteResult.addRoom(builder, roomOffset);
    _InviteResult.addCallId(builder, callIdOffset);
    _InviteResult.addFrom(builder, fromOffset);
    _InviteResult.addTo(builder, toOffset);
    _InviteResult.addAccepted(builder, accepted);
    _InviteResult.addReason(builder, reasonOffset);
    return _InviteResult.endInviteResult(builder);
  }
};

// src/generated/switchboard/wire/join.ts
var Join = class _Join {
  bb = null;
  bb_pos = 0;
  __init(i, bb) {
    this.bb_pos = i;
    this.bb = bb;
    return this;
  }
  static getRootAsJoin(bb, obj) {
    return (obj || new _Join()).__init(bb.readInt32(bb.position()) + bb.position(), bb);
  }
  static getSizePrefixedRootAsJoin(bb, obj) {
    bb.setPosition(bb.position() + SIZE_PREFIX_LENGTH);
    return (obj || new _Join()).__init(bb.readInt32(bb.position()) + bb.position(), bb);
  }
  requestId() {
    const offset = this.bb.__offset(this.bb_pos, 4);
    return offset ? this.bb.readUint32(this.bb_pos + offset) : 0;
  }
  room(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 6);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  static startJoin(builder) {
    builder.startObject(2);
  }
  static addRequestId(builder, requestId) {
    builder.addFieldInt32(0, requestId, 0);
  }
  static addRoom(builder, roomOffset) {
    builder.addFieldOffset(1, roomOffset, 0);
  }
  static endJoin(builder) {
    const offset = builder.endObject();
    return offset;
  }
  static createJoin(builder, requestId, roomOffset) {
    _Join.startJoin(builder);
    _Join.addRequestId(builder, requestId);
    _Join.addRoom(builder, roomOffset);
    return _Join.endJoin(builder);
  }
};

// src/generated/switchboard/wire/joined.ts
var Joined = class _Joined {
  bb = null;
  bb_pos = 0;
  __init(i, bb) {
    this.bb_pos = i;
    this.bb = bb;
    return this;
  }
  static getRootAsJoined(bb, obj) {
    return (obj || new _Joined()).__init(bb.readInt32(bb.position()) + bb.position(), bb);
  }
  static getSizePrefixedRootAsJoined(bb, obj) {
    bb.setPosition(bb.position() + SIZE_PREFIX_LENGTH);
    return (obj || new _Joined()).__init(bb.readInt32(bb.position()) + bb.position(), bb);
  }
  requestId() {
    const offset = this.bb.__offset(this.bb_pos, 4);
    return offset ? this.bb.readUint32(this.bb_pos + offset) : 0;
  }
  room(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 6);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  members(index, optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 8);
    return offset ? this.bb.__string(this.bb.__vector(this.bb_pos + offset) + index * 4, optionalEncoding) : null;
  }
  membersLength() {
    const offset = this.bb.__offset(this.bb_pos, 8);
    return offset ? this.bb.__vector_len(this.bb_pos + offset) : 0;
  }
  lastSeq() {
    const offset = this.bb.__offset(this.bb_pos, 10);
    return offset ? this.bb.readUint64(this.bb_pos + offset) : BigInt("0");
  }
  static startJoined(builder) {
    builder.startObject(4);
  }
  static addRequestId(builder, requestId) {
    builder.addFieldInt32(0, requestId, 0);
  }
  static addRoom(builder, roomOffset) {
    builder.addFieldOffset(1, roomOffset, 0);
  }
  static addMembers(builder, membersOffset) {
    builder.addFieldOffset(2, membersOffset, 0);
  }
  static createMembersVector(builder, data) {
    builder.startVector(4, data.length, 4);
    for (let i = data.length - 1; i >= 0; i--) {
      builder.addOffset(data[i]);
    }
    return builder.endVector();
  }
  static startMembersVector(builder, numElems) {
    builder.startVector(4, numElems, 4);
  }
  static addLastSeq(builder, lastSeq) {
    builder.addFieldInt64(3, lastSeq, BigInt("0"));
  }
  static endJoined(builder) {
    const offset = builder.endObject();
    return offset;
  }
  static createJoined(builder, requestId, roomOffset, membersOffset, lastSeq) {
    _Joined.startJoined(builder);
    _Joined.addRequestId(builder, requestId);
    _Joined.addRoom(builder, roomOffset);
    _Joined.addMembers(builder, membersOffset);
    _Joined.addLastSeq(builder, lastSeq);
    return _Joined.endJoined(builder);
  }
};

// src/generated/switchboard/wire/leave.ts
var Leave = class _Leave {
  bb = null;
  bb_pos = 0;
  __init(i, bb) {
    this.bb_pos = i;
    this.bb = bb;
    return this;
  }
  static getRootAsLeave(bb, obj) {
    return (obj || new _Leave()).__init(bb.readInt32(bb.position()) + bb.position(), bb);
  }
  static getSizePrefixedRootAsLeave(bb, obj) {
    bb.setPosition(bb.position() + SIZE_PREFIX_LENGTH);
    return (obj || new _Leave()).__init(bb.readInt32(bb.position()) + bb.position(), bb);
  }
  requestId() {
    const offset = this.bb.__offset(this.bb_pos, 4);
    return offset ? this.bb.readUint32(this.bb_pos + offset) : 0;
  }
  room(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 6);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  static startLeave(builder) {
    builder.startObject(2);
  }
  static addRequestId(builder, requestId) {
    builder.addFieldInt32(0, requestId, 0);
  }
  static addRoom(builder, roomOffset) {
    builder.addFieldOffset(1, roomOffset, 0);
  }
  static endLeave(builder) {
    const offset = builder.endObject();
    return offset;
  }
  static createLeave(builder, requestId, roomOffset) {
    _Leave.startLeave(builder);
    _Leave.addRequestId(builder, requestId);
    _Leave.addRoom(builder, roomOffset);
    return _Leave.endLeave(builder);
  }
};

// src/generated/switchboard/wire/migrate.ts
var Migrate = class _Migrate {
  bb = null;
  bb_pos = 0;
  __init(i, bb) {
    this.bb_pos = i;
    this.bb = bb;
    return this;
  }
  static getRootAsMigrate(bb, obj) {
    return (obj || new _Migrate()).__init(bb.readInt32(bb.position()) + bb.position(), bb);
  }
  static getSizePrefixedRootAsMigrate(bb, obj) {
    bb.setPosition(bb.position() + SIZE_PREFIX_LENGTH);
    return (obj || new _Migrate()).__init(bb.readInt32(bb.position()) + bb.position(), bb);
  }
  room(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 4);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  url(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 6);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  resumeToken(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 8);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  static startMigrate(builder) {
    builder.startObject(3);
  }
  static addRoom(builder, roomOffset) {
    builder.addFieldOffset(0, roomOffset, 0);
  }
  static addUrl(builder, urlOffset) {
    builder.addFieldOffset(1, urlOffset, 0);
  }
  static addResumeToken(builder, resumeTokenOffset) {
    builder.addFieldOffset(2, resumeTokenOffset, 0);
  }
  static endMigrate(builder) {
    const offset = builder.endObject();
    return offset;
  }
  static createMigrate(builder, roomOffset, urlOffset, resumeTokenOffset) {
    _Migrate.startMigrate(builder);
    _Migrate.addRoom(builder, roomOffset);
    _Migrate.addUrl(builder, urlOffset);
    _Migrate.addResumeToken(builder, resumeTokenOffset);
    return _Migrate.endMigrate(builder);
  }
};

// src/generated/switchboard/wire/offer.ts
var Offer = class _Offer {
  bb = null;
  bb_pos = 0;
  __init(i, bb) {
    this.bb_pos = i;
    this.bb = bb;
    return this;
  }
  static getRootAsOffer(bb, obj) {
    return (obj || new _Offer()).__init(bb.readInt32(bb.position()) + bb.position(), bb);
  }
  static getSizePrefixedRootAsOffer(bb, obj) {
    bb.setPosition(bb.position() + SIZE_PREFIX_LENGTH);
    return (obj || new _Offer()).__init(bb.readInt32(bb.position()) + bb.position(), bb);
  }
  requestId() {
    const offset = this.bb.__offset(this.bb_pos, 4);
    return offset ? this.bb.readUint32(this.bb_pos + offset) : 0;
  }
  room(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 6);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  callId(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 8);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  from(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 10);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  to(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 12);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  sdp(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 14);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  static startOffer(builder) {
    builder.startObject(6);
  }
  static addRequestId(builder, requestId) {
    builder.addFieldInt32(0, requestId, 0);
  }
  static addRoom(builder, roomOffset) {
    builder.addFieldOffset(1, roomOffset, 0);
  }
  static addCallId(builder, callIdOffset) {
    builder.addFieldOffset(2, callIdOffset, 0);
  }
  static addFrom(builder, fromOffset) {
    builder.addFieldOffset(3, fromOffset, 0);
  }
  static addTo(builder, toOffset) {
    builder.addFieldOffset(4, toOffset, 0);
  }
  static addSdp(builder, sdpOffset) {
    builder.addFieldOffset(5, sdpOffset, 0);
  }
  static endOffer(builder) {
    const offset = builder.endObject();
    return offset;
  }
  static createOffer(builder, requestId, roomOffset, callIdOffset, fromOffset, toOffset, sdpOffset) {
    _Offer.startOffer(builder);
    _Offer.addRequestId(builder, requestId);
    _Offer.addRoom(builder, roomOffset);
    _Offer.addCallId(builder, callIdOffset);
    _Offer.addFrom(builder, fromOffset);
    _Offer.addTo(builder, toOffset);
    _Offer.addSdp(builder, sdpOffset);
    return _Offer.endOffer(builder);
  }
};

// src/generated/switchboard/wire/ping.ts
var Ping = class _Ping {
  bb = null;
  bb_pos = 0;
  __init(i, bb) {
    this.bb_pos = i;
    this.bb = bb;
    return this;
  }
  static getRootAsPing(bb, obj) {
    return (obj || new _Ping()).__init(bb.readInt32(bb.position()) + bb.position(), bb);
  }
  static getSizePrefixedRootAsPing(bb, obj) {
    bb.setPosition(bb.position() + SIZE_PREFIX_LENGTH);
    return (obj || new _Ping()).__init(bb.readInt32(bb.position()) + bb.position(), bb);
  }
  nonce() {
    const offset = this.bb.__offset(this.bb_pos, 4);
    return offset ? this.bb.readUint64(this.bb_pos + offset) : BigInt("0");
  }
  static startPing(builder) {
    builder.startObject(1);
  }
  static addNonce(builder, nonce) {
    builder.addFieldInt64(0, nonce, BigInt("0"));
  }
  static endPing(builder) {
    const offset = builder.endObject();
    return offset;
  }
  static createPing(builder, nonce) {
    _Ping.startPing(builder);
    _Ping.addNonce(builder, nonce);
    return _Ping.endPing(builder);
  }
};

// src/generated/switchboard/wire/pong.ts
var Pong = class _Pong {
  bb = null;
  bb_pos = 0;
  __init(i, bb) {
    this.bb_pos = i;
    this.bb = bb;
    return this;
  }
  static getRootAsPong(bb, obj) {
    return (obj || new _Pong()).__init(bb.readInt32(bb.position()) + bb.position(), bb);
  }
  static getSizePrefixedRootAsPong(bb, obj) {
    bb.setPosition(bb.position() + SIZE_PREFIX_LENGTH);
    return (obj || new _Pong()).__init(bb.readInt32(bb.position()) + bb.position(), bb);
  }
  nonce() {
    const offset = this.bb.__offset(this.bb_pos, 4);
    return offset ? this.bb.readUint64(this.bb_pos + offset) : BigInt("0");
  }
  static startPong(builder) {
    builder.startObject(1);
  }
  static addNonce(builder, nonce) {
    builder.addFieldInt64(0, nonce, BigInt("0"));
  }
  static endPong(builder) {
    const offset = builder.endObject();
    return offset;
  }
  static createPong(builder, nonce) {
    _Pong.startPong(builder);
    _Pong.addNonce(builder, nonce);
    return _Pong.endPong(builder);
  }
};

// src/generated/switchboard/wire/redirect.ts
var Redirect = class _Redirect {
  bb = null;
  bb_pos = 0;
  __init(i, bb) {
    this.bb_pos = i;
    this.bb = bb;
    return this;
  }
  static getRootAsRedirect(bb, obj) {
    return (obj || new _Redirect()).__init(bb.readInt32(bb.position()) + bb.position(), bb);
  }
  static getSizePrefixedRootAsRedirect(bb, obj) {
    bb.setPosition(bb.position() + SIZE_PREFIX_LENGTH);
    return (obj || new _Redirect()).__init(bb.readInt32(bb.position()) + bb.position(), bb);
  }
  requestId() {
    const offset = this.bb.__offset(this.bb_pos, 4);
    return offset ? this.bb.readUint32(this.bb_pos + offset) : 0;
  }
  room(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 6);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  url(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 8);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  static startRedirect(builder) {
    builder.startObject(3);
  }
  static addRequestId(builder, requestId) {
    builder.addFieldInt32(0, requestId, 0);
  }
  static addRoom(builder, roomOffset) {
    builder.addFieldOffset(1, roomOffset, 0);
  }
  static addUrl(builder, urlOffset) {
    builder.addFieldOffset(2, urlOffset, 0);
  }
  static endRedirect(builder) {
    const offset = builder.endObject();
    return offset;
  }
  static createRedirect(builder, requestId, roomOffset, urlOffset) {
    _Redirect.startRedirect(builder);
    _Redirect.addRequestId(builder, requestId);
    _Redirect.addRoom(builder, roomOffset);
    _Redirect.addUrl(builder, urlOffset);
    return _Redirect.endRedirect(builder);
  }
};

// src/generated/switchboard/wire/welcome.ts
var Welcome = class _Welcome {
  bb = null;
  bb_pos = 0;
  __init(i, bb) {
    this.bb_pos = i;
    this.bb = bb;
    return this;
  }
  static getRootAsWelcome(bb, obj) {
    return (obj || new _Welcome()).__init(bb.readInt32(bb.position()) + bb.position(), bb);
  }
  static getSizePrefixedRootAsWelcome(bb, obj) {
    bb.setPosition(bb.position() + SIZE_PREFIX_LENGTH);
    return (obj || new _Welcome()).__init(bb.readInt32(bb.position()) + bb.position(), bb);
  }
  session(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 4);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  version() {
    const offset = this.bb.__offset(this.bb_pos, 6);
    return offset ? this.bb.readUint8(this.bb_pos + offset) : 0;
  }
  node(optionalEncoding) {
    const offset = this.bb.__offset(this.bb_pos, 8);
    return offset ? this.bb.__string(this.bb_pos + offset, optionalEncoding) : null;
  }
  heartbeatMs() {
    const offset = this.bb.__offset(this.bb_pos, 10);
    return offset ? this.bb.readUint32(this.bb_pos + offset) : 0;
  }
  resumed() {
    const offset = this.bb.__offset(this.bb_pos, 12);
    return offset ? !!this.bb.readInt8(this.bb_pos + offset) : false;
  }
  static startWelcome(builder) {
    builder.startObject(5);
  }
  static addSession(builder, sessionOffset) {
    builder.addFieldOffset(0, sessionOffset, 0);
  }
  static addVersion(builder, version) {
    builder.addFieldInt8(1, version, 0);
  }
  static addNode(builder, nodeOffset) {
    builder.addFieldOffset(2, nodeOffset, 0);
  }
  static addHeartbeatMs(builder, heartbeatMs) {
    builder.addFieldInt32(3, heartbeatMs, 0);
  }
  static addResumed(builder, resumed) {
    builder.addFieldInt8(4, +resumed, 0);
  }
  static endWelcome(builder) {
    const offset = builder.endObject();
    return offset;
  }
  static createWelcome(builder, sessionOffset, version, nodeOffset, heartbeatMs, resumed) {
    _Welcome.startWelcome(builder);
    _Welcome.addSession(builder, sessionOffset);
    _Welcome.addVersion(builder, version);
    _Welcome.addNode(builder, nodeOffset);
    _Welcome.addHeartbeatMs(builder, heartbeatMs);
    _Welcome.addResumed(builder, resumed);
    return _Welcome.endWelcome(builder);
  }
};

// src/messages.ts
var EventKind2 = /* @__PURE__ */ ((EventKind3) => {
  EventKind3[EventKind3["MemberJoined"] = 0] = "MemberJoined";
  EventKind3[EventKind3["MemberLeft"] = 1] = "MemberLeft";
  EventKind3[EventKind3["CallState"] = 2] = "CallState";
  EventKind3[EventKind3["MemberSuspended"] = 3] = "MemberSuspended";
  EventKind3[EventKind3["MemberResumed"] = 4] = "MemberResumed";
  return EventKind3;
})(EventKind2 || {});
function frameTypeOf(msg) {
  return FrameType[msg.type];
}
function str(b, s2) {
  return b.createString(s2);
}
function u64(n2) {
  return BigInt(Math.max(0, Math.trunc(n2)));
}
function encodeMessage(msg) {
  const b = new Builder(256);
  b.finish(buildBody(b, msg));
  return encodeFrame(frameTypeOf(msg), b.asUint8Array());
}
function buildBody(b, msg) {
  switch (msg.type) {
    case "Hello": {
      const token = str(b, msg.token);
      const versions = Hello.createVersionsVector(b, msg.versions);
      let resume = 0;
      if (msg.resume) {
        const session = str(b, msg.resume.session);
        Resume.startResume(b);
        Resume.addSession(b, session);
        Resume.addLastSeq(b, u64(msg.resume.lastSeq));
        resume = Resume.endResume(b);
      }
      Hello.startHello(b);
      Hello.addToken(b, token);
      Hello.addVersions(b, versions);
      if (resume) Hello.addResume(b, resume);
      return Hello.endHello(b);
    }
    case "Welcome": {
      const session = str(b, msg.session);
      const node = str(b, msg.node);
      Welcome.startWelcome(b);
      Welcome.addSession(b, session);
      Welcome.addVersion(b, msg.version);
      Welcome.addNode(b, node);
      Welcome.addHeartbeatMs(b, msg.heartbeatMs);
      Welcome.addResumed(b, msg.resumed);
      return Welcome.endWelcome(b);
    }
    case "Join":
      return Join.createJoin(b, msg.requestId, str(b, msg.room));
    case "Joined": {
      const room = str(b, msg.room);
      const members = Joined.createMembersVector(b, msg.members.map((m) => str(b, m)));
      return Joined.createJoined(b, msg.requestId, room, members, u64(msg.lastSeq));
    }
    case "Leave":
      return Leave.createLeave(b, msg.requestId, str(b, msg.room));
    case "Invite": {
      const [room, callId, from, to] = [msg.room, msg.callId, msg.from, msg.to].map((s2) => str(b, s2));
      return Invite.createInvite(b, msg.requestId, room, callId, from, to);
    }
    case "InviteResult": {
      const [room, callId, from, to, reason] = [msg.room, msg.callId, msg.from, msg.to, msg.reason].map((s2) => str(b, s2));
      return InviteResult.createInviteResult(b, msg.requestId, room, callId, from, to, msg.accepted, reason);
    }
    case "Offer": {
      const [room, callId, from, to, sdp] = [msg.room, msg.callId, msg.from, msg.to, msg.sdp].map((s2) => str(b, s2));
      return Offer.createOffer(b, msg.requestId, room, callId, from, to, sdp);
    }
    case "Answer": {
      const [room, callId, from, to, sdp] = [msg.room, msg.callId, msg.from, msg.to, msg.sdp].map((s2) => str(b, s2));
      return Answer.createAnswer(b, msg.requestId, room, callId, from, to, sdp);
    }
    case "IceCandidate": {
      const [room, callId, from, to, candidate, sdpMid] = [msg.room, msg.callId, msg.from, msg.to, msg.candidate, msg.sdpMid].map((s2) => str(b, s2));
      return IceCandidate.createIceCandidate(b, room, callId, from, to, candidate, sdpMid, msg.sdpMLineIndex);
    }
    case "IceBatch": {
      const [room, callId, from, to] = [msg.room, msg.callId, msg.from, msg.to].map((s2) => str(b, s2));
      const candidates = msg.candidates.map(
        (c) => Candidate.createCandidate(b, str(b, c.candidate), str(b, c.sdpMid), c.sdpMLineIndex)
      );
      const vec = IceBatch.createCandidatesVector(b, candidates);
      return IceBatch.createIceBatch(b, room, callId, from, to, vec);
    }
    case "Hangup": {
      const [room, callId, from, reason] = [msg.room, msg.callId, msg.from, msg.reason].map((s2) => str(b, s2));
      return Hangup.createHangup(b, msg.requestId, room, callId, from, reason);
    }
    case "Event": {
      const [room, user2, callId, state] = [msg.room, msg.user, msg.callId, msg.state].map((s2) => str(b, s2));
      return Event.createEvent(b, room, u64(msg.seq), msg.kind, user2, callId, state, u64(msg.atMs));
    }
    case "Ping":
      return Ping.createPing(b, msg.nonce);
    case "Pong":
      return Pong.createPong(b, msg.nonce);
    case "Redirect":
      return Redirect.createRedirect(b, msg.requestId, str(b, msg.room), str(b, msg.url));
    case "Migrate": {
      const [room, url, token] = [msg.room, msg.url, msg.resumeToken].map((s2) => str(b, s2));
      return Migrate.createMigrate(b, room, url, token);
    }
    case "Error":
      return Error2.createError(b, msg.code, str(b, msg.message), msg.requestId);
  }
}
function decodeMessage(bytes) {
  const frame = decodeFrame(bytes);
  if (frame.body.length < 8) {
    throw new FrameError("invalid_body", `invalid ${FrameType[frame.type]} body: ${frame.body.length} bytes`);
  }
  try {
    return readBody(frame.type, new ByteBuffer(frame.body));
  } catch (err) {
    if (err instanceof FrameError) throw err;
    throw new FrameError("invalid_body", `invalid ${FrameType[frame.type]} body: ${String(err)}`);
  }
}
function s(v) {
  return v ?? "";
}
function n(v) {
  return Number(v);
}
function bounded(len, bb, what) {
  if (len < 0 || len > bb.capacity()) {
    throw new FrameError("invalid_body", `${what} vector length ${len} exceeds the body`);
  }
  return len;
}
function readBody(type, bb) {
  const root = bb.readInt32(bb.position());
  if (root < 4 || root >= bb.capacity()) {
    throw new FrameError("invalid_body", `invalid ${FrameType[type]} body: root offset ${root} out of range`);
  }
  switch (type) {
    case 1 /* Hello */: {
      const t = Hello.getRootAsHello(bb);
      const versions = [];
      const len = bounded(t.versionsLength(), bb, "versions");
      for (let i = 0; i < len; i++) versions.push(t.versions(i) ?? 0);
      const r = t.resume();
      return {
        type: "Hello",
        token: s(t.token()),
        versions,
        resume: r ? { session: s(r.session()), lastSeq: n(r.lastSeq()) } : void 0
      };
    }
    case 2 /* Welcome */: {
      const t = Welcome.getRootAsWelcome(bb);
      return { type: "Welcome", session: s(t.session()), version: t.version(), node: s(t.node()), heartbeatMs: t.heartbeatMs(), resumed: t.resumed() };
    }
    case 3 /* Join */: {
      const t = Join.getRootAsJoin(bb);
      return { type: "Join", requestId: t.requestId(), room: s(t.room()) };
    }
    case 4 /* Joined */: {
      const t = Joined.getRootAsJoined(bb);
      const members = [];
      const len = bounded(t.membersLength(), bb, "members");
      for (let i = 0; i < len; i++) members.push(s(t.members(i)));
      return { type: "Joined", requestId: t.requestId(), room: s(t.room()), members, lastSeq: n(t.lastSeq()) };
    }
    case 5 /* Leave */: {
      const t = Leave.getRootAsLeave(bb);
      return { type: "Leave", requestId: t.requestId(), room: s(t.room()) };
    }
    case 6 /* Invite */: {
      const t = Invite.getRootAsInvite(bb);
      return { type: "Invite", requestId: t.requestId(), room: s(t.room()), callId: s(t.callId()), from: s(t.from()), to: s(t.to()) };
    }
    case 7 /* InviteResult */: {
      const t = InviteResult.getRootAsInviteResult(bb);
      return {
        type: "InviteResult",
        requestId: t.requestId(),
        room: s(t.room()),
        callId: s(t.callId()),
        from: s(t.from()),
        to: s(t.to()),
        accepted: t.accepted(),
        reason: s(t.reason())
      };
    }
    case 8 /* Offer */: {
      const t = Offer.getRootAsOffer(bb);
      return { type: "Offer", requestId: t.requestId(), room: s(t.room()), callId: s(t.callId()), from: s(t.from()), to: s(t.to()), sdp: s(t.sdp()) };
    }
    case 9 /* Answer */: {
      const t = Answer.getRootAsAnswer(bb);
      return { type: "Answer", requestId: t.requestId(), room: s(t.room()), callId: s(t.callId()), from: s(t.from()), to: s(t.to()), sdp: s(t.sdp()) };
    }
    case 10 /* IceCandidate */: {
      const t = IceCandidate.getRootAsIceCandidate(bb);
      return {
        type: "IceCandidate",
        room: s(t.room()),
        callId: s(t.callId()),
        from: s(t.from()),
        to: s(t.to()),
        candidate: s(t.candidate()),
        sdpMid: s(t.sdpMid()),
        sdpMLineIndex: t.sdpMlineIndex()
      };
    }
    case 11 /* IceBatch */: {
      const t = IceBatch.getRootAsIceBatch(bb);
      const candidates = [];
      const len = bounded(t.candidatesLength(), bb, "candidates");
      for (let i = 0; i < len; i++) {
        const c = t.candidates(i);
        if (c) candidates.push({ candidate: s(c.candidate()), sdpMid: s(c.sdpMid()), sdpMLineIndex: c.sdpMlineIndex() });
      }
      return { type: "IceBatch", room: s(t.room()), callId: s(t.callId()), from: s(t.from()), to: s(t.to()), candidates };
    }
    case 12 /* Hangup */: {
      const t = Hangup.getRootAsHangup(bb);
      return { type: "Hangup", requestId: t.requestId(), room: s(t.room()), callId: s(t.callId()), from: s(t.from()), reason: s(t.reason()) };
    }
    case 13 /* Event */: {
      const t = Event.getRootAsEvent(bb);
      const kind = t.kind();
      if (!(kind in EventKind2)) {
        throw new FrameError("invalid_body", `invalid Event body: unknown event kind ${kind}`);
      }
      return {
        type: "Event",
        room: s(t.room()),
        seq: n(t.seq()),
        kind,
        user: s(t.user()),
        callId: s(t.callId()),
        state: s(t.state()),
        atMs: n(t.atMs())
      };
    }
    case 14 /* Ping */:
      return { type: "Ping", nonce: Ping.getRootAsPing(bb).nonce() };
    case 15 /* Pong */:
      return { type: "Pong", nonce: Pong.getRootAsPong(bb).nonce() };
    case 16 /* Redirect */: {
      const t = Redirect.getRootAsRedirect(bb);
      return { type: "Redirect", requestId: t.requestId(), room: s(t.room()), url: s(t.url()) };
    }
    case 17 /* Migrate */: {
      const t = Migrate.getRootAsMigrate(bb);
      return { type: "Migrate", room: s(t.room()), url: s(t.url()), resumeToken: s(t.resumeToken()) };
    }
    case 18 /* Error */: {
      const t = Error2.getRootAsError(bb);
      return { type: "Error", code: t.code(), message: s(t.message()), requestId: t.requestId() };
    }
  }
}

// src/retry.ts
var MAX_TRACKED = 64;
function retryableId(msg) {
  switch (msg.type) {
    case "Invite":
    case "InviteResult":
    case "Hangup":
    case "Leave":
      return msg.requestId !== 0 ? msg.requestId : void 0;
    default:
      return void 0;
  }
}
var Retries = class {
  sentList = [];
  afterMove = [];
  laterList = [];
  /** Remembers a request that was just written (a retry, tracked again when it was taken out,
   * keeps its attempt count). */
  sent(msg) {
    const id = retryableId(msg);
    if (id === void 0) return;
    this.track(msg, this.sentList.find((t) => t.id === id)?.attempts ?? 0);
  }
  track(msg, attempts) {
    const id = retryableId(msg);
    if (id === void 0) return;
    this.sentList = this.sentList.filter((t) => t.id !== id);
    this.sentList.push({ id, msg, attempts });
    while (this.sentList.length > MAX_TRACKED) this.sentList.shift();
  }
  /** Decides about an Error frame received at `now` (ms); `backoff(n)` is the wait before the
   * n-th retry and `maxAttempts` the most retries of one request. */
  refused(error, now, backoff, maxAttempts) {
    if (error.requestId === 0) return error.code === 1006 /* NotOwner */ ? { kind: "ignore" } : { kind: "deliver" };
    const at = this.sentList.findIndex((t) => t.id === error.requestId);
    if (at < 0) return { kind: "deliver" };
    const [tracked] = this.sentList.splice(at, 1);
    if (error.code === 1006 /* NotOwner */) {
      this.afterMove.push(tracked);
      return { kind: "after_move" };
    }
    if (error.code === 1010 /* Draining */ && tracked.attempts < maxAttempts) {
      tracked.attempts += 1;
      const due = now + backoff(tracked.attempts);
      this.laterList.push({ at: due, t: tracked });
      return { kind: "later", at: due };
    }
    return { kind: "deliver" };
  }
  /** When the next delayed retry is due (ms), if any. */
  nextDue() {
    return this.laterList.length === 0 ? void 0 : Math.min(...this.laterList.map((l) => l.at));
  }
  /** The delayed retries due at `now`, in the order they were refused (tracked again). */
  takeDue(now) {
    const due = this.laterList.filter((l) => l.at <= now);
    this.laterList = this.laterList.filter((l) => l.at > now);
    return this.resend(due.map((l) => l.t));
  }
  /** After a new Welcome: what to send again on the new connection. A resumed session gets every
   * kept request; a session the server lost gets none (its rooms are joined afresh). */
  takeOnWelcome(resumed) {
    const kept = [...this.afterMove, ...this.laterList.map((l) => l.t)];
    this.afterMove = [];
    this.laterList = [];
    this.sentList = [];
    return resumed ? this.resend(kept) : [];
  }
  resend(kept) {
    return kept.map((t) => {
      this.track(t.msg, t.attempts);
      return t.msg;
    });
  }
};

// src/state.ts
var MAX_CALLS = 1024;
function isTerminalState(state) {
  const s2 = state.toLowerCase();
  return s2 === "ended" || s2 === "failed";
}
var CallTable = class {
  calls = /* @__PURE__ */ new Map();
  /** Remembers `callId`, forgetting the oldest call beyond {@link MAX_CALLS}. */
  insert(callId, info) {
    this.calls.delete(callId);
    this.calls.set(callId, info);
    while (this.calls.size > MAX_CALLS) {
      const oldest = this.calls.keys().next().value;
      this.calls.delete(oldest);
    }
  }
  /** The call, if known. */
  get(callId) {
    return this.calls.get(callId);
  }
  /** Forgets a call. */
  remove(callId) {
    this.calls.delete(callId);
  }
  /** Calls tracked. */
  get size() {
    return this.calls.size;
  }
  /** Learns and forgets calls from an incoming message (`me`: our user id). */
  observe(msg, me) {
    switch (msg.type) {
      case "Invite":
        this.insert(msg.callId, { room: msg.room, peer: msg.from === me ? msg.to : msg.from });
        break;
      case "Hangup":
        this.remove(msg.callId);
        break;
      case "InviteResult":
        if (!msg.accepted) this.remove(msg.callId);
        break;
      case "Event":
        if (msg.kind === 2 /* CallState */ && isTerminalState(msg.state)) this.remove(msg.callId);
        break;
      default:
        break;
    }
  }
};
var Rooms = class {
  seqs = /* @__PURE__ */ new Map();
  /** Marks `room` joined with its log at `lastSeq`. */
  joined(room, lastSeq) {
    this.seqs.set(room, Math.max(this.seqs.get(room) ?? 0, lastSeq));
  }
  /** Forgets `room`. */
  left(room) {
    this.seqs.delete(room);
  }
  /** Forgets every room. */
  clear() {
    this.seqs.clear();
  }
  /** Rooms currently joined. */
  names() {
    return [...this.seqs.keys()];
  }
  /** Whether `room` is joined. */
  has(room) {
    return this.seqs.has(room);
  }
  /** Last seq seen in `room`. */
  seq(room) {
    return this.seqs.get(room);
  }
  /** Records an event; false when it is a replay of one already seen (then dropped). */
  observeEvent(event) {
    const seq = this.seqs.get(event.room);
    if (seq === void 0) return true;
    if (event.seq !== 0 && event.seq <= seq) return false;
    this.seqs.set(event.room, Math.max(seq, event.seq));
    return true;
  }
  /** The seq to resume from: the smallest over joined rooms, so no room misses an event. */
  resumeSeq() {
    let min;
    for (const v of this.seqs.values()) min = min === void 0 ? v : Math.min(min, v);
    return min ?? 0;
  }
  /** Resume parameters for `session`. */
  resume(session) {
    return { session, lastSeq: this.resumeSeq() };
  }
};
var RequestIds = class {
  constructor(next = 1) {
    this.next = next;
  }
  next;
  /** The next id. */
  nextId() {
    const id = this.next;
    this.next = id >= 4294967295 ? 1 : id + 1;
    return id;
  }
};
function newCallId(random = Math.random) {
  let out = "c-";
  for (let i = 0; i < 16; i++) out += Math.floor(random() * 16).toString(16);
  return out;
}
var DEFAULT_RECONNECT = {
  maxAttempts: 10,
  initialBackoffMs: 100,
  maxBackoffMs: 5e3
};
function backoffMs(policy, attempt, random = Math.random) {
  const exp = policy.initialBackoffMs * 2 ** Math.min(Math.max(attempt - 1, 0), 16);
  const capped = Math.min(exp, policy.maxBackoffMs);
  return capped * (0.75 + random() * 0.5);
}
function tokenSubject(token) {
  const payload = token.split(".")[1];
  if (!payload) return void 0;
  try {
    const b64 = payload.replace(/-/g, "+").replace(/_/g, "/");
    const json = JSON.parse(atob(b64 + "=".repeat((4 - b64.length % 4) % 4)));
    if (json && typeof json === "object" && typeof json.sub === "string") {
      return json.sub;
    }
  } catch {
    return void 0;
  }
  return void 0;
}

// src/transport.ts
var systemClock = {
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (handle) => globalThis.clearTimeout(handle),
  now: () => Date.now()
};
var defaultSocketFactory = (url, protocols) => {
  const Ctor = globalThis.WebSocket;
  if (!Ctor) {
    throw new TypeError("no global WebSocket: pass options.socketFactory (Node 20: run with --experimental-websocket)");
  }
  return new Ctor(url, protocols);
};
function messageBytes(data) {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return void 0;
}
function urlProblem(url) {
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    return "not a URL";
  }
  if (parsed.protocol !== "ws:" && parsed.protocol !== "wss:") return "the scheme must be ws:// or wss://";
  if (!parsed.hostname) return "no host";
  return void 0;
}

// src/webtransport.ts
var ABNORMAL_CLOSE = 1006;
var CLOSE_AFTER_FIN_MS = 1e3;
var DEFAULT_FALLBACK_MS = 1500;
function webTransportUrl(wsUrl) {
  const parsed = new URL(wsUrl);
  if (parsed.protocol !== "wss:") return void 0;
  return "https:" + wsUrl.slice("wss:".length);
}
function globalWebTransport() {
  const Ctor = globalThis.WebTransport;
  if (typeof Ctor === "undefined") return void 0;
  return (url, protocols, hashes) => new Ctor(url, hashes ? { protocols, serverCertificateHashes: hashes } : { protocols });
}
var StreamFrames = class {
  buf = new Uint8Array(0);
  /** Takes `chunk`; returns the frames it completes. Throws when a `length` is above
   * {@link MAX_FRAME_LEN}: such a frame cannot be skipped, the stream is out of step. */
  push(chunk) {
    const joined = new Uint8Array(this.buf.length + chunk.length);
    joined.set(this.buf);
    joined.set(chunk, this.buf.length);
    const frames = [];
    let at = 0;
    while (joined.length - at >= 4) {
      const len = new DataView(joined.buffer, at, 4).getUint32(0);
      if (len > MAX_FRAME_LEN) throw new RangeError(`frame length ${len} above ${MAX_FRAME_LEN}`);
      if (joined.length - at < 4 + len) break;
      frames.push(joined.slice(at, at + 4 + len));
      at += 4 + len;
    }
    this.buf = joined.slice(at);
    return frames;
  }
};
var WebTransportSocket = class {
  /** Which transport this is. */
  transport = "webtransport";
  binaryType = "arraybuffer";
  onopen = null;
  onmessage = null;
  onerror = null;
  onclose = null;
  session;
  writer;
  ended = false;
  constructor(url, protocols, factory, hashes) {
    this.session = factory(url, protocols, hashes);
    void this.run();
  }
  send(data) {
    if (this.ended || !this.writer) throw new Error("WebTransport stream not open");
    this.writer.write(data).catch((err) => this.end({ code: ABNORMAL_CLOSE, reason: String(err) }));
  }
  close(code, reason) {
    if (this.ended) return;
    this.ended = true;
    try {
      this.session.close({ closeCode: code ?? 1e3, reason: reason ?? "" });
    } catch {
    }
  }
  async run() {
    let reader;
    try {
      await this.session.ready;
      const stream = await this.session.createBidirectionalStream();
      if (this.ended) return;
      this.writer = stream.writable.getWriter();
      reader = stream.readable.getReader();
    } catch (err) {
      this.end({ code: ABNORMAL_CLOSE, reason: `cannot open WebTransport: ${String(err)}` });
      return;
    }
    this.onopen?.({});
    const frames = new StreamFrames();
    try {
      for (; ; ) {
        const { value, done } = await reader.read();
        if (done || this.ended) break;
        for (const frame of frames.push(value)) {
          if (this.ended) return;
          this.onmessage?.({ data: frame });
        }
      }
    } catch (err) {
      if (err instanceof RangeError) {
        this.close(1009, "frame too large");
        this.end({ code: 1009, reason: err.message });
        return;
      }
    }
    this.end(await this.closeInfo());
  }
  /** The session's close code and reason, once the node closed it (or after a bounded wait). */
  async closeInfo() {
    let timer;
    const lost = new Promise((resolve) => {
      timer = setTimeout(() => resolve({ code: ABNORMAL_CLOSE, reason: "no session close after the stream ended" }), CLOSE_AFTER_FIN_MS);
    });
    const closed = this.session.closed.then(
      (info) => ({ code: info.closeCode ?? ABNORMAL_CLOSE, reason: info.reason ?? "" }),
      (err) => ({ code: ABNORMAL_CLOSE, reason: String(err) })
    );
    try {
      return await Promise.race([closed, lost]);
    } finally {
      clearTimeout(timer);
    }
  }
  end(ev) {
    const wasEnded = this.ended;
    this.ended = true;
    if (!wasEnded) {
      try {
        this.session.close({ closeCode: ev.code, reason: ev.reason.slice(0, 100) });
      } catch {
      }
    }
    const onclose = this.onclose;
    this.onopen = this.onmessage = this.onerror = this.onclose = null;
    onclose?.(ev);
  }
};
var FallbackSocket = class {
  constructor(wsUrl, wtUrl, protocols, openWebTransport, openWebSocket, fallbackMs, clock) {
    this.wsUrl = wsUrl;
    this.protocols = protocols;
    this.openWebSocket = openWebSocket;
    this.clock = clock;
    let wt;
    try {
      wt = openWebTransport(wtUrl, protocols);
    } catch {
      this.transport = "websocket";
      this.inner = this.attach(openWebSocket(wsUrl, protocols));
      return;
    }
    this.inner = this.attach(wt);
    this.timer = clock.setTimeout(() => this.fallBack(), fallbackMs);
  }
  wsUrl;
  protocols;
  openWebSocket;
  clock;
  /** The transport in use (WebTransport until the fallback). */
  transport = "webtransport";
  binaryType = "arraybuffer";
  onopen = null;
  onmessage = null;
  onerror = null;
  onclose = null;
  inner;
  timer;
  /** A frame arrived: the transport works, and its close is the connection's. */
  received = false;
  closed = false;
  send(data) {
    this.inner.send(data);
  }
  close(code, reason) {
    this.closed = true;
    this.clock.clearTimeout(this.timer);
    this.inner.close(code, reason);
  }
  attach(sock) {
    sock.binaryType = "arraybuffer";
    sock.onopen = (ev) => {
      this.clock.clearTimeout(this.timer);
      this.onopen?.(ev);
    };
    sock.onmessage = (ev) => {
      this.received = true;
      this.onmessage?.(ev);
    };
    sock.onerror = (ev) => this.onerror?.(ev);
    sock.onclose = (ev) => {
      if (!this.received && this.transport === "webtransport") this.fallBack();
      else this.onclose?.(ev);
    };
    return sock;
  }
  /** Gives WebTransport up (not open in time, or failed before its first frame) for WebSocket. */
  fallBack() {
    if (this.received || this.closed || this.transport === "websocket") return;
    this.clock.clearTimeout(this.timer);
    const wt = this.inner;
    wt.onopen = wt.onmessage = wt.onerror = wt.onclose = null;
    try {
      wt.close(1e3, "falling back to WebSocket");
    } catch {
    }
    this.transport = "websocket";
    try {
      this.inner = this.attach(this.openWebSocket(this.wsUrl, this.protocols));
    } catch (err) {
      this.onclose?.({ code: ABNORMAL_CLOSE, reason: `cannot open WebSocket: ${String(err)}` });
    }
  }
};
function fallbackSocketFactory(webSocket, options, clock) {
  const factory = options.factory ?? globalWebTransport();
  if (!factory) return webSocket;
  const toWt = options.url ?? webTransportUrl;
  const fallbackMs = options.fallbackMs ?? DEFAULT_FALLBACK_MS;
  const open = (url, protocols) => new WebTransportSocket(url, protocols, factory, options.serverCertificateHashes);
  return (url, protocols) => {
    const wtUrl = toWt(url);
    if (wtUrl === void 0) return webSocket(url, protocols);
    return new FallbackSocket(url, wtUrl, protocols, open, webSocket, fallbackMs, clock);
  };
}

// src/client.ts
var MAX_PENDING = 1024;
var MAX_BATCH = 64;
var FAILURES_BEFORE_ENTRY = 2;
function asClientError(err) {
  if (err instanceof ClientError) return err;
  if (err instanceof FrameError) return new ClientError("encode", `cannot send: ${err.message}`);
  return new ClientError("protocol", String(err));
}
function shouldGoBackToEntry(err, failuresInARow) {
  return err.kind === "connect" || err.kind === "timeout" || err.code === 1006 /* NotOwner */ || failuresInARow >= FAILURES_BEFORE_ENTRY;
}
function closeIsFatal(code) {
  return code === CloseCode.PolicyViolation || code === CloseCode.ProtocolError || code === CloseCode.TooBig || code === 1003;
}
function withTraceparent(url, traceparent) {
  if (!traceparent) return url;
  const parsed = new URL(url);
  parsed.searchParams.set("traceparent", traceparent);
  return parsed.toString();
}
var SwitchboardClient = class {
  options;
  factory;
  clock;
  random;
  entry;
  user;
  initialResume;
  listeners = /* @__PURE__ */ new Map();
  endpoint;
  sock = null;
  /** Bumped whenever the current socket is abandoned: its late events are ignored. */
  gen = 0;
  state = "idle";
  sessionId = "";
  version = 1;
  transport = "websocket";
  node = "";
  heartbeatMs = 0;
  resumed = false;
  reconnects = 0;
  silenceMs = 36e5;
  silenceTimer = void 0;
  rooms = new Rooms();
  calls = new CallTable();
  ids = new RequestIds();
  pending = /* @__PURE__ */ new Map();
  retries = new Retries();
  retryTimer = void 0;
  outq = [];
  flushScheduled = false;
  redirectsInARow = 0;
  /** The session a resume asked for when a node without its room answered `resumed: false`:
   * the re-join's Redirect leads to the owner, where it is resumed (same rule as the Rust client). */
  unresumed = void 0;
  stopped = false;
  early = [];
  constructor(url, options) {
    this.endpoint = url;
    this.entry = url;
    this.options = {
      token: options.token,
      versions: [...options.versions ?? [2, 1]].sort((a, b) => b - a),
      timeouts: { connectMs: 5e3, handshakeMs: 5e3, requestMs: 1e4, ...options.timeouts },
      reconnect: { ...DEFAULT_RECONNECT, ...options.reconnect },
      maxRedirects: options.maxRedirects ?? 3,
      maxQueued: Math.max(1, options.maxQueued ?? 256),
      traceparent: options.traceparent
    };
    this.clock = options.clock ?? systemClock;
    const webSocket = options.socketFactory ?? defaultSocketFactory;
    const wt = options.webTransport === true ? {} : options.webTransport || void 0;
    this.factory = wt ? fallbackSocketFactory(webSocket, wt, this.clock) : webSocket;
    this.random = options.random ?? Math.random;
    this.user = tokenSubject(options.token) ?? "";
    this.initialResume = options.resume;
  }
  // ---- events -------------------------------------------------------------------------
  /** Subscribes to an event; returns the unsubscribe function. */
  on(type, fn) {
    let set = this.listeners.get(type);
    if (!set) {
      set = /* @__PURE__ */ new Set();
      this.listeners.set(type, set);
    }
    set.add(fn);
    return () => set.delete(fn);
  }
  emit(type, value) {
    for (const fn of [...this.listeners.get(type) ?? []]) {
      try {
        fn(value);
      } catch (err) {
        console.error("switchboard client: listener failed", err);
      }
    }
  }
  setStatus(status) {
    if (this.state === status) return;
    this.state = status;
    this.emit("status", status);
  }
  // ---- inspection ---------------------------------------------------------------------
  /** Where the client is. */
  get status() {
    return this.state;
  }
  /** The current session. */
  session() {
    return {
      url: this.endpoint,
      session: this.sessionId,
      version: this.version,
      transport: this.transport,
      node: this.node,
      heartbeatMs: this.heartbeatMs,
      resumed: this.resumed,
      reconnects: this.reconnects,
      user: this.user
    };
  }
  /** The last event seq seen in `room` (undefined when not joined). */
  lastSeq(room) {
    return this.rooms.seq(room);
  }
  // ---- lifecycle ----------------------------------------------------------------------
  /** Connects (following redirects), says Hello and resolves with the Welcome. */
  async connect() {
    if (this.state !== "idle") throw new ClientError("protocol", `connect() called while ${this.state}`);
    this.setStatus("connecting");
    try {
      const welcome = await this.establish(this.initialResume);
      this.opened(welcome, false);
      return welcome;
    } catch (err) {
      const e = asClientError(err);
      this.shutdown(e);
      throw e;
    }
  }
  /** Closes the connection (WebSocket close 1000) and stops for good. */
  close() {
    if (this.stopped) return;
    const sock = this.abandonSocket();
    if (sock) {
      try {
        sock.close(CloseCode.Normal, "client closing");
      } catch {
      }
    }
    this.stop(new ClientError("closed", "client closed"));
    this.emit("closed", void 0);
  }
  // ---- operations ---------------------------------------------------------------------
  /** Joins `room` and resolves with Joined (following a Redirect to the room's owner). */
  join(room) {
    return new Promise((resolve, reject) => {
      if (this.stopped) return reject(new ClientError("closed", "client closed"));
      if (this.pending.size >= MAX_PENDING) return reject(new ClientError("limit", "client limit reached: pending joins"));
      const id = this.ids.nextId();
      const entry = { room, resolve, reject };
      entry.timer = this.clock.setTimeout(() => {
        for (const [key, p] of this.pending) {
          if (p === entry) this.pending.delete(key);
        }
        reject(new ClientError("timeout", "timed out waiting for Joined"));
      }, this.options.timeouts.requestMs);
      this.pending.set(id, entry);
      if (this.state === "open" && this.sock) {
        this.flush();
        try {
          this.write({ type: "Join", requestId: id, room });
        } catch (err) {
          this.pending.delete(id);
          this.clock.clearTimeout(entry.timer);
          reject(asClientError(err));
        }
      }
    });
  }
  /** Leaves `room`. */
  leave(room) {
    return this.op(() => {
      this.rooms.left(room);
      return { type: "Leave", requestId: this.ids.nextId(), room };
    });
  }
  /** Invites `to` into a call in `room`; resolves with the new call id once sent. The answer
   * arrives as an `InviteResult` message. */
  async invite(room, to) {
    const callId = newCallId(this.random);
    this.calls.insert(callId, { room, peer: to });
    try {
      await this.op(() => ({ type: "Invite", requestId: this.ids.nextId(), room, callId, from: this.user, to }));
    } catch (err) {
      this.calls.remove(callId);
      throw err;
    }
    return callId;
  }
  /** Accepts an invitation. */
  accept(callId) {
    return this.answerInvite(callId, true, "");
  }
  /** Rejects an invitation. */
  reject(callId, reason) {
    return this.answerInvite(callId, false, reason);
  }
  answerInvite(callId, accepted, reason) {
    return this.op(() => {
      const call = this.call(callId);
      return {
        type: "InviteResult",
        requestId: this.ids.nextId(),
        room: call.room,
        callId,
        from: this.user,
        to: call.peer,
        accepted,
        reason
      };
    });
  }
  /** Sends an SDP offer; resolves with its request id (an `Error` frame refusing it echoes it). */
  async offer(callId, sdp) {
    let id = 0;
    await this.op(() => {
      const call = this.call(callId);
      id = this.ids.nextId();
      return { type: "Offer", requestId: id, room: call.room, callId, from: this.user, to: call.peer, sdp };
    });
    return id;
  }
  /** Sends an SDP answer; resolves with its request id. */
  async answer(callId, sdp) {
    let id = 0;
    await this.op(() => {
      const call = this.call(callId);
      id = this.ids.nextId();
      return { type: "Answer", requestId: id, room: call.room, callId, from: this.user, to: call.peer, sdp };
    });
    return id;
  }
  /** Sends one ICE candidate; on v2, candidates for the same call queued back to back go out
   * as one IceBatch. */
  ice(callId, candidate) {
    return new Promise((resolve, reject) => {
      if (!this.enqueue({ kind: "ice", callId, candidate, done: resolve, fail: reject }, reject)) return;
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        queueMicrotask(() => {
          this.flushScheduled = false;
          this.flush();
        });
      }
    });
  }
  /** Signals that no more candidates follow for this call. */
  endOfCandidates(callId) {
    return this.op(() => {
      const call = this.call(callId);
      return { type: "IceCandidate", room: call.room, callId, from: this.user, to: call.peer, candidate: "", sdpMid: "", sdpMLineIndex: 0 };
    });
  }
  /** Hangs a call up. */
  hangup(callId, reason) {
    return this.op(() => {
      const call = this.call(callId);
      return { type: "Hangup", requestId: this.ids.nextId(), room: call.room, callId, from: this.user, reason };
    });
  }
  /** Sends any message as is (tools and tests; no bookkeeping). */
  sendRaw(msg) {
    return this.op(() => msg);
  }
  call(callId) {
    const call = this.calls.get(callId);
    if (!call) throw new ClientError("unknown_call", `unknown call ${JSON.stringify(callId)}`);
    return call;
  }
  op(build) {
    return new Promise((resolve, reject) => {
      if (this.enqueue({ kind: "op", build, done: resolve, fail: reject }, reject)) this.flush();
    });
  }
  enqueue(item, reject) {
    if (this.stopped) {
      reject(new ClientError("closed", "client closed"));
      return false;
    }
    if (this.outq.length >= this.options.maxQueued) {
      reject(new ClientError("limit", "client limit reached: queued operations"));
      return false;
    }
    this.outq.push(item);
    return true;
  }
  /** Writes the queue in order while the connection is open, merging back-to-back candidates
   * of one call into IceBatch frames on v2. */
  flush() {
    while (this.state === "open" && this.sock && this.outq.length > 0) {
      const item = this.outq.shift();
      if (item.kind === "op") {
        let msg2;
        try {
          msg2 = item.build();
        } catch (err) {
          item.fail(asClientError(err));
          continue;
        }
        if (!this.send(msg2, [item])) return;
        continue;
      }
      const batch = [item];
      if (this.version >= 2) {
        while (batch.length < MAX_BATCH) {
          const next = this.outq[0];
          if (!next || next.kind !== "ice" || next.callId !== item.callId) break;
          batch.push(this.outq.shift());
        }
      }
      const call = this.calls.get(item.callId);
      if (!call) {
        const err = new ClientError("unknown_call", `unknown call ${JSON.stringify(item.callId)}`);
        for (const b of batch) b.fail(err);
        continue;
      }
      const candidates = batch.map((b) => b.candidate);
      const msg = candidates.length > 1 ? { type: "IceBatch", room: call.room, callId: item.callId, from: this.user, to: call.peer, candidates } : {
        type: "IceCandidate",
        room: call.room,
        callId: item.callId,
        from: this.user,
        to: call.peer,
        candidate: candidates[0].candidate,
        sdpMid: candidates[0].sdpMid,
        sdpMLineIndex: candidates[0].sdpMLineIndex
      };
      if (!this.send(msg, batch)) return;
    }
  }
  /** Sends `msg` for `items`; false when the socket failed (the connection is then lost). */
  send(msg, items) {
    try {
      this.write(msg);
    } catch (err) {
      const e = asClientError(err);
      for (const i of items) i.fail(e.kind === "encode" ? e : new ClientError("connection_lost", "connection lost while the request was in flight"));
      return e.kind === "encode";
    }
    for (const i of items) i.done();
    return true;
  }
  /** Encodes and sends on the current socket. An encode failure throws `encode` (the
   * connection is fine); a socket failure ends the connection and throws `connection_lost`. */
  write(msg) {
    let frame;
    try {
      frame = encodeMessage(msg);
    } catch (err) {
      throw asClientError(err);
    }
    const sock = this.sock;
    if (!sock) throw new ClientError("connection_lost", "not connected");
    try {
      sock.send(frame);
    } catch (err) {
      this.exit({ kind: "lost", err: new ClientError("websocket", `send failed: ${String(err)}`) });
      throw new ClientError("connection_lost", "connection lost while the request was in flight");
    }
    this.retries.sent(msg);
  }
  /** Arms the timer of the next retry of a request refused with 1010. */
  armRetry() {
    this.clock.clearTimeout(this.retryTimer);
    const due = this.retries.nextDue();
    if (due === void 0) return;
    const gen = this.gen;
    this.retryTimer = this.clock.setTimeout(() => {
      if (gen !== this.gen || !this.sock) return;
      for (const msg of this.retries.takeDue(this.clock.now())) {
        try {
          this.write(msg);
        } catch {
          return;
        }
      }
      this.armRetry();
    }, Math.max(0, due - this.clock.now()));
  }
  // ---- connection establishment -------------------------------------------------------
  /** Opens a socket, says Hello and waits for Welcome, following handshake redirects; then
   * re-joins rooms the server forgot and re-sends joins still awaiting an answer. */
  async establish(resume) {
    let redirects = 0;
    for (; ; ) {
      if (this.stopped) throw new ClientError("closed", "client closed");
      const outcome = await this.handshake(resume);
      if (outcome.kind === "welcome") {
        if (this.stopped) {
          outcome.sock.close(CloseCode.Normal, "client closing");
          throw new ClientError("closed", "client closed");
        }
        this.welcomed(outcome.sock, outcome.welcome, resume !== void 0, outcome.early);
        return outcome.welcome;
      }
      redirects += 1;
      if (redirects > this.options.maxRedirects) {
        throw new ClientError("too_many_redirects", `too many redirects (limit ${this.options.maxRedirects})`);
      }
      const problem = urlProblem(outcome.url);
      if (problem) throw new ClientError("invalid_url", `invalid URL ${JSON.stringify(outcome.url)}: ${problem}`);
      this.endpoint = outcome.url;
      if (!resume) this.rooms.clear();
    }
  }
  handshake(resume) {
    const url = this.endpoint;
    const problem = urlProblem(url);
    if (problem) return Promise.reject(new ClientError("invalid_url", `invalid URL ${JSON.stringify(url)}: ${problem}`));
    const { connectMs, handshakeMs } = this.options.timeouts;
    return new Promise((resolve, reject) => {
      let sock;
      try {
        sock = this.factory(withTraceparent(url, this.options.traceparent), this.options.versions.map((v) => `switchboard.v${v}`));
      } catch (err) {
        reject(new ClientError("invalid_url", `invalid URL ${JSON.stringify(url)}: ${String(err)}`));
        return;
      }
      sock.binaryType = "arraybuffer";
      let opened = false;
      let done = false;
      const early = [];
      let timer = this.clock.setTimeout(() => {
        fail(opened ? new ClientError("timeout", "timed out waiting for Welcome") : new ClientError("timeout", `timed out connecting to ${url}`));
      }, connectMs);
      const finish = () => {
        done = true;
        this.clock.clearTimeout(timer);
      };
      const fail = (err) => {
        if (done) return;
        finish();
        sock.onopen = sock.onmessage = sock.onerror = sock.onclose = null;
        try {
          sock.close(CloseCode.Normal, "handshake failed");
        } catch {
        }
        reject(err);
      };
      const sendPong = (nonce) => {
        try {
          sock.send(encodeMessage({ type: "Pong", nonce }));
        } catch (err) {
          fail(new ClientError("websocket", `send failed: ${String(err)}`));
        }
      };
      sock.onopen = () => {
        if (done) return;
        opened = true;
        this.clock.clearTimeout(timer);
        timer = this.clock.setTimeout(() => fail(new ClientError("timeout", "timed out waiting for Welcome")), handshakeMs);
        try {
          sock.send(encodeMessage({ type: "Hello", token: this.options.token, versions: this.options.versions, resume }));
        } catch (err) {
          fail(asClientError(err));
        }
      };
      sock.onmessage = (ev) => {
        const bytes = messageBytes(ev.data);
        if (done) {
          if (bytes && early.length < this.options.maxQueued) early.push(bytes);
          return;
        }
        if (!bytes) return fail(new ClientError("protocol", "text message during the handshake"));
        let msg;
        try {
          msg = decodeMessage(bytes);
        } catch (err) {
          return fail(err instanceof FrameError ? ClientError.fromFrameError(err) : asClientError(err));
        }
        switch (msg.type) {
          case "Welcome":
            finish();
            resolve({ kind: "welcome", sock, welcome: msg, early });
            return;
          case "Redirect":
            finish();
            sock.onopen = sock.onmessage = sock.onerror = sock.onclose = null;
            try {
              sock.close(CloseCode.Normal, "redirected");
            } catch {
            }
            resolve({ kind: "redirect", url: msg.url });
            return;
          case "Error":
            return fail(ClientError.fromFrame(msg));
          case "Ping":
            return sendPong(msg.nonce);
          default:
            return fail(new ClientError("protocol", `expected Welcome, got ${msg.type}`));
        }
      };
      sock.onerror = () => {
      };
      sock.onclose = (ev) => {
        if (!opened) {
          fail(new ClientError("connect", `cannot connect to ${url} (close ${ev.code})`, { closeCode: ev.code }));
        } else {
          const err = closeIsFatal(ev.code) ? new ClientError("websocket", `closed during handshake: ${ev.code} ${ev.reason}`, { closeCode: ev.code }) : new ClientError("connection_lost", `closed during handshake: ${ev.code} ${ev.reason}`, { closeCode: ev.code });
          fail(err);
        }
      };
    });
  }
  /** Adopts a welcomed socket: session, version, heartbeat; re-joins and re-sends joins. */
  welcomed(sock, welcome, askedResume, early) {
    if (welcome.version !== 1 && welcome.version !== 2) {
      sock.close(CloseCode.Normal, "unknown version");
      throw new ClientError("protocol", `server picked unknown protocol version ${welcome.version}`);
    }
    const asked = this.sessionId;
    this.sessionId = welcome.session;
    this.version = welcome.version;
    this.transport = sock.transport ?? "websocket";
    this.node = welcome.node;
    this.heartbeatMs = welcome.heartbeatMs;
    this.resumed = welcome.resumed;
    this.silenceMs = this.options.timeouts.silenceMs ?? (welcome.heartbeatMs === 0 ? 36e5 : welcome.heartbeatMs * 2.5 + 2e3);
    this.gen += 1;
    const gen = this.gen;
    this.sock = sock;
    sock.onmessage = (ev) => this.onData(gen, ev.data);
    sock.onclose = (ev) => this.onClose(gen, ev.code, ev.reason);
    sock.onerror = () => {
    };
    this.armSilence();
    this.unresumed = void 0;
    if (askedResume && !welcome.resumed) {
      if (this.rooms.names().length > 0) this.unresumed = this.rooms.resume(asked);
      for (const room of this.rooms.names()) this.pending.set(this.ids.nextId(), { room });
      this.rooms.clear();
    }
    const joins = [...this.pending.values()];
    this.pending.clear();
    for (const join of joins) {
      const id = this.ids.nextId();
      this.pending.set(id, join);
      try {
        sock.send(encodeMessage({ type: "Join", requestId: id, room: join.room }));
      } catch (err) {
        this.abandonSocket();
        throw new ClientError("connection_lost", `send failed: ${String(err)}`);
      }
    }
    for (const msg of this.retries.takeOnWelcome(welcome.resumed)) {
      try {
        sock.send(encodeMessage(msg));
      } catch (err) {
        this.abandonSocket();
        throw new ClientError("connection_lost", `send failed: ${String(err)}`);
      }
      this.retries.sent(msg);
    }
    this.early = early;
  }
  /** Becomes open: handles frames that arrived right behind Welcome, then sends the queue. */
  opened(welcome, announce) {
    this.setStatus("open");
    this.emit("welcome", welcome);
    if (announce) this.emit("message", welcome);
    const gen = this.gen;
    const early = this.early;
    this.early = [];
    for (const bytes of early) {
      if (this.gen !== gen) return;
      this.onData(gen, bytes);
    }
    this.flush();
  }
  // ---- serving a connection -----------------------------------------------------------
  armSilence() {
    this.clock.clearTimeout(this.silenceTimer);
    const gen = this.gen;
    this.silenceTimer = this.clock.setTimeout(() => {
      if (gen === this.gen) {
        this.exit({
          kind: "lost",
          err: new ClientError("timeout", "timed out waiting for any frame from the server (heartbeat)"),
          silent: true
        });
      }
    }, this.silenceMs);
  }
  onData(gen, data) {
    if (gen !== this.gen) return;
    this.armSilence();
    const bytes = messageBytes(data);
    if (!bytes) {
      this.emit("error", new ClientError("bad_frame", "bad frame from server: text message"));
      return;
    }
    let msg;
    try {
      msg = decodeMessage(bytes);
    } catch (err) {
      this.emit("error", err instanceof FrameError ? ClientError.fromFrameError(err) : asClientError(err));
      return;
    }
    this.onFrame(msg);
  }
  onFrame(msg) {
    switch (msg.type) {
      case "Ping":
        try {
          this.write({ type: "Pong", nonce: msg.nonce });
        } catch {
        }
        return;
      case "Pong":
      case "Welcome":
      case "Hello":
        return;
      case "Joined": {
        this.redirectsInARow = 0;
        const pending = this.pending.get(msg.requestId);
        if (pending) {
          this.pending.delete(msg.requestId);
          this.clock.clearTimeout(pending.timer);
          this.rooms.joined(msg.room || pending.room, msg.lastSeq);
          if (pending.resolve) pending.resolve(msg);
          else this.emit("message", msg);
        } else {
          if (this.rooms.has(msg.room)) this.rooms.joined(msg.room, msg.lastSeq);
          this.emit("message", msg);
        }
        return;
      }
      case "Error":
        this.onError(msg);
        return;
      case "Redirect": {
        this.redirectsInARow += 1;
        if (this.redirectsInARow > this.options.maxRedirects) {
          const pending = this.pending.get(msg.requestId);
          if (pending?.reject) {
            this.pending.delete(msg.requestId);
            this.clock.clearTimeout(pending.timer);
            pending.reject(new ClientError("too_many_redirects", `too many redirects (limit ${this.options.maxRedirects})`));
          }
          this.redirectsInARow = 0;
          return;
        }
        this.exit({ kind: "redirect", url: msg.url });
        return;
      }
      case "Migrate":
        this.exit({ kind: "migrate", url: msg.url, resumeToken: msg.resumeToken });
        return;
      case "Event":
        if (this.rooms.observeEvent(msg)) {
          this.calls.observe(msg, this.user);
          this.emit("message", msg);
        }
        return;
      default:
        this.calls.observe(msg, this.user);
        this.emit("message", msg);
    }
  }
  /** An Error frame: a retryable refusal of a join or a tracked request is retried by the
   * library (docs/protocol.md, "Retryable refusals"); anything else goes to its caller or the
   * application. */
  onError(msg) {
    const policy = this.options.reconnect;
    const err = ClientError.fromFrame(msg);
    const pending = msg.requestId !== 0 ? this.pending.get(msg.requestId) : void 0;
    if (pending) {
      this.pending.delete(msg.requestId);
      const refusals = pending.refusals ?? 0;
      if ((err.retriable || msg.code === 1006 /* NotOwner */) && refusals < policy.maxAttempts) {
        pending.refusals = refusals + 1;
        this.pending.set(msg.requestId, pending);
        this.exit({ kind: "lost", err });
        return;
      }
      this.clock.clearTimeout(pending.timer);
      if (pending.reject) pending.reject(err);
      else this.emit("message", msg);
      return;
    }
    const refusal = this.retries.refused(msg, this.clock.now(), (n2) => backoffMs(policy, n2, this.random), policy.maxAttempts);
    switch (refusal.kind) {
      case "deliver":
        if (msg.requestId === 0 && msg.code === 1003 /* AuthFailed */) {
          this.exit({ kind: "fatal", err });
          return;
        }
        this.emit("message", msg);
        return;
      case "later":
        this.armRetry();
        return;
      case "after_move":
      case "ignore":
        return;
    }
  }
  onClose(gen, code, reason) {
    if (gen !== this.gen) return;
    const text = `server closed the connection: ${code} ${reason}`.trim();
    if (closeIsFatal(code)) {
      this.exit({ kind: "fatal", err: new ClientError("websocket", text, { closeCode: code }) });
    } else {
      this.exit({ kind: "lost", err: new ClientError("websocket", text, { closeCode: code }) });
    }
  }
  /** Detaches the current socket (its late events are ignored) and returns it. */
  abandonSocket() {
    this.gen += 1;
    this.clock.clearTimeout(this.silenceTimer);
    this.clock.clearTimeout(this.retryTimer);
    const sock = this.sock;
    this.sock = null;
    if (sock) sock.onopen = sock.onmessage = sock.onerror = sock.onclose = null;
    return sock;
  }
  /** Ends the current connection and decides what comes next. */
  exit(exit) {
    const sock = this.abandonSocket();
    if (sock) {
      try {
        sock.close(CloseCode.Normal, "client closing");
      } catch {
      }
    }
    void this.afterExit(exit);
  }
  async afterExit(exit) {
    if (this.stopped) return;
    const left = this.endpoint;
    let resume;
    let immediate;
    switch (exit.kind) {
      case "fatal":
        this.shutdown(exit.err);
        return;
      case "lost":
        if (this.options.reconnect.maxAttempts === 0) {
          this.shutdown(exit.err);
          return;
        }
        resume = this.rooms.resume(this.sessionId);
        immediate = false;
        if (exit.silent) {
          const next = [this.endpoint, left, this.entry].find((c) => c !== left);
          if (next !== void 0) {
            this.endpoint = next;
            immediate = true;
          }
        }
        break;
      case "redirect": {
        const problem = urlProblem(exit.url);
        if (problem) {
          this.shutdown(new ClientError("invalid_url", `invalid URL ${JSON.stringify(exit.url)}: ${problem}`));
          return;
        }
        this.endpoint = exit.url;
        this.rooms.clear();
        resume = this.unresumed;
        this.unresumed = void 0;
        immediate = true;
        break;
      }
      case "migrate": {
        if (exit.url) {
          const problem = urlProblem(exit.url);
          if (problem) {
            this.shutdown(new ClientError("invalid_url", `invalid URL ${JSON.stringify(exit.url)}: ${problem}`));
            return;
          }
          this.endpoint = exit.url;
        }
        resume = this.rooms.resume(this.sessionId);
        if (exit.resumeToken) resume.session = exit.resumeToken;
        immediate = exit.url !== "";
        break;
      }
    }
    this.reconnects += 1;
    this.setStatus("reconnecting");
    try {
      const welcome = await this.reconnect(resume, immediate, left);
      this.opened(welcome, true);
    } catch (err) {
      this.shutdown(asClientError(err));
    }
  }
  /** Retries establish() with backoff; when the target stops answering, moves on in turn to the
   * node it was on (`left`) and the entry URL, so one dead node cannot use up every attempt
   * (docs/reliability.md, finding 2). */
  async reconnect(resume, immediate, left) {
    const policy = this.options.reconnect;
    const attempts = Math.max(1, policy.maxAttempts);
    let last = new ClientError("connection_lost", "connection lost");
    let failuresHere = 0;
    const candidates = [.../* @__PURE__ */ new Set([this.endpoint, left, this.entry])];
    for (let attempt = 1; attempt <= attempts; attempt++) {
      if (!(immediate && attempt === 1)) await this.sleep(backoffMs(policy, attempt, this.random));
      if (this.stopped) throw new ClientError("closed", "client closed");
      try {
        return await this.establish(resume);
      } catch (err) {
        const e = asClientError(err);
        if (!(e.retriable || e.code === 1006 /* NotOwner */)) throw e;
        failuresHere += 1;
        if (shouldGoBackToEntry(e, failuresHere)) {
          const at = candidates.indexOf(this.endpoint);
          const next = at < 0 ? this.entry : candidates[(at + 1) % candidates.length];
          if (next !== this.endpoint) {
            this.endpoint = next;
            failuresHere = 0;
          }
        }
        last = e;
      }
    }
    throw new ClientError("reconnect_failed", `reconnect failed after ${attempts} attempts: ${last.message}`, {
      attempts,
      cause: last
    });
  }
  sleep(ms) {
    return new Promise((resolve) => this.clock.setTimeout(resolve, ms));
  }
  /** Stops for good with `err`: fails every waiting join and queued operation. */
  shutdown(err) {
    if (this.stopped) return;
    this.abandonSocket();
    this.stop(err);
    this.emit("closed", err);
  }
  stop(err) {
    this.stopped = true;
    for (const p of this.pending.values()) {
      this.clock.clearTimeout(p.timer);
      p.reject?.(err.kind === "closed" ? err : new ClientError("connection_lost", `connection lost: ${err.message}`));
    }
    this.pending.clear();
    const queued = this.outq;
    this.outq = [];
    for (const item of queued) item.fail(err);
    this.setStatus("closed");
  }
};

// src/demo/main.ts
var params = new URLSearchParams(location.search);
var $ = (id) => document.getElementById(id);
function twoPanes() {
  const room = params.get("room") ?? "studio-1";
  $("title").textContent = `room ${room}: alice invites bob; both peer connections negotiate through Switchboard`;
  const q = (user2, peer) => `/demo?user=${user2}&peer=${peer}&room=${encodeURIComponent(room)}`;
  $("root").innerHTML = `<div class="panes"><iframe id="alice" src="${q("alice", "bob")}"></iframe><iframe id="bob" src="${q("bob", "alice")}"></iframe></div>`;
}
function short(msg) {
  const m = msg;
  const parts = [];
  for (const [k, v] of Object.entries(m)) {
    if (k === "type" || k === "token" || v === "" || v === void 0) continue;
    let text = typeof v === "bigint" ? v.toString() : JSON.stringify(v);
    if (k === "sdp" && typeof v === "string") text = `${v.length} bytes`;
    if (msg.type === "Event" && k === "kind") text = EventKind2[v] ?? String(v);
    parts.push(`${k}=${text.length > 60 ? text.slice(0, 57) + "..." : text}`);
  }
  return `${msg.type} ${parts.join(" ")}`;
}
async function oneHost(user2) {
  const room = params.get("room") ?? "studio-1";
  const peer = params.get("peer") ?? "";
  $("title").textContent = `${user2} in ${room}`;
  $("root").innerHTML = `<div class="host">
    <table class="kv">
      <tr><td>client</td><td class="state" id="status">idle</td></tr>
      <tr><td>owner node</td><td id="node">-</td></tr>
      <tr><td>session</td><td id="session">-</td></tr>
      <tr><td>call</td><td class="state" id="call">none</td></tr>
      <tr><td>peer connection</td><td class="state" id="pc">-</td></tr>
      <tr><td>frames</td><td id="frames">0 in / 0 out</td></tr>
      <tr><td>data channel</td><td id="dc">-</td></tr>
    </table>
    <button id="invite" ${peer ? "" : "disabled"}>Invite ${peer || "(no peer)"}</button>
    <button id="send">Send hello</button><button id="hangup">Hang up</button>
    <div id="log"></div></div>`;
  const log = (cls, text) => {
    const el = $("log");
    const line = document.createElement("div");
    line.className = cls;
    line.textContent = `${(/* @__PURE__ */ new Date()).toISOString().slice(11, 23)} ${text}`;
    el.appendChild(line);
    while (el.childElementCount > 400) el.firstElementChild?.remove();
    el.scrollTop = el.scrollHeight;
  };
  const demo = {
    user: user2,
    room,
    peer,
    client: null,
    pc: null,
    callId: "",
    callState: "none",
    pcState: "-",
    node: "",
    frames: { in: 0, out: 0 },
    received: [],
    byChannel: {},
    errors: [],
    welcomes: [],
    joined: false,
    inviteAt: 0,
    connectedAt: 0,
    calls: 0,
    invitesReceived: 0,
    invite,
    send,
    hangup,
    renegotiate,
    injectInvalidOffer
  };
  window.switchboardDemo = demo;
  const render = () => {
    const c = demo.client;
    $("status").textContent = c ? c.status : "idle";
    $("status").className = "state " + (c?.status === "open" ? "ok" : c?.status === "closed" ? "bad" : "wait");
    const s2 = c?.session();
    $("node").textContent = s2?.node ? `${s2.node}  (${s2.url}, v${s2.version}, ${s2.transport})` : "-";
    $("session").textContent = s2?.session ? `${s2.session}  resumed=${s2.resumed} reconnects=${s2.reconnects}` : "-";
    $("call").textContent = demo.callId ? `${demo.callState}  (${demo.callId})` : "none";
    $("call").className = "state " + (demo.callState === "connected" ? "ok" : demo.callState === "failed" ? "bad" : "wait");
    $("pc").textContent = demo.pcState;
    $("pc").className = "state " + (demo.pcState === "connected" ? "ok" : demo.pcState === "failed" ? "bad" : "wait");
    $("frames").textContent = `${demo.frames.in} in / ${demo.frames.out} out`;
    $("dc").textContent = demo.received.length ? demo.received.slice(-3).join(" | ") : "-";
  };
  let token = params.get("token") ?? "";
  let url = params.get("ws") ?? "";
  if (!token || !url) {
    const res = await fetch(`/demo/token?user=${encodeURIComponent(user2)}&room=${encodeURIComponent(room)}`);
    if (!res.ok) {
      log("err", `token endpoint: HTTP ${res.status} ${await res.text()}`);
      return;
    }
    const body = await res.json();
    token ||= body.token;
    if (!url) {
      const advertised = new URL(body.url);
      advertised.hostname = location.hostname;
      url = advertised.toString();
    }
  }
  const client = new SwitchboardClient(url, { token, webTransport: params.get("wt") === "1" });
  demo.client = client;
  const outgoing = (msg) => {
    demo.frames.out += 1;
    log("out", `→ ${msg}`);
    render();
  };
  client.on("status", (s2) => {
    log("info", `client ${s2}`);
    render();
  });
  client.on("welcome", (w) => {
    demo.node = w.node;
    const transport = client.session().transport;
    demo.welcomes.push({ node: w.node, resumed: w.resumed, session: w.session, transport, at: Date.now() });
    log("info", `welcomed by ${w.node} over ${transport} (resumed=${w.resumed}, v${w.version})`);
    render();
  });
  client.on("error", (e) => log("err", e.message));
  client.on("closed", (e) => log("err", `client stopped: ${e ? e.message : "closed"}`));
  let pendingRemote = [];
  const resetCall = () => {
    demo.pc?.close();
    demo.pc = null;
    demo.pcState = "-";
    pendingRemote = [];
  };
  const newPeerConnection = (callId) => {
    resetCall();
    const pc = new RTCPeerConnection();
    demo.pc = pc;
    pc.onicecandidate = (ev) => {
      if (ev.candidate && ev.candidate.candidate) {
        const c = { candidate: ev.candidate.candidate, sdpMid: ev.candidate.sdpMid ?? "", sdpMLineIndex: ev.candidate.sdpMLineIndex ?? 0 };
        outgoing(`IceCandidate ${c.candidate.slice(0, 40)}...`);
        client.ice(callId, c).catch((e) => log("err", `ice: ${e.message}`));
      } else if (!ev.candidate) {
        outgoing("IceCandidate (end of candidates)");
        client.endOfCandidates(callId).catch((e) => log("err", `end of candidates: ${e.message}`));
      }
    };
    pc.onconnectionstatechange = () => {
      if (demo.pc !== pc) return;
      demo.pcState = pc.connectionState;
      if (pc.connectionState === "connected" && !demo.connectedAt) demo.connectedAt = Date.now();
      log("info", `peer connection ${pc.connectionState}`);
      render();
    };
    pc.ondatachannel = (ev) => wireChannel(ev.channel);
    return pc;
  };
  const channels = [];
  const wireChannel = (ch) => {
    channels.push(ch);
    ch.onmessage = (ev) => {
      demo.received.push(String(ev.data));
      demo.byChannel[ch.label] = (demo.byChannel[ch.label] ?? 0) + 1;
      log("info", `data channel ${ch.label}: ${String(ev.data)}`);
      render();
    };
  };
  const addRemote = async (c) => {
    if (!c.candidate) return;
    if (!demo.pc?.remoteDescription) {
      pendingRemote.push(c);
      return;
    }
    await demo.pc.addIceCandidate({ candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex });
  };
  let inviter = false;
  let resumedSinceOffer = false;
  client.on("welcome", (w) => {
    if (w.resumed) resumedSinceOffer = true;
  });
  const sendOffer = async (pc, callId, iceRestart = false) => {
    resumedSinceOffer = false;
    await pc.setLocalDescription(await pc.createOffer({ iceRestart }));
    outgoing("Offer");
    await client.offer(callId, pc.localDescription.sdp);
  };
  client.on("message", (msg) => {
    demo.frames.in += 1;
    log(msg.type === "Error" ? "err" : "", `← ${short(msg)}`);
    void onMessage(msg).catch((e) => log("err", `handling ${msg.type}: ${String(e)}`)).finally(render);
  });
  const onMessage = async (msg) => {
    switch (msg.type) {
      case "Invite":
        inviter = false;
        demo.invitesReceived += 1;
        demo.callId = msg.callId;
        demo.callState = "ringing";
        demo.connectedAt = 0;
        outgoing("InviteResult accepted");
        await client.accept(msg.callId);
        newPeerConnection(msg.callId);
        break;
      case "InviteResult":
        if (msg.callId !== demo.callId) break;
        if (!msg.accepted) {
          demo.callState = `rejected: ${msg.reason}`;
          break;
        }
        {
          const pc = newPeerConnection(msg.callId);
          wireChannel(pc.createDataChannel("chat"));
          await sendOffer(pc, msg.callId);
        }
        break;
      case "Offer": {
        const pc = demo.pc && demo.callId === msg.callId ? demo.pc : newPeerConnection(msg.callId);
        await pc.setRemoteDescription({ type: "offer", sdp: msg.sdp });
        for (const c of pendingRemote.splice(0)) await addRemote(c);
        await pc.setLocalDescription(await pc.createAnswer());
        outgoing("Answer");
        await client.answer(msg.callId, pc.localDescription.sdp);
        break;
      }
      case "Answer":
        if (!demo.pc) break;
        await demo.pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
        for (const c of pendingRemote.splice(0)) await addRemote(c);
        break;
      case "IceCandidate":
        await addRemote(msg);
        break;
      case "IceBatch":
        for (const c of msg.candidates) await addRemote(c);
        break;
      case "Hangup":
        if (msg.callId === demo.callId) {
          demo.callState = "ended";
          resetCall();
        }
        break;
      case "Event":
        if (msg.kind === 2 /* CallState */ && msg.callId === demo.callId) {
          demo.callState = msg.state;
          if (msg.state === "negotiating" && inviter && resumedSinceOffer && demo.pc) {
            await sendOffer(demo.pc, demo.callId, true);
          }
        }
        break;
      case "Error":
        demo.errors.push({ code: msg.code, requestId: msg.requestId, message: msg.message });
        log("err", `server error ${msg.code} (${errorLabel(msg.code)}): ${msg.message}`);
        break;
      default:
        break;
    }
  };
  async function invite() {
    resetCall();
    demo.connectedAt = 0;
    demo.inviteAt = Date.now();
    demo.callState = "inviting";
    inviter = true;
    outgoing(`Invite ${peer}`);
    demo.callId = await client.invite(room, peer);
    demo.calls += 1;
    render();
    return demo.callId;
  }
  function send(text) {
    const open = channels.filter((c) => c.readyState === "open");
    for (const c of open) c.send(`${user2}: ${text}`);
    log("info", `data channel → ${text} (${open.length} channel(s))`);
    return open.length > 0;
  }
  async function hangup() {
    if (!demo.callId) return;
    outgoing("Hangup");
    await client.hangup(demo.callId, "bye");
    demo.callState = "ended";
    resetCall();
    render();
  }
  async function renegotiate(label) {
    if (!demo.pc) throw new Error("no call");
    wireChannel(demo.pc.createDataChannel(label));
    await sendOffer(demo.pc, demo.callId);
  }
  async function injectInvalidOffer(sdp) {
    outgoing("Offer (invalid SDP, injected)");
    return client.offer(demo.callId, sdp);
  }
  $("invite").onclick = () => void invite();
  $("send").onclick = () => send("hello");
  $("hangup").onclick = () => void hangup();
  render();
  try {
    await client.connect();
    await client.join(room);
    demo.joined = true;
    log("info", `joined ${room}`);
  } catch (e) {
    log("err", `connect/join failed: ${e instanceof ClientError ? `${e.kind} ${e.message}` : String(e)}`);
  }
  render();
}
var user = params.get("user");
if (user && window.self !== window.top) document.querySelector("header")?.setAttribute("hidden", "");
if (user) void oneHost(user);
else twoPanes();
