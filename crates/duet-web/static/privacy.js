// Private calls in the page, as in the app (docs/protocol.md, "Private
// rooms" and "Verification code"): a new room nobody can guess, and the short
// code two people compare to know that nobody sits in between.
//
// SHA-256 is written out here rather than taken from `crypto.subtle`, which
// browsers offer only on https and localhost: a page served by `duet serve`
// on a LAN address over plain http must show the same code.

/** Crockford's base 32, lower case: no i, l, o or u to misread. */
const ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz';

/** A room name of 80 random bits: 16 base-32 digits in four groups of four. */
export function newRoomName() {
  const bytes = crypto.getRandomValues(new Uint8Array(10));
  let value = 0n;
  for (const byte of bytes) value = (value << 8n) | BigInt(byte);
  const digits = [];
  for (let i = 0; i < 16; i += 1) {
    digits.unshift(ALPHABET[Number(value & 31n)]);
    value >>= 5n;
  }
  return [0, 4, 8, 12].map((at) => digits.slice(at, at + 4).join('')).join('-');
}

/** The 64 pictures of the code, with their names: the app's table, in its order. */
export const EMOJI = [
  ['🐶', 'dog'], ['🐱', 'cat'], ['🦁', 'lion'], ['🐎', 'horse'], ['🦄', 'unicorn'], ['🐷', 'pig'],
  ['🐘', 'elephant'], ['🐰', 'rabbit'], ['🐼', 'panda'], ['🐓', 'rooster'], ['🐧', 'penguin'],
  ['🐢', 'turtle'], ['🐟', 'fish'], ['🐙', 'octopus'], ['🦋', 'butterfly'], ['🌷', 'flower'],
  ['🌳', 'tree'], ['🌵', 'cactus'], ['🍄', 'mushroom'], ['🌏', 'globe'], ['🌙', 'moon'],
  ['☁️', 'cloud'], ['🔥', 'fire'], ['🍌', 'banana'], ['🍎', 'apple'], ['🍓', 'strawberry'],
  ['🌽', 'corn'], ['🍕', 'pizza'], ['🎂', 'cake'], ['❤️', 'heart'], ['😀', 'smiley'], ['🤖', 'robot'],
  ['🎩', 'hat'], ['👓', 'glasses'], ['🔧', 'spanner'], ['🎅', 'santa'], ['👍', 'thumbs up'],
  ['☂️', 'umbrella'], ['⌛', 'hourglass'], ['⏰', 'clock'], ['🎁', 'gift'], ['💡', 'light bulb'],
  ['📕', 'book'], ['✏️', 'pencil'], ['📎', 'paperclip'], ['✂️', 'scissors'], ['🔒', 'lock'],
  ['🔑', 'key'], ['🔨', 'hammer'], ['☎️', 'telephone'], ['🏁', 'flag'], ['🚂', 'train'],
  ['🚲', 'bicycle'], ['✈️', 'aeroplane'], ['🚀', 'rocket'], ['🏆', 'trophy'], ['⚽', 'ball'],
  ['🎸', 'guitar'], ['🎺', 'trumpet'], ['🔔', 'bell'], ['⚓', 'anchor'], ['🎧', 'headphones'],
  ['📁', 'folder'], ['📌', 'pin'],
];

/** The first `a=fingerprint:` of a description, trimmed and lower case. */
function fingerprint(sdp) {
  const line = (sdp || '').split(/\r?\n/).find((l) => l.trim().startsWith('a=fingerprint:'));
  const value = line ? line.trim().slice('a=fingerprint:'.length).trim().toLowerCase() : '';
  return value || null;
}

/**
 * The verification code of a connection from its two descriptions, in either
 * order: `{ text: '🐶 🚀 🍕 🔑 048 213', names: ['dog', …] }`, or null when one
 * has no fingerprint. Byte for byte the derivation of the app's
 * `VerificationCode`: SHA-256 over the two fingerprints sorted and joined by
 * a newline; pictures from the low 6 bits of bytes 0–3; digits from bytes
 * 4–7, big-endian, modulo 1,000,000.
 */
export function verificationCode(localSdp, remoteSdp) {
  const pair = [fingerprint(localSdp), fingerprint(remoteSdp)];
  if (pair.includes(null)) return null;
  pair.sort(); // ASCII only: code-unit order is byte order
  const digest = sha256(new TextEncoder().encode(pair.join('\n')));
  const pictures = [0, 1, 2, 3].map((i) => EMOJI[digest[i] & 63]);
  const number = ((digest[4] << 24) | (digest[5] << 16) | (digest[6] << 8) | digest[7]) >>> 0;
  const digits = String(number % 1000000).padStart(6, '0');
  return {
    text: `${pictures.map(([emoji]) => emoji).join(' ')} ${digits.slice(0, 3)} ${digits.slice(3)}`,
    names: pictures.map(([, name]) => name),
  };
}

const K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

/** SHA-256 (FIPS 180-4) of `bytes`, as 32 bytes. */
export function sha256(bytes) {
  const length = bytes.length;
  const blocks = Math.ceil((length + 9) / 64);
  const data = new Uint8Array(blocks * 64);
  data.set(bytes);
  data[length] = 0x80;
  const view = new DataView(data.buffer);
  view.setUint32(data.length - 8, Math.floor(length / 0x20000000));
  view.setUint32(data.length - 4, (length * 8) >>> 0);
  const h = new Uint32Array([
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
  ]);
  const w = new Uint32Array(64);
  const rotr = (x, n) => (x >>> n) | (x << (32 - n));
  for (let block = 0; block < blocks; block += 1) {
    for (let i = 0; i < 16; i += 1) w[i] = view.getUint32(block * 64 + i * 4);
    for (let i = 16; i < 64; i += 1) {
      const s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >>> 3);
      const s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >>> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    let [a, b, c, d, e, f, g, hh] = h;
    for (let i = 0; i < 64; i += 1) {
      const t1 = (hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i]) >>> 0;
      const t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) >>> 0;
      hh = g; g = f; f = e; e = (d + t1) >>> 0; d = c; c = b; b = a; a = (t1 + t2) >>> 0;
    }
    [a, b, c, d, e, f, g, hh].forEach((v, i) => { h[i] += v; });
  }
  const out = new Uint8Array(32);
  const outView = new DataView(out.buffer);
  h.forEach((v, i) => outView.setUint32(i * 4, v));
  return out;
}
