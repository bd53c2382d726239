// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320): the checksum of a frame's type byte
// and body, as the node computes it with `crc32fast`.

const TABLE: Uint32Array = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) {
      c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    }
    table[n] = c >>> 0;
  }
  return table;
})();

/** Continues a CRC-32 over `bytes` (start with `crc = 0`). */
export function crc32Update(crc: number, bytes: Uint8Array): number {
  let c = ~crc >>> 0;
  for (let i = 0; i < bytes.length; i++) {
    c = TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  }
  return ~c >>> 0;
}

/** CRC-32 of `bytes`. */
export function crc32(bytes: Uint8Array): number {
  return crc32Update(0, bytes);
}
