// A small DER encoder (ITU-T X.690), enough for PKCS#10 requests, and PEM armour.

const utf8 = new TextEncoder();

function concat(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

function length(n) {
  if (n < 0x80) return Uint8Array.of(n);
  const bytes = [];
  for (let rest = n; rest > 0; rest = Math.floor(rest / 256)) bytes.unshift(rest & 0xff);
  return Uint8Array.of(0x80 | bytes.length, ...bytes);
}

/** A TLV: ``tag`` (one octet) around the concatenated ``parts``. */
export function tlv(tag, ...parts) {
  const body = concat(parts);
  return concat([Uint8Array.of(tag), length(body.length), body]);
}

export const sequence = (...items) => tlv(0x30, ...items);
export const set = (...items) => tlv(0x31, ...sortedForSet(items));
export const utf8String = text => tlv(0x0c, utf8.encode(text));
export const ia5String = text => tlv(0x16, ascii(text));
export const octetString = bytes => tlv(0x04, bytes);
export const bitString = bytes => tlv(0x03, Uint8Array.of(0), bytes);  // no unused bits
export const contextConstructed = (n, ...items) => tlv(0xa0 | n, ...items);
export const contextPrimitive = (n, bytes) => tlv(0x80 | n, bytes);

/** IA5 (ASCII) text as bytes; anything else is refused. */
export function ascii(text) {
  if (!/^[\x00-\x7f]*$/.test(text)) throw new RangeError(`not IA5 (ASCII) text: ${text}`);
  return utf8.encode(text);
}

// DER sorts the encodings of a SET OF's members (X.690 11.6).
function sortedForSet(items) {
  return [...items].sort((a, b) => {
    for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i] - b[i];
    return a.length - b.length;
  });
}

/** A non-negative INTEGER from big-endian magnitude bytes (minimal, with a 0 octet when the top bit is set). */
export function unsignedInteger(bytes) {
  let start = 0;
  while (start < bytes.length - 1 && bytes[start] === 0) start++;
  const body = bytes.slice(start);
  return tlv(0x02, body[0] & 0x80 ? concat([Uint8Array.of(0), body]) : body);
}

export const smallInteger = n => unsignedInteger(Uint8Array.of(n));

/** An OBJECT IDENTIFIER from dotted text ("2.5.4.3"). */
export function oid(dotted) {
  const arcs = dotted.split(".").map(Number);
  const out = [40 * arcs[0] + arcs[1]];
  for (const arc of arcs.slice(2)) {
    const groups = [arc & 0x7f];
    for (let rest = Math.floor(arc / 128); rest > 0; rest = Math.floor(rest / 128)) groups.unshift(0x80 | (rest & 0x7f));
    out.push(...groups);
  }
  return tlv(0x06, Uint8Array.from(out));
}

/** PEM armour (RFC 7468): base64 in 64-character lines. */
export function pem(label, bytes) {
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  const lines = btoa(binary).match(/.{1,64}/g) || [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}
