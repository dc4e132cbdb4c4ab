// Key pairs and PKCS#10 certificate requests made in the browser (WebCrypto ECDSA P-256): the private key never
// leaves it, the server sees only the request.

import {ascii, bitString, contextConstructed, contextPrimitive, octetString, oid, pem, sequence, set,
        smallInteger, unsignedInteger, utf8String} from "./der.js";

const OID = {
  commonName: "2.5.4.3", organization: "2.5.4.10", extensionRequest: "1.2.840.113549.1.9.14",
  subjectAltName: "2.5.29.17", ecdsaWithSha256: "1.2.840.10045.4.3.2",
};
const ALGORITHM = {name: "ECDSA", namedCurve: "P-256"};

/** A new P-256 key pair; extractable so that the private key can be offered as a PKCS#8 file. */
export function generateKeyPair() {
  return crypto.subtle.generateKey(ALGORITHM, true, ["sign", "verify"]);
}

function name({commonName, organization}) {
  const rdn = (type, value) => set(sequence(oid(type), utf8String(value)));
  return sequence(...(organization ? [rdn(OID.organization, organization)] : []), rdn(OID.commonName, commonName));
}

function ipBytes(text) {
  const parts = text.split(".");
  if (parts.length !== 4 || parts.some(p => !/^\d{1,3}$/.test(p) || Number(p) > 255)) {
    throw new RangeError(`only IPv4 addresses are supported here: ${text}`);
  }
  return Uint8Array.from(parts.map(Number));
}

/** GeneralNames (RFC 5280 4.2.1.6): dNSName [2], rfc822Name [1], iPAddress [7]. */
function generalNames({dns = [], email = [], ip = []}) {
  return sequence(...email.map(e => contextPrimitive(1, ascii(e))),
                  ...dns.map(d => contextPrimitive(2, ascii(d))),
                  ...ip.map(a => contextPrimitive(7, ipBytes(a))));
}

function attributes(sans) {
  const any = ["dns", "email", "ip"].some(kind => (sans[kind] || []).length);
  if (!any) return contextConstructed(0);
  const extension = sequence(oid(OID.subjectAltName), octetString(generalNames(sans)));
  return contextConstructed(0, sequence(oid(OID.extensionRequest), set(sequence(extension))));
}

/** ECDSA's IEEE P1363 signature (r || s) as the DER Ecdsa-Sig-Value X.509 carries. */
function derSignature(raw) {
  const half = raw.length / 2;
  return sequence(unsignedInteger(raw.slice(0, half)), unsignedInteger(raw.slice(half)));
}

/** The DER of a PKCS#10 request for ``subject`` ({commonName, organization}) naming ``sans``, signed by the key. */
export async function certificationRequest(keyPair, subject, sans = {}) {
  const spki = new Uint8Array(await crypto.subtle.exportKey("spki", keyPair.publicKey));
  const info = sequence(smallInteger(0), name(subject), spki, attributes(sans));
  const raw = new Uint8Array(await crypto.subtle.sign({name: "ECDSA", hash: "SHA-256"}, keyPair.privateKey, info));
  return sequence(info, sequence(oid(OID.ecdsaWithSha256)), bitString(derSignature(raw)));
}

/** The request as PEM ("CERTIFICATE REQUEST") and the private key as unencrypted PKCS#8 PEM ("PRIVATE KEY"). */
export async function requestAndKey(subject, sans) {
  const keyPair = await generateKeyPair();
  const csr = pem("CERTIFICATE REQUEST", await certificationRequest(keyPair, subject, sans));
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", keyPair.privateKey));
  return {csr, privateKey: pem("PRIVATE KEY", pkcs8)};
}
