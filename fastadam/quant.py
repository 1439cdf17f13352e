"""8-bit block-wise optimizer states: bitsandbytes' dynamic quantization, in NumPy.

An 8-bit state (``state_bits=8``) keeps, for an array of n elements, n uint8 *codes*, one
float32 *absmax* per block of ``BLOCK`` = 256 elements, and a 256-entry *map* (``qmap``):
element i stands for ``qmap[codes[i]] * absmax[i // 256]``. This is the block-wise scheme of
Dettmers et al., "8-bit Optimizers via Block-wise Quantization" (ICLR 2022), with
bitsandbytes' two dynamic maps: ``SIGNED_MAP`` for states of either sign, ``UNSIGNED_MAP`` for
non-negative second moments (Adam's ``exp_avg_sq``).

Quantizing a block (what the kernels do after each step, in the same pass):

- ``absmax`` is the largest magnitude in the block (a NaN anywhere makes it NaN);
- a block whose absmax is 0 gets code 0 everywhere (as bitsandbytes), and so does a block
  whose absmax is NaN (each of its elements dequantizes to NaN whatever its code);
- otherwise each element ``x`` becomes ``y = x * (1 / absmax)`` (float32, as bitsandbytes)
  and takes the nearest code: between neighbours ``qmap[k] < y <= qmap[k+1]`` it takes k+1
  when ``qmap[k+1] - y < y - qmap[k]`` in float32, else k (a tie goes to the lower code:
  bitsandbytes' nearest-code search). ``y`` beyond the map takes the end code; a NaN ``y``
  (an infinite value times 0, in a block whose absmax is infinite) takes the code of 0.

The kernels find the code without a search: each map has a table over the float bits of
``|y|`` (``bucket_table``), where every bucket holds at most one switch to the next code;
this module builds it and checks that property, so a map is accepted only if the table is
exact for it. ``quantize``/``dequantize`` here are the plain NumPy statement of the same
rule, used by fastadam.reference and the tests.
"""

from typing import NamedTuple

import numpy as np

from fastadam._registry import STATE8_BLOCK

__all__ = ["QuantizedState", "dynamic_map", "quantize", "dequantize", "nearest_code",
           "thresholds", "nblocks", "block_absmax", "bucket_table", "table_code",
           "level_tables", "level_code", "kernel_words"]

BLOCK = STATE8_BLOCK    # elements per block: one absmax each (the registry's)
CODES = 256         # entries of a map

# bitsandbytes.functional.create_dynamic_map(signed=True) and (signed=False), as float32
# bits (bitsandbytes 0.50 with torch 2.13 on x86-64 with AVX2 or AVX-512; torch's scalar
# path rounds a few entries of its linspace differently). Sorted, 0 and 1.0 included.
_SIGNED_BITS = (
    0xbf7e3333, 0xbf7a999a, 0xbf770000, 0xbf736666, 0xbf6fcccd, 0xbf6c3333, 0xbf68999a, 0xbf650000,
    0xbf616666, 0xbf5dcccd, 0xbf5a3333, 0xbf56999a, 0xbf530000, 0xbf4f6666, 0xbf4bcccd, 0xbf483333,
    0xbf44999a, 0xbf410000, 0xbf3d6666, 0xbf39cccd, 0xbf363334, 0xbf32999a, 0xbf2f0000, 0xbf2b6666,
    0xbf27cccd, 0xbf243334, 0xbf20999a, 0xbf1d0000, 0xbf196666, 0xbf15cccd, 0xbf123334, 0xbf0e999a,
    0xbf0b0000, 0xbf076666, 0xbf03cccc, 0xbf003333, 0xbef93332, 0xbef20000, 0xbeeacccc, 0xbee3999a,
    0xbedc6666, 0xbed53333, 0xbece0000, 0xbec6cccc, 0xbebf999a, 0xbeb86666, 0xbeb13333, 0xbeaa0000,
    0xbea2cccc, 0xbe9b999a, 0xbe946666, 0xbe8d3334, 0xbe860000, 0xbe7d9999, 0xbe6f3333, 0xbe60cccd,
    0xbe526666, 0xbe440000, 0xbe35999a, 0xbe273333, 0xbe18cccd, 0xbe0a6666, 0xbdf80000, 0xbddb3334,
    0xbdc9eb85, 0xbdc428f7, 0xbdbe6667, 0xbdb8a3d7, 0xbdb2e148, 0xbdad1eb8, 0xbda75c2a, 0xbda1999a,
    0xbd9bd70a, 0xbd96147b, 0xbd9051eb, 0xbd8a8f5d, 0xbd84cccd, 0xbd7e147b, 0xbd728f5d, 0xbd670a3d,
    0xbd5b851f, 0xbd500000, 0xbd447ae1, 0xbd38f5c3, 0xbd2d70a3, 0xbd21eb85, 0xbd166667, 0xbd0ae148,
    0xbcfeb852, 0xbce7ae15, 0xbcd0a3d7, 0xbcb9999a, 0xbca28f5d, 0xbc8b851f, 0xbc68f5c3, 0xbc3ae148,
    0xbc1f3b64, 0xbc160418, 0xbc0ccccd, 0xbc039581, 0xbbf4bc6a, 0xbbe24dd3, 0xbbcfdf3b, 0xbbbd70a4,
    0xbbab020d, 0xbb989374, 0xbb8624dd, 0xbb676c8a, 0xbb428f5c, 0xbb1db22d, 0xbaf1a9fc, 0xbaa7ef9d,
    0xba7765ff, 0xba59e83e, 0xba3c6a80, 0xba1eecc1, 0xba016f01, 0xb9c7e283, 0xb98ce705, 0xb923d70b,
    0xb8ba1f4b, 0xb88aefb3, 0xb8378034, 0xb7b24206, 0xb70205ff, 0xb65a1a94, 0xb513a3b7, 0x00000000,
    0x3513a3b7, 0x365a1a94, 0x370205ff, 0x37b24206, 0x38378034, 0x388aefb3, 0x38ba1f4b, 0x3923d70b,
    0x398ce705, 0x39c7e283, 0x3a016f01, 0x3a1eecc1, 0x3a3c6a80, 0x3a59e83e, 0x3a7765ff, 0x3aa7ef9d,
    0x3af1a9fc, 0x3b1db22d, 0x3b428f5c, 0x3b676c8a, 0x3b8624dd, 0x3b989374, 0x3bab020d, 0x3bbd70a4,
    0x3bcfdf3b, 0x3be24dd3, 0x3bf4bc6a, 0x3c039581, 0x3c0ccccd, 0x3c160418, 0x3c1f3b64, 0x3c3ae148,
    0x3c68f5c3, 0x3c8b851f, 0x3ca28f5d, 0x3cb9999a, 0x3cd0a3d7, 0x3ce7ae15, 0x3cfeb852, 0x3d0ae148,
    0x3d166667, 0x3d21eb85, 0x3d2d70a3, 0x3d38f5c3, 0x3d447ae1, 0x3d500000, 0x3d5b851f, 0x3d670a3d,
    0x3d728f5d, 0x3d7e147b, 0x3d84cccd, 0x3d8a8f5d, 0x3d9051eb, 0x3d96147b, 0x3d9bd70a, 0x3da1999a,
    0x3da75c2a, 0x3dad1eb8, 0x3db2e148, 0x3db8a3d7, 0x3dbe6667, 0x3dc428f7, 0x3dc9eb85, 0x3ddb3334,
    0x3df80000, 0x3e0a6666, 0x3e18cccd, 0x3e273333, 0x3e35999a, 0x3e440000, 0x3e526666, 0x3e60cccd,
    0x3e6f3333, 0x3e7d9999, 0x3e860000, 0x3e8d3334, 0x3e946666, 0x3e9b999a, 0x3ea2cccc, 0x3eaa0000,
    0x3eb13333, 0x3eb86666, 0x3ebf999a, 0x3ec6cccc, 0x3ece0000, 0x3ed53333, 0x3edc6666, 0x3ee3999a,
    0x3eeacccc, 0x3ef20000, 0x3ef93332, 0x3f003333, 0x3f03cccc, 0x3f076666, 0x3f0b0000, 0x3f0e999a,
    0x3f123334, 0x3f15cccd, 0x3f196666, 0x3f1d0000, 0x3f20999a, 0x3f243334, 0x3f27cccd, 0x3f2b6666,
    0x3f2f0000, 0x3f32999a, 0x3f363334, 0x3f39cccd, 0x3f3d6666, 0x3f410000, 0x3f44999a, 0x3f483333,
    0x3f4bcccd, 0x3f4f6666, 0x3f530000, 0x3f56999a, 0x3f5a3333, 0x3f5dcccd, 0x3f616666, 0x3f650000,
    0x3f68999a, 0x3f6c3333, 0x3f6fcccd, 0x3f736666, 0x3f770000, 0x3f7a999a, 0x3f7e3333, 0x3f800000,
)

_UNSIGNED_BITS = (
    0x00000000, 0x34ae7baa, 0x35500998, 0x360e9b38, 0x3692ccf6, 0x36de4c51, 0x3714e5d5, 0x3783126e,
    0x37e171a0, 0x381fe868, 0x384f1800, 0x387e479a, 0x3896bb99, 0x38ae5364, 0x38c5eb31, 0x3906594b,
    0x394154ca, 0x397c5049, 0x399ba5e4, 0x39b923a2, 0x39d6a163, 0x39f41f22, 0x3a08ce71, 0x3a178d50,
    0x3a264c30, 0x3a350b10, 0x3a43c9ef, 0x3a5288d0, 0x3a6147af, 0x3a70068e, 0x3a7ec56e, 0x3a958106,
    0x3aba5e35, 0x3adf3b64, 0x3b020c4a, 0x3b147ae1, 0x3b26e978, 0x3b395810, 0x3b4bc6a7, 0x3b5e3540,
    0x3b70a3d7, 0x3b818937, 0x3b8ac082, 0x3b93f7cf, 0x3b9d2f1a, 0x3ba66666, 0x3baf9db2, 0x3bb8d4fd,
    0x3bc20c4a, 0x3bcb4395, 0x3bd47ae1, 0x3bddb22e, 0x3be6e978, 0x3bf020c5, 0x3bf9580f, 0x3c0147ae,
    0x3c05e354, 0x3c0a7ef9, 0x3c0f1aa0, 0x3c13b645, 0x3c1851eb, 0x3c1ced92, 0x3c218937, 0x3c2f5c2a,
    0x3c466667, 0x3c5d70a3, 0x3c747ae2, 0x3c85c28f, 0x3c9147af, 0x3c9ccccd, 0x3ca851eb, 0x3cb3d70b,
    0x3cbf5c29, 0x3ccae147, 0x3cd66667, 0x3ce1eb87, 0x3ced70a3, 0x3cf8f5c3, 0x3d023d70, 0x3d080000,
    0x3d0dc28f, 0x3d13851f, 0x3d1947af, 0x3d1f0a3d, 0x3d24cccd, 0x3d2a8f5c, 0x3d3051eb, 0x3d36147b,
    0x3d3bd70a, 0x3d41999a, 0x3d475c28, 0x3d4d1eb8, 0x3d52e147, 0x3d58a3d7, 0x3d5e6667, 0x3d6428f7,
    0x3d69eb87, 0x3d6fae15, 0x3d7570a3, 0x3d7b3333, 0x3d807ae2, 0x3d835c2a, 0x3d863d71, 0x3d891eb8,
    0x3d8c0000, 0x3d8ee148, 0x3d91c290, 0x3d94a3d7, 0x3d97851f, 0x3d9a6667, 0x3d9d47af, 0x3da028f6,
    0x3da30a3e, 0x3da5eb85, 0x3da8cccd, 0x3dabae15, 0x3dae8f5c, 0x3db170a4, 0x3db451eb, 0x3db73333,
    0x3dba147b, 0x3dbcf5c3, 0x3dbfd70b, 0x3dc2b852, 0x3dc5999a, 0x3dc87ae2, 0x3dcb5c29, 0x3dd40000,
    0x3de26666, 0x3df0cccd, 0x3dff3333, 0x3e06cccc, 0x3e0e0000, 0x3e153334, 0x3e1c6666, 0x3e23999a,
    0x3e2acccc, 0x3e320000, 0x3e393334, 0x3e406666, 0x3e47999a, 0x3e4ecccc, 0x3e560000, 0x3e5d3334,
    0x3e646666, 0x3e6b999a, 0x3e72cccc, 0x3e7a0000, 0x3e809999, 0x3e843333, 0x3e87cccd, 0x3e8b6666,
    0x3e8f0000, 0x3e92999a, 0x3e963333, 0x3e99cccc, 0x3e9d6666, 0x3ea10000, 0x3ea4999a, 0x3ea83333,
    0x3eabcccc, 0x3eaf6666, 0x3eb30000, 0x3eb6999a, 0x3eba3333, 0x3ebdcccc, 0x3ec16666, 0x3ec50000,
    0x3ec8999a, 0x3ecc3333, 0x3ecfcccc, 0x3ed36666, 0x3ed70000, 0x3eda999a, 0x3ede3333, 0x3ee1cccc,
    0x3ee56666, 0x3ee90000, 0x3eec999a, 0x3ef03333, 0x3ef3cccc, 0x3ef76666, 0x3efb0000, 0x3efe9999,
    0x3f01199a, 0x3f02e666, 0x3f04b333, 0x3f068000, 0x3f084ccc, 0x3f0a199a, 0x3f0be666, 0x3f0db334,
    0x3f0f8000, 0x3f114ccd, 0x3f13199a, 0x3f14e666, 0x3f16b334, 0x3f188000, 0x3f1a4ccd, 0x3f1c199a,
    0x3f1de666, 0x3f1fb334, 0x3f218000, 0x3f234ccd, 0x3f25199a, 0x3f26e666, 0x3f28b334, 0x3f2a8000,
    0x3f2c4ccd, 0x3f2e199a, 0x3f2fe666, 0x3f31b334, 0x3f338000, 0x3f354ccd, 0x3f37199a, 0x3f38e666,
    0x3f3ab334, 0x3f3c8000, 0x3f3e4ccd, 0x3f40199a, 0x3f41e666, 0x3f43b334, 0x3f458000, 0x3f474ccc,
    0x3f49199a, 0x3f4ae666, 0x3f4cb334, 0x3f4e8000, 0x3f504ccc, 0x3f52199a, 0x3f53e666, 0x3f55b334,
    0x3f578000, 0x3f594ccc, 0x3f5b199a, 0x3f5ce666, 0x3f5eb334, 0x3f608000, 0x3f624ccc, 0x3f64199a,
    0x3f65e666, 0x3f67b334, 0x3f698000, 0x3f6b4ccc, 0x3f6d199a, 0x3f6ee666, 0x3f70b334, 0x3f728000,
    0x3f744ccc, 0x3f76199a, 0x3f77e666, 0x3f79b334, 0x3f7b8000, 0x3f7d4ccc, 0x3f7f199a, 0x3f800000,
)


SIGNED_MAP = np.array(_SIGNED_BITS, dtype=np.uint32).view(np.float32)
UNSIGNED_MAP = np.array(_UNSIGNED_BITS, dtype=np.uint32).view(np.float32)
SIGNED_MAP.flags.writeable = False
UNSIGNED_MAP.flags.writeable = False


def dynamic_map(signed=True):
    """A writable copy of bitsandbytes' signed or unsigned dynamic map."""
    return (SIGNED_MAP if signed else UNSIGNED_MAP).copy()


# ---------------------------------------------------------------------------- nearest code

_SIGN = np.uint32(0x80000000)


def _ordered(x):
    """float32 -> uint32 keys in the floats' order (-0 just below +0)."""
    b = np.asarray(x, dtype=np.float32).view(np.uint32)
    return np.where(b & _SIGN, ~b, b | _SIGN).astype(np.uint32)


def _from_ordered(k):
    k = np.asarray(k, dtype=np.uint32)
    return np.where(k & _SIGN, k & ~_SIGN, ~k).astype(np.uint32).view(np.float32)


def _check_map(qmap, name="qmap"):
    q = np.asarray(qmap)
    if q.dtype != np.float32 or q.shape != (CODES,):
        raise TypeError(f"Invalid {name}: expected a float32 array of shape ({CODES},), got "
                        f"{q.dtype} {q.shape}")
    if not np.all(np.abs(q) <= 1) or not np.all(q[1:] > q[:-1]):
        raise ValueError(f"Invalid {name}: a map must be strictly increasing, within [-1, 1]")
    return q


_MISS = object()


def _cached(cache, qmap, build):
    """``build(map)`` for each distinct map, once (cached by its bits): a map seen before
    costs a dict lookup, the checks run on the first sight of it (the kernels' validation
    asks for every 8-bit state of every call)."""
    q = np.asarray(qmap)
    if q.dtype == np.float32 and q.shape == (CODES,):
        hit = cache.get(q.tobytes(), _MISS)
        if hit is not _MISS:
            return hit
    q = _check_map(q)
    return cache.setdefault(q.tobytes(), build(q))


def thresholds(qmap):
    """The 255 switch points of the nearest-code rule: ``u[k]`` is the least float32 ``y``
    in ``(qmap[k], qmap[k+1]]`` that takes code k+1, so the code of ``y`` is the number of
    ``u`` at or below it."""
    q = _check_map(qmap)
    lo, hi = q[:-1], q[1:]
    a = _ordered(lo)            # largest key known to take k (exclusive lower bound)
    b = _ordered(hi)            # smallest key known to take k+1
    while np.any(b - a > 1):
        mid = (a + (b - a) // 2).astype(np.uint32)
        y = _from_ordered(mid)
        up = (hi - y) < (y - lo)
        b = np.where(up, mid, b)
        a = np.where(up, a, mid)
    return _from_ordered(b)


def nearest_code(y, qmap):
    """The code of each float32 ``y`` (already divided by its block's absmax)."""
    y = np.asarray(y, dtype=np.float32)
    u = thresholds(qmap)
    code = np.searchsorted(u, np.where(np.isnan(y), np.float32(0.0), y), side="right")
    return code.astype(np.uint8)


# ---------------------------------------------------------------------------- the kernels' table
# Buckets over the bits of |y|: 2**-23 <= |y| <= 1 in steps of 1/256 of a binade (15 low bits
# per bucket), and everything below 2**-23 in bucket 0; the table has the positive buckets
# then the negative ones. Entry: bits 0-7 the code at the bucket's start, 8-15 the code
# from bits 16-30 (the low 15 bits of |y| where it switches; 0: no switch) on.

BUCKET_SHIFT = 15
BUCKET_LO = (127 - 23) << 8                 # |y| = 2**-23
BUCKET_HI = 0x3F800000 >> BUCKET_SHIFT      # |y| = 1.0 (and the clamped NaN/large)
NBUCKETS = BUCKET_HI - BUCKET_LO + 1

_tables = {}


def bucket_table(qmap):
    """``(map, table)`` for a map: a read-only copy of it and its uint32 bucket table
    (2 * NBUCKETS entries), cached by the map's bits. ValueError if the table cannot be exact
    for this map (two switches in one bucket, or one below 2**-23)."""
    return _cached(_tables, qmap, _build_bucket_table)


def _build_bucket_table(q):
    u = thresholds(q)
    ub = u.view(np.uint32)
    table = np.empty(2 * NBUCKETS, dtype=np.uint32)
    starts = ((np.arange(NBUCKETS, dtype=np.uint32) + np.uint32(BUCKET_LO))
              << np.uint32(BUCKET_SHIFT))
    for side, sign in enumerate((np.uint32(0), _SIGN)):
        pos = (ub & _SIGN) == 0
        if side:
            # |y| grows as y falls: code k+1 holds while y >= u[k], i.e. |y| <= |u[k]|;
            # the switch to k is at the next magnitude.
            switch = (ub[~pos] & ~_SIGN) + np.uint32(1)
        else:
            switch = ub[pos]
        bucket = (switch >> np.uint32(BUCKET_SHIFT)).astype(np.int64) - BUCKET_LO
        if np.any(bucket < 1):
            raise ValueError("Invalid qmap: its codes are too close to 0 for the kernels' "
                             "table (a switch between codes below 2**-22)")
        if len(np.unique(bucket)) != len(bucket):
            raise ValueError("Invalid qmap: two of its codes are closer than the kernels' "
                             "table resolves (1/256 of a binade)")
        code0 = nearest_code((starts | sign).view(np.float32), q).astype(np.uint32)
        code1 = code0.copy()
        thr = np.zeros(NBUCKETS, dtype=np.uint32)
        code1[bucket] = nearest_code((switch | sign).view(np.float32), q)
        thr[bucket] = switch & np.uint32((1 << BUCKET_SHIFT) - 1)
        table[side * NBUCKETS:(side + 1) * NBUCKETS] = (thr << np.uint32(16)) | (
            code1 << np.uint32(8)) | code0
    table.flags.writeable = False
    m = q.copy()
    m.flags.writeable = False
    return m, table


def table_code(y, qmap):
    """The kernels' lookup, in NumPy: the code of float32 ``y`` through the bucket table
    (equal to :func:`nearest_code`; the tests check it over every bucket)."""
    _, table = bucket_table(qmap)
    b = np.asarray(y, dtype=np.float32).view(np.uint32)
    b = np.where((b & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000), np.uint32(0), b)
    m = b & np.uint32(0x7FFFFFFF)
    j = np.clip((m >> np.uint32(BUCKET_SHIFT)).astype(np.int64) - BUCKET_LO, 0, NBUCKETS - 1)
    e = table[j + np.where(b & _SIGN, NBUCKETS, 0)]
    hi = (m & np.uint32((1 << BUCKET_SHIFT) - 1)) >= (e >> np.uint32(16))
    return np.where(hi, (e >> np.uint32(8)) & np.uint32(0xFF), e & np.uint32(0xFF)).astype(
        np.uint8)


# ---------------------------------------------------------------------------- blocks

def nblocks(n):
    """The number of absmax values of an n-element state."""
    return -(-int(n) // BLOCK)


def block_absmax(x):
    """Each block's largest magnitude, float32 (the largest magnitude bits: a NaN wins)."""
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    n = x.size
    pad = np.zeros(nblocks(n) * BLOCK, dtype=np.uint32)
    pad[:n] = x.view(np.uint32) & np.uint32(0x7FFFFFFF)
    return pad.reshape(-1, BLOCK).max(axis=1).view(np.float32) if n else \
        np.zeros(0, np.float32)


def quantize(x, qmap):
    """``(codes, absmax)`` of float32 ``x`` (any shape; codes take its shape)."""
    x = np.asarray(x, dtype=np.float32)
    flat = x.reshape(-1)
    absmax = block_absmax(flat)
    scale = np.repeat(absmax, BLOCK)[:flat.size]
    with np.errstate(divide="ignore", invalid="ignore"):
        y = flat * (np.float32(1.0) / scale)
    codes = np.where((scale == 0) | np.isnan(scale), np.uint8(0), nearest_code(y, qmap))
    return codes.astype(np.uint8).reshape(x.shape), absmax


def dequantize(codes, absmax, qmap):
    """float32 values of 8-bit codes: ``qmap[codes] * absmax`` per block."""
    codes = np.asarray(codes)
    flat = codes.reshape(-1)
    scale = np.repeat(np.asarray(absmax, np.float32), BLOCK)[:flat.size]
    return (np.asarray(qmap, np.float32)[flat] * scale).reshape(codes.shape)


class QuantizedState(NamedTuple):
    """An 8-bit state as the kernels take it in place of a state array: ``codes`` (uint8, the
    param's shape), ``absmax`` (float32, one per 256-element block), ``qmap`` (float32, 256
    entries: ``SIGNED_MAP`` or ``UNSIGNED_MAP``, or another map :func:`bucket_table`
    accepts). The kernels update codes and absmax in place."""
    codes: np.ndarray
    absmax: np.ndarray
    qmap: np.ndarray

    @classmethod
    def zeros(cls, shape, signed=True):
        """A state of zeros (code 0 with absmax 0: what bitsandbytes starts from)."""
        codes = np.zeros(shape, dtype=np.uint8)
        return cls(codes, np.zeros(nblocks(codes.size), np.float32), dynamic_map(signed))

    @classmethod
    def from_float(cls, x, signed=True):
        """``x`` quantized."""
        qmap = dynamic_map(signed)
        codes, absmax = quantize(x, qmap)
        return cls(codes, absmax, qmap)

    def dequantize(self):
        return dequantize(self.codes, self.absmax, self.qmap)

    @property
    def nbytes(self):
        return self.codes.nbytes + self.absmax.nbytes + self.qmap.nbytes

    def copy(self):
        return QuantizedState(self.codes.copy(), self.absmax.copy(), self.qmap.copy())



# ---------------------------------------------------------------------------- arithmetic codes
# The AVX-512 kernels find most codes without a table load. A dynamic map's codes are evenly
# spaced within each decade ("level"); so for |y| within a level, the code on the positive
# side is ``base + round(t)`` with ``t = (|y| - a) * invd`` (float32, clamped to the level's
# codes: the switches are at t = 1/2, 3/2, ...), the level coming from the binade of |y|
# (at most one level boundary per binade).
# The negative side mirrors it: ``max(mirror - code, 0)`` (bitsandbytes' signed map:
# mirror 254, its negative codes being the positive ones negated, the switches the same or
# one float below; the unsigned map: mirror 0, every negative y takes code 0). ``t`` lands
# within ``delta`` of a half-integer only near a switch between codes: those lanes, a
# negative lane one float below a level boundary, and NaN take the bucket table's exact
# code, so every code equals nearest_code. ``level_tables`` derives all of this from a map
# and checks it at every switch; a map without that structure gets None (the kernels then
# take every code from the bucket table).

LEVEL_E0 = 103          # binade 0: |y| < 2**-23 (exponent field 104 is binade 1)
LEVEL_NB = 32           # binades 0..31: 2**-24 .. beyond 1.0 (clamped)
LEVEL_MAX = 16          # levels (the zero code, the decades, the top code)

_level_cache = {}


def _side_switches(q, u, side):
    """The magnitudes at which the code changes, walking away from 0 on one side, and the
    code at each position (position 0: the code nearest 0)."""
    ub = u.view(np.uint32)
    zero = int(nearest_code(np.float32(0.0), q))
    if side == 0:
        idx = np.arange(zero, CODES - 1)                # switch from idx to idx + 1
        mags = ub[idx]
        codes = np.arange(zero, CODES)
    else:
        idx = np.arange(zero - 1, -1, -1)               # switch from idx + 1 to idx
        mags = (ub[idx] & np.uint32(0x7FFFFFFF)) + np.uint32(1)
        codes = np.arange(zero, -1, -1)
    keep = (ub[idx] & _SIGN) == (0 if side == 0 else _SIGN)
    if not np.all(keep):
        mags, codes = mags[:0], codes[:1]       # (an unsigned map's negative side)
    return mags.view(np.float32), codes


def level_tables(qmap):
    """The arithmetic-code tables of a map (see above) as a dict of arrays, or None if the
    map has no level structure the kernels can use. Cached by the map's bits."""
    return _cached(_level_cache, qmap, _build_level_tables)


def _build_level_tables(q):
    u = thresholds(q)
    f32 = np.float32
    mags, codes = _side_switches(q, u, 0)
    nmags, ncodes = _side_switches(q, u, 1)
    mirror = int(codes[0] + ncodes[0])
    # the negative side must be the mirror: codes mirror - code, switches at the same
    # magnitude or one float below (a tie goes to the lower code on both sides)
    k = len(nmags)
    d = mags[:k].view(np.uint32).astype(np.int64) - nmags.view(np.uint32).astype(np.int64)
    if (len(ncodes) > 1 and (k > len(mags) or not np.all((d == 0) | (d == 1))
                             or not np.array_equal(ncodes, mirror - codes[:len(ncodes)]))) \
            or (len(ncodes) == 1 and ncodes[0] != 0):
        return None
    if len(ncodes) == 1:
        mirror = 0
    values = q[codes].astype(np.float64)
    decade = np.floor(np.log10(np.maximum(values[1:], 1e-38)) + 1e-6)
    starts = [0] + [1 + i for i in range(len(decade)) if i == 0 or decade[i] != decade[i - 1]]
    if len(starts) > LEVEL_MAX:
        return None
    ends = starts[1:] + [len(codes)]
    a = np.zeros(LEVEL_MAX, f32)
    invd = np.zeros(LEVEL_MAX, f32)
    base = np.zeros(LEVEL_MAX, f32)
    cnt1 = np.zeros(LEVEL_MAX, f32)
    worst = 0.0
    for lev, (s, e) in enumerate(zip(starts, ends)):
        # (a level of one code: t = 0, and cnt1 = 1 keeps the flag test simple)
        base[lev], cnt1[lev] = codes[s], max(e - 1 - s, 1)
        if e - 1 > s:
            inner = mags[s:e - 1]                      # the switches to offsets 1..cnt1
            j = np.arange(1, e - s, dtype=np.float64)
            x = inner.astype(np.float64)
            # the line through the first and last switch (one switch: the codes' step)
            slope = (j[-1] - 1) / (x[-1] - x[0]) if len(x) > 1 else \
                1 / (values[s + 1] - values[s])
            a[lev], invd[lev] = f32(x[0] - 0.5 / slope), f32(slope)
            below = (inner.view(np.uint32) - np.uint32(1)).view(f32)
            for m in (inner, below, (below.view(np.uint32) - np.uint32(1)).view(f32)):
                t = (m - a[lev]) * invd[lev]                # float32, as the kernels
                worst = max(worst, float(np.max(np.abs(t.astype(np.float64) - (j - 0.5)))))
    # binades: the level at each one's start, and the one level entry inside it
    entry = np.array([0.0] + [mags[s - 1] for s in starts[1:]], f32).view(np.uint32)
    edges = (np.arange(LEVEL_NB, dtype=np.uint32) + np.uint32(LEVEL_E0)) << np.uint32(23)
    edges[0] = 0
    llo = np.zeros(LEVEL_NB, np.int32)
    bnd = np.full(LEVEL_NB, np.inf, f32)
    for b in range(LEVEL_NB):
        lo = edges[b]
        hi = edges[b + 1] if b + 1 < LEVEL_NB else np.uint32(0x7F800000)
        llo[b] = int(np.searchsorted(entry, lo, side="right")) - 1
        inside = entry[(entry > lo) & (entry < hi)]
        if len(inside) > 1 or (b == 0 and len(inside)):
            return None
        if len(inside):
            bnd[b] = inside.view(f32)[0]
    delta = f32(worst + 1e-4)
    out = None
    if delta < 0.25:
        # a lane at least ``bound`` from a whole t is within delta of a switch
        out = dict(llo=llo, bnd=bnd, a=a, invd=invd, base=base, cnt1=cnt1,
                   bound=f32(0.5) - delta, mirror=f32(mirror))
        for v in out.values():
            if isinstance(v, np.ndarray):
                v.flags.writeable = False
    return out


def level_code(y, qmap):
    """The AVX-512 kernels' arithmetic code, in NumPy, with -1 where they defer to the bucket
    table (for the tests)."""
    lt = level_tables(qmap)
    y = np.asarray(y, np.float32)
    b = y.view(np.uint32)
    neg = (b >> np.uint32(31)) == 1
    mb = b & np.uint32(0x7FFFFFFF)
    m = mb.view(np.float32)
    e = np.clip((mb >> np.uint32(23)).astype(np.int64) - LEVEL_E0, 0, LEVEL_NB - 1)
    bnd = lt["bnd"][e]
    lev = lt["llo"][e] + (m >= bnd)
    with np.errstate(invalid="ignore"):
        t = (m - lt["a"][lev]) * lt["invd"][lev]
        r = np.rint(t)
        flag = ~(np.abs(t - r) < lt["bound"]) | (
            neg & (mb == bnd.view(np.uint32) - np.uint32(1)))
        off = np.clip(r, 0, lt["cnt1"][lev])
        code = lt["base"][lev] + off
        code = np.where(neg, np.maximum(lt["mirror"] - code, 0), code)
    return np.where(flag, -1, np.nan_to_num(code)).astype(np.int64)


# The per-map words the kernels read (Seg.qwords): the level tables in the layout of
# src/fa_quant.h's fa_q_words (llo[32] int32, bnd[32], a, invd, base, cnt1 [16 each], bound,
# mirror and 14 words of padding; llo[0] == -1: no level tables), then the map as four byte
# planes (byte j of every entry: the AVX-512 loads' byte permutes).
LEVEL_WORDS = 2 * LEVEL_NB + 4 * LEVEL_MAX + 16
PLANE_WORDS = 4 * CODES // 4

_words_cache = {}


def kernel_words(qmap):
    """The read-only uint32 array of LEVEL_WORDS + PLANE_WORDS words for a map."""
    return _cached(_words_cache, qmap, _build_kernel_words)


def _build_kernel_words(q):
    w = np.zeros(LEVEL_WORDS + PLANE_WORDS, np.uint32)
    lt = level_tables(q)
    if lt is None:
        w[0] = 0xFFFFFFFF
    else:
        flat = np.concatenate([lt["llo"].view(np.uint32), lt["bnd"].view(np.uint32)] + [
            lt[k].view(np.uint32) for k in ("a", "invd", "base", "cnt1")] + [
            np.array([lt["bound"], lt["mirror"]], np.float32).view(np.uint32)])
        w[:flat.size] = flat
    w[LEVEL_WORDS:] = q.view(np.uint8).reshape(CODES, 4).T.copy().view(np.uint32).ravel()
    w.flags.writeable = False
    return w
