"""BLAKE2b (RFC 7693), unkeyed, 8-byte digest, compiled with Numba.

Idempotency keys are stored as 64-bit BLAKE2b digests (`encode.key_hash`).
Hashing them one by one through hashlib costs a Python call per key; here
the single-request lane (`json_commands`) hashes each key where it lies in
the request bodies, inside its compiled parse.  The value is bit for bit the one
`key_hash` gives, including its rule that a zero digest becomes 1 (0 means
'no key' in the engine).

The working vector and the chain value are scalar locals, so LLVM keeps them
in registers; only the message block lives in a caller-provided scratch
array, because the rounds index it through SIGMA and, with no reference
counting (`compiled.py`), a kernel may not make arrays of its own.  A
scratch array is per thread: the kernels that call this release the GIL.
"""

from __future__ import annotations

import numpy as np

from double11.engine.compiled import helper, inline

IV = np.array([
    0x6A09E667F3BCC908, 0xBB67AE8584CAA73B, 0x3C6EF372FE94F82B, 0xA54FF53A5F1D36F1,
    0x510E527FADE682D1, 0x9B05688C2B3E6C1F, 0x1F83D9ABFB41BD6B, 0x5BE0CD19137E2179,
], dtype=np.uint64)

# 12 rows, not 10 with `r % 10`: rounds 10 and 11 repeat rows 0 and 1
SIGMA = np.array([
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
    [11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4],
    [7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8],
    [9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13],
    [2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9],
    [12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11],
    [13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10],
    [6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5],
    [10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0],
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
], dtype=np.uint8)

# parameter block word 0: digest length 8, key length 0, fanout 1, depth 1
H0 = np.uint64(IV[0] ^ np.uint64(0x01010008))
BLOCK = 128
SCRATCH_WORDS = 16  # the message block m[0..15]

# typed shift amounts: uint64 shifted by a plain int would become float64
_R32, _R24, _R16, _R63 = np.uint64(32), np.uint64(24), np.uint64(16), np.uint64(63)
_L8, _L16, _L24, _L56 = np.uint64(8), np.uint64(16), np.uint64(24), np.uint64(56)
_L32, _L40, _L48, _L1 = np.uint64(32), np.uint64(40), np.uint64(48), np.uint64(1)
_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)


@inline
def _g(a, b, c, d, x, y):
    a = a + b + x
    d ^= a
    d = (d >> _R32) | (d << _L32)
    c = c + d
    b ^= c
    b = (b >> _R24) | (b << _L40)
    a = a + b + y
    d ^= a
    d = (d >> _R16) | (d << _L48)
    c = c + d
    b ^= c
    b = (b >> _R63) | (b << _L1)
    return a, b, c, d


@helper
def _compress(h0, h1, h2, h3, h4, h5, h6, h7, m, t, last):
    """The chain value after one block m[0..15]; t: bytes hashed so far,
    including this block (never past 2**64, so its high word stays 0)."""
    v0, v1, v2, v3, v4, v5, v6, v7 = h0, h1, h2, h3, h4, h5, h6, h7
    v8, v9, v10, v11 = IV[0], IV[1], IV[2], IV[3]
    v12, v13, v14, v15 = IV[4] ^ t, IV[5], IV[6], IV[7]
    if last:
        v14 ^= _ONES
    # a plain loop: unrolling the rounds (numba.literal_unroll) hashed faster
    # but made the first compile take minutes (docs/performance.md,
    # "Measurements behind the constants")
    for r in range(12):
        s = SIGMA[r]
        v0, v4, v8, v12 = _g(v0, v4, v8, v12, m[s[0]], m[s[1]])
        v1, v5, v9, v13 = _g(v1, v5, v9, v13, m[s[2]], m[s[3]])
        v2, v6, v10, v14 = _g(v2, v6, v10, v14, m[s[4]], m[s[5]])
        v3, v7, v11, v15 = _g(v3, v7, v11, v15, m[s[6]], m[s[7]])
        v0, v5, v10, v15 = _g(v0, v5, v10, v15, m[s[8]], m[s[9]])
        v1, v6, v11, v12 = _g(v1, v6, v11, v12, m[s[10]], m[s[11]])
        v2, v7, v8, v13 = _g(v2, v7, v8, v13, m[s[12]], m[s[13]])
        v3, v4, v9, v14 = _g(v3, v4, v9, v14, m[s[14]], m[s[15]])
    return (h0 ^ v0 ^ v8, h1 ^ v1 ^ v9, h2 ^ v2 ^ v10, h3 ^ v3 ^ v11,
            h4 ^ v4 ^ v12, h5 ^ v5 ^ v13, h6 ^ v6 ^ v14, h7 ^ v7 ^ v15)


@inline
def _load_block(buf, p, n, m):
    """m[0..15] <- the n (<= 128) bytes at buf[p:], little-endian words,
    zero-padded."""
    # whole words with fixed shifts; only the tail (< 8 bytes) goes by byte
    full = n >> 3
    for j in range(full):
        q = p + 8 * j
        m[j] = (np.uint64(buf[q]) | np.uint64(buf[q + 1]) << _L8 | np.uint64(buf[q + 2]) << _L16
                | np.uint64(buf[q + 3]) << _L24 | np.uint64(buf[q + 4]) << _L32 | np.uint64(buf[q + 5]) << _L40
                | np.uint64(buf[q + 6]) << _L48 | np.uint64(buf[q + 7]) << _L56)
    for j in range(full, 16):
        m[j] = np.uint64(0)
    for k in range(8 * full, n):
        m[full] |= np.uint64(buf[p + k]) << np.uint64((k & 7) * 8)


@inline
def _nonzero(x):
    # 0 is the engine's 'no key'; the same rule as `encode.key_hash`
    return x if x != np.uint64(0) else np.uint64(1)


@helper
def blake2b64(buf, start, end, scratch):
    """BLAKE2b-64 of the bytes buf[start:end] (uint8), as the little-endian
    uint64 of the digest, 0 mapped to 1.  scratch: uint64, >= 16 words."""
    h0, h1, h2, h3 = H0, IV[1], IV[2], IV[3]
    h4, h5, h6, h7 = IV[4], IV[5], IV[6], IV[7]
    p = np.int64(start)
    end = np.int64(end)
    # one compression site, not a loop plus a final call: the unrolled rounds
    # are ~15 KB of code, and a key is almost always one block.  The last
    # block may be partial, and is all padding for an empty message.
    while True:
        n = min(end - p, BLOCK)
        last = end - p <= BLOCK
        _load_block(buf, p, n, scratch)
        p += n
        h0, h1, h2, h3, h4, h5, h6, h7 = _compress(
            h0, h1, h2, h3, h4, h5, h6, h7, scratch, np.uint64(p - start), last)
        if last:
            break
    return _nonzero(h0)
