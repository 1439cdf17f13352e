"""NumPy mirrors of fastadam/src/fa_half.h: the bits the kernels' 16-bit storage gives.

Round-to-nearest-even and stochastic narrowing of float32 to bfloat16 and float16 bits, the
counter-based random numbers (``random32``) and the per-tensor key (``sr_key``) stochastic
rounding uses. Vectorised over arrays in uint32/uint64 arithmetic, bit for bit the C; the
tests compare the kernels against these. NaN rules (F16C's, for float16):

- bfloat16: ``(bits >> 16) | 0x0040`` (sign and top payload kept, quieted);
- float16: ``sign | 0x7e00 | top 10 payload bits``; widening: ``sign | 0x7fc00000 |
  payload << 13``. (NumPy keeps signalling NaNs signalling; all else equals NumPy.)
"""

import numpy as np

_U32 = np.uint32
_M32 = 0xFFFFFFFF
_M64 = 0xFFFFFFFFFFFFFFFF


def _bits(x):
    return np.ascontiguousarray(x, dtype=np.float32).view(_U32)


def mix32(x):
    """lowbias32, on a uint32 array (or scalar: products wrap, as in C)."""
    x = np.asarray(x, dtype=_U32)
    with np.errstate(over="ignore"):
        x = x ^ (x >> _U32(16))
        x = x * _U32(0x7FEB352D)
        x = x ^ (x >> _U32(15))
        x = x * _U32(0x846CA68B)
        return x ^ (x >> _U32(16))


def _mix64(z):
    """splitmix64's output function, on a Python int."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def _splitmix64(z):
    return _mix64((z + 0x9E3779B97F4A7C15) & _M64)


def sr_key(seed, step, tensor):
    """fa_sr_key: the stochastic-rounding key of one tensor at one step."""
    z = _splitmix64(int(seed) & _M64)
    z = _splitmix64(z ^ (int(step) & _M64))
    return _splitmix64(z ^ (int(tensor) & _M64))


def _round_keys(key):
    key = int(key) & _M64
    k0 = key & _M32
    k1 = (key >> 32) ^ int(mix32(_U32(k0 ^ 0x9E3779B9)))
    return _U32(k0), _U32(k1)


def random32(key, index0, n):
    """fa_random32(key, index0 + j) for j in range(n), as uint32."""
    k0, k1 = _round_keys(key)
    index = np.uint64(int(index0) & _M64) + np.arange(n, dtype=np.uint64)
    lo = (index & np.uint64(_M32)).astype(_U32)
    hi = (index >> np.uint64(32)).astype(_U32)
    return mix32(mix32(lo ^ k0) ^ k1 ^ hi)


def _bf16_nan(b):
    return ((b >> _U32(16)) | _U32(0x40)).astype(np.uint16)


def _f16_nan(a):
    return _U32(0x7E00) | ((a >> _U32(13)) & _U32(0x3FF))


def narrow_bf16(x):
    """float32 -> bfloat16 bits (uint16), round to nearest even."""
    b = _bits(x)
    rounded = ((b + _U32(0x7FFF) + ((b >> _U32(16)) & _U32(1))) >> _U32(16)).astype(np.uint16)
    return np.where((b & _U32(0x7FFFFFFF)) > 0x7F800000, _bf16_nan(b), rounded)


def narrow_f16(x):
    """float32 -> float16 bits (uint16), round to nearest even."""
    b = _bits(x)
    a = b & _U32(0x7FFFFFFF)
    sign = (b >> _U32(16)) & _U32(0x8000)
    n = a - _U32(0x38000000)
    normal = (n + _U32(0xFFF) + ((n >> _U32(13)) & _U32(1))) >> _U32(13)
    # |x| < 2^-14: |x| + 0.5 rounds at float16's subnormal step 2^-24
    with np.errstate(invalid="ignore"):  # signalling NaNs; their result is not used
        sub = (a.view(np.float32) + np.float32(0.5)).view(_U32) - _U32(0x3F000000)
    h = np.where(a < 0x38800000, sub, normal)
    h = np.where(a >= 0x477FF000, _U32(0x7C00), h)
    h = np.where(a > 0x7F800000, _f16_nan(a), h)
    return (sign | h).astype(np.uint16)


def widen_bf16(h):
    """bfloat16 bits -> float32 (exact)."""
    return (np.asarray(h, dtype=np.uint16).astype(_U32) << _U32(16)).view(np.float32)


def widen_f16(h):
    """float16 bits -> float32 (exact; NaNs quieted as F16C does)."""
    h = np.asarray(h, dtype=np.uint16).astype(_U32)
    sign = (h & _U32(0x8000)) << _U32(16)
    mant = h & _U32(0x3FF)
    exp = h & _U32(0x7C00)
    nonsign = (h & _U32(0x7FFF)) << _U32(13)
    normal = nonsign + _U32(0x38000000)
    sub = ((_U32(0x3F000000) | mant).view(np.float32) - np.float32(0.5)).view(_U32)
    infnan = (nonsign + _U32(0x70000000)) | np.where(mant != 0, _U32(0x400000), _U32(0))
    r = np.where(exp == 0, sub, normal)
    r = np.where(exp == 0x7C00, infnan, r)
    return (sign | r).view(np.float32)


def narrow_bf16_sr(x, key, index0):
    """fa_narrow_bf16_sr: element j rounds with fa_random32(key, index0 + j)."""
    b = _bits(x)
    r = random32(key, index0, b.size).reshape(b.shape)
    rounded = ((b + (r & _U32(0xFFFF))) >> _U32(16)).astype(np.uint16)
    return np.where((b & _U32(0x7FFFFFFF)) > 0x7F800000, _bf16_nan(b), rounded)


def narrow_f16_sr(x, key, index0):
    """fa_narrow_f16_sr: element j rounds with fa_random32(key, index0 + j)."""
    b = _bits(x)
    r = random32(key, index0, b.size).reshape(b.shape)
    a = b & _U32(0x7FFFFFFF)
    sign = (b >> _U32(16)) & _U32(0x8000)
    normal = np.minimum((a - _U32(0x38000000) + (r & _U32(0x1FFF))) >> _U32(13), _U32(0x7C00))
    # |x| < 2^-14: |x| * 2^24 = m * 2^-s; up iff r < ceil(frac * 2^32)
    e = a >> _U32(23)
    m = (a & _U32(0x7FFFFF)) | np.where(e != 0, _U32(0x800000), _U32(0))
    s = _U32(126) - np.maximum(e, _U32(1))  # wraps for the normal range, unused there
    sc = np.minimum(s, _U32(31))
    t = m >> sc
    fr = m & ((_U32(1) << sc) - _U32(1))
    up_shift = np.where(s <= 32, _U32(32) - s, _U32(0))
    down_shift = np.where(s > 32, np.minimum(s - _U32(32), _U32(31)), _U32(0))
    thr = np.where(s <= 32, fr << up_shift,
                   (fr + ((_U32(1) << down_shift) - _U32(1))) >> down_shift)
    sub = t + (r < thr).astype(_U32)
    h = np.where(a < 0x38800000, sub, normal)
    h = np.where(a > 0x7F800000, _f16_nan(a), h)
    return (sign | h).astype(np.uint16)
