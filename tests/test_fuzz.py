"""Fuzzing (hypothesis): every functional kernel and optimizer class on random dtypes,
shapes, strides, flags, byte order, alignment, overlapping views, subclasses and non-arrays
(a per-tensor scalar state: 0-d, of either float dtype whatever the param's, or odd too),
with hyperparameters drawn from NaN, ±inf, 0, -0, negatives, huge (1e308), tiny (5e-324),
bools, ints too large for a double, NumPy scalars and 0-d arrays, strings, None, complex.

The oracle, for every call (docs/contract.md#bad-input):
- it succeeds, and then every array equals what ``fastadam.reference`` computes on copies
  (with the hyperparameters as fastadam reads them: ``float(x)``, ``bool(x)``, the step's
  ``__index__``), NaN for NaN and infinity for infinity: exactly, since the kernels do the
  reference's operations in its order, except Adam's param, to the tolerances of
  docs/contract.md#accuracy
  measured against the operands of its last subtraction (one step can cancel to near
  zero); arrays a step never writes (the grad; a state its options leave unused) keep
  every bit; no byte around any array changes (each array sits in a buffer with canary
  bytes on both sides);
- or it raises TypeError or ValueError whose message starts with "Invalid", and every
  byte of every array and buffer involved is as it was (for an optimizer: its params, its
  states and its step count too).
An optimizer also draws its gradient policy (``nonfinite``, ``max_grad_norm``, and a
``grad_scale`` per step, bad values included) and sometimes a NaN or infinite grad element.
A step then does what the policy's definition says, computed in float64 by the test: with
``nonfinite="skip"`` and a NaN or inf it returns False, with ``"raise"`` it raises
FloatingPointError, and nothing changes; otherwise the reported ``grad_norm`` is the 2-norm
of the unscaled grads, and every array equals the reference's with each grad multiplied by
``min(1, max_grad_norm / (norm + 1e-6)) / grad_scale`` (torch's clip_grad_norm_ rule).
Any other exception fails the test; a crash fails the run. What this fuzzer found in the
core is fixed and pinned by the regression tests at the end of this file: a NaN in
max_exp_avg_sq was ignored; step=np.array([3]), size-2 arrays as flags and
Decimal('sNaN') as momentum were rejected with NumPy's or decimal's errors, not fastadam's.

CI runs a bounded, derandomized number of examples (a fixed set, so the result does not
vary from run to run). For a longer local run, with fresh random examples each time:

    FASTADAM_FUZZ_EXAMPLES=10000 pytest tests/test_fuzz.py --hypothesis-show-statistics

(``--hypothesis-seed=N`` repeats a run.) The statistics give, per test, the examples run
and the share of each outcome (``outcome: ok`` / ``TypeError`` / ``ValueError``).
"""

import math
import operator
import os
import warnings
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastadam
import optimizers as registry
from fastadam import reference

CI_EXAMPLES = 600       # per test; the file runs in about 20 s here
EXAMPLES = int(os.environ.get("FASTADAM_FUZZ_EXAMPLES") or 0)
FUZZ = settings(max_examples=EXAMPLES or CI_EXAMPLES, deadline=None,
                derandomize=not EXAMPLES, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much,
                                       HealthCheck.large_base_example])

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
GUARD = 24              # canary bytes on each side of an array's memory
CANARY = 0xA5

# ------------------------------------------------------------------- hyperparameters

REAL, FLAG, STEP, BETAS = "real", "flag", "step", "betas"
MODE, LIMIT = "mode", "limit"   # the gradient policy: nonfinite; max_grad_norm, grad_scale
ROUNDING, SEED = "rounding", "seed"     # how 16-bit params are rounded (the fuzz's aren't)

SANE = {
    REAL: st.floats(0.0, 1.0),
    FLAG: st.booleans(),
    STEP: st.integers(1, 10**6),
    BETAS: st.tuples(st.floats(0.0, 1.0, exclude_max=True),
                     st.floats(0.0, 1.0, exclude_max=True)),
    MODE: st.sampled_from(["propagate", "skip", "raise"]),
    ROUNDING: st.just("nearest"),
    SEED: st.integers(0, 2**64 - 1),
    # None (off), or a threshold / loss scale that often engages (grads are up to ~4 per
    # element, a few hundred elements), a power of two as loss scalers use, or anything > 0
    LIMIT: st.one_of(st.none(), st.floats(1e-3, 20.0),
                     st.sampled_from([2.0**k for k in range(-8, 17)]),
                     st.floats(min_value=0.0, exclude_min=True, allow_infinity=False)),
}
NAN, INF = math.nan, math.inf
ODD_REALS = [
    NAN, INF, -INF, 0.0, -0.0, -1.0, -1e-300, 1e308, -1e308, 1.7976931348623157e308,
    5e-324, 2.2250738585072014e-308, 1e-45, 3.4028235e38, 1e39, 0.9999999999999999,
    0, 1, 2, -3, 10**30, 10**400, -10**400, True, False,
    np.float32(0.1), np.float16(0.5), np.float64(NAN), np.float32(INF), np.float32(-0.0),
    np.int64(2), np.uint8(200), np.int8(-1), np.bool_(False), np.longdouble("1e4000"),
    np.longdouble(0.5), Fraction(1, 3), Decimal("0.1"), Decimal("nan"), Decimal("sNaN"),
    np.array(0.5), np.array(NAN), np.array([0.5, 0.5]), np.array([], np.float64),
    "0.1", "", b"1", None, 1j, np.complex64(1), [0.1], (0.1,), {}, object(),
]
ODD = {
    REAL: st.one_of(st.sampled_from(ODD_REALS), st.floats(),
                    st.integers(-2**70, 2**70)),
    FLAG: st.sampled_from([True, False, 0, 1, 2, -1, 0.0, NAN, "", "False", None,
                           np.bool_(True), np.int64(0), np.array(True),
                           np.array([True, False]), np.array([]), [], [0], 1j, object()]),
    STEP: st.one_of(st.integers(-5, 2**64 + 5), st.sampled_from([
        0, -1, 2**63 - 1, 2**63, 2**64, 10**30, True, False, 1.0, 2.5, NAN, INF, "1", None,
        np.int64(1), np.int8(-1), np.uint64(2**64 - 1), np.int32(5), np.float64(2.0),
        np.bool_(True), np.array(3), np.array([3]), Fraction(2, 1), Decimal(2)])),
}
ODD[MODE] = st.sampled_from(["ignore", "Skip", "RAISE", "", " skip", "skip\0", None, 0, 1,
                             True, b"skip", ["skip"], np.str_("skip").encode()])
ODD[LIMIT] = ODD[REAL]
# "stochastic" is refused too: the fuzzed params are float32/float64
ODD[ROUNDING] = st.sampled_from(["stochastic", "Nearest", "", None, 0, b"nearest",
                                 ["nearest"]])
ODD[SEED] = st.sampled_from([-1, 2**64, 10**30, 1.5, "1", None, True, np.float64(2.0),
                             np.array([1]), np.uint64(2**64 - 1), np.int64(3)])
ODD[BETAS] = st.one_of(
    st.tuples(ODD[REAL], ODD[REAL]),
    st.tuples(SANE[REAL], ODD[REAL]),
    st.lists(st.one_of(SANE[REAL], ODD[REAL]), min_size=2, max_size=2),
    st.sampled_from([(0.9,), (0.9, 0.999, 0.5), [], (), 0.9, None, "ab",
                     np.array([0.9, 0.999]), {0.9: 0.999}, {0.9, 0.999}]))


def often(p_percent):
    """A bool that is True ~p% of the time and shrinks to False."""
    return st.sampled_from([False] * (100 - p_percent) + [True] * p_percent)


@st.composite
def hyperparameters(draw, kinds, required=(), odd=8):
    """Each hyperparameter left out (its default, ~50%), sane, or (~``odd``%) odd;
    shrinks to left out."""
    out = {}
    for name, kind in kinds.items():
        mode = draw(st.sampled_from(["default"] * (50 - odd) + ["sane"] * 50 + ["odd"] * odd))
        if mode == "default" and name in required:
            mode = "sane"
        if mode != "default":
            out[name] = draw(SANE[kind] if mode == "sane" else ODD[kind])
    return out


def as_read(hyper, kinds):
    """The hyperparameters as fastadam reads them (for the reference)."""
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, x in hyper.items():
            kind = kinds[name]
            if kind == REAL:
                out[name] = float(x)
            elif kind == FLAG:
                out[name] = bool(x)
            elif kind == STEP:
                out[name] = None if x is None else operator.index(x)
            elif kind in (MODE, ROUNDING, SEED):
                out[name] = x
            elif kind == LIMIT:
                out[name] = None if x is None else float(x)
            else:
                out[name] = (float(x[0]), float(x[1]))
    return out


# ------------------------------------------------------------------- arrays

class Sub(np.ndarray):
    """A custom ndarray subclass carrying an attribute."""

    def __array_finalize__(self, obj):
        self.tag = getattr(obj, "tag", "fuzz")


ODD_DTYPES = [np.float16, np.int32, np.int64, np.uint8, np.bool_, np.complex64,
              np.complex128, np.longdouble, ">f4", ">f8", "<f4", "<f8", "datetime64[ns]",
              [("a", "<f4")], "S4", "U2", object]
ODD_KINDS = ["dtype", "byteorder", "strided", "reversed", "fortran", "misaligned",
             "readonly", "shape", "broadcast", "subclass", "masked", "matrix", "nonarray"]

SHAPES = st.one_of(st.just(()), st.integers(0, 70).map(lambda n: (n,)),
                   hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=5))


def _values(draw, shape, dtype):
    """float64 values exactly representable in ``dtype`` (float32 or float64): mostly tame,
    some anything (NaN, ±inf, subnormal, the largest finite)."""
    width = 32 if dtype == F32 else 64
    elements = st.one_of(st.floats(-4.0, 4.0, width=width), st.floats(width=width))
    return draw(hnp.arrays(np.float64, shape, elements=elements))


class Memory:
    """Every buffer and array of one call, to snapshot and compare byte for byte."""

    def __init__(self):
        self.buffers = []       # uint8 arrays holding arrays, canaries around them
        self.objects = []       # arrays not carved from a buffer (object dtype)

    def buffer(self, nbytes):
        buf = np.full(2 * GUARD + 16 + nbytes, CANARY, np.uint8)
        self.buffers.append(buf)
        return buf

    def carve(self, dtype, shape, misalign=0, buf=None, start=None):
        """An array of ``dtype`` and ``shape`` in a new canary-guarded buffer (or in
        ``buf`` at byte ``start``), starting ``misalign`` bytes past an aligned address."""
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        if buf is None:
            buf, start = self.buffer(nbytes + misalign), GUARD
        start += misalign
        return buf[start:start + nbytes].view(dtype).reshape(shape)

    def snapshot(self, arrays):
        arrays = [np.asarray(a) for a in arrays if isinstance(a, np.ndarray)]
        return ([(b, b.tobytes()) for b in self.buffers]
                + [(a, a.tobytes()) for a in arrays + self.objects])


def _fill(view, values):
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            view[...] = values.astype(view.dtype)
    except (TypeError, ValueError):
        pass            # a dtype floats do not convert to: keep the canary bytes


def _odd_array(draw, mem, kind, dtype, shape, values):
    """One array (or non-array) of the given kind, built around ``values``."""
    ndim = len(shape)
    if kind == "dtype":
        odd = np.dtype(draw(st.sampled_from(ODD_DTYPES + [F32 if dtype == F64 else F64])))
        if odd.hasobject:
            a = values.astype(object)
            mem.objects.append(a)
            return a
        a = mem.carve(odd, shape)
        _fill(a, values)
        return a
    if kind == "byteorder":
        a = mem.carve(dtype.newbyteorder(">"), shape)
    elif kind == "strided" and ndim:
        a = mem.carve(dtype, (2 * shape[0],) + shape[1:])[::2]
    elif kind == "reversed" and ndim:
        a = mem.carve(dtype, shape)[::-1]
    elif kind == "fortran" and ndim >= 2:
        a = mem.carve(dtype, shape[::-1]).T
    elif kind == "misaligned":
        a = mem.carve(dtype, shape, misalign=draw(st.integers(1, dtype.itemsize - 1)))
    elif kind == "shape":
        other = draw(SHAPES)
        other = other if other != shape else shape + (1,)
        a = mem.carve(dtype, other)
        _fill(a, np.resize(values, other))
        return a
    elif kind == "broadcast" and ndim:
        row = mem.carve(dtype, shape[-1:])
        _fill(row, values.reshape(-1)[:shape[-1]] if values.size else values[:0])
        return np.broadcast_to(row, shape)
    else:
        a = mem.carve(dtype, shape)
    _fill(a, values)
    if kind == "readonly":
        a.flags.writeable = False
    elif kind == "subclass":
        a = a.view(Sub)
    elif kind == "masked":
        a = np.ma.masked_array(a, mask=np.arange(a.size).reshape(shape) % 3 == 0)
    elif kind == "matrix" and ndim == 2:
        with warnings.catch_warnings():     # np.matrix is "pending deprecation"
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            a = np.asmatrix(a)
    elif kind == "nonarray":
        how = draw(st.sampled_from(["list", "tuple", "None", "float", "numpy scalar",
                                    "memoryview", "bytes", "str"]))
        return {"list": lambda: a.tolist(), "tuple": lambda: tuple(a.reshape(-1).tolist()),
                "None": lambda: None, "float": lambda: 1.0,
                "numpy scalar": lambda: dtype.type(1), "memoryview": lambda: memoryview(a),
                "bytes": lambda: a.tobytes(), "str": lambda: "param"}[how]()
    return a


@st.composite
def array_set(draw, names, dtype, shape, mem, bad=True, odd=6):
    """``{name: array}`` for one tensor: mostly valid C-contiguous arrays of ``dtype`` and
    ``shape``, each in its own guarded buffer; or all carved from one shared buffer at
    random offsets (overlapping, adjacent, misaligned); or with odd arrays mixed in (each
    ~``odd``%)."""
    values = {name: _values(draw, shape, dtype) for name in names}
    nbytes = math.prod(shape) * dtype.itemsize
    if bad and draw(often(8)):
        half = max(dtype.itemsize, nbytes // 2 // dtype.itemsize * dtype.itemsize)
        buf = mem.buffer((2 * len(names) + 2) * half + nbytes)
        out = {}
        for name in names:
            pos = draw(st.integers(0, 2 * len(names)))
            mis = draw(st.sampled_from([0, 0, 0, 1, 2, 4]))
            out[name] = mem.carve(dtype, shape, mis, buf, GUARD + pos * half)
            _fill(out[name], values[name])
        event("arrays: views of one buffer")
        return out
    out = {}
    for name in names:
        kind = "ok"
        if bad and draw(often(odd)):
            kind = draw(st.sampled_from(ODD_KINDS))
            event(f"array: {kind}")
        out[name] = _odd_array(draw, mem, kind, dtype, shape, values[name])
    return out


# ------------------------------------------------------------------- the oracle

def assert_matches(got, want, scale, what):
    """``got`` agrees with ``want`` (docs/contract.md#accuracy tolerances) element by element;
    ``scale=None``:
    exactly (equal values, NaN where ``want`` has NaN).

    ``scale`` bounds the size of the operands whose rounding differs (the last
    subtraction ``p - update`` for a param): that, not the result, sets the error of a
    step that cancels to near zero. NaN positions must agree; an infinity must be matched
    by the same infinity, or by a finite value within rounding of the largest finite
    number (the one place where a last-bit difference is a finite/infinite difference).
    """
    dtype = want.dtype
    if dtype in (F64, F32):
        rtol, atol = (1e-12, 1e-14) if dtype == F64 else \
            (1e-5, 2 * np.finfo(F32).smallest_subnormal)
    else:   # float16, computed in float32: a last-bit float32 difference may round across
        rtol, atol = 2.0 ** -10, float(np.finfo(dtype).smallest_subnormal)  # one ulp
    g, w = got.astype(np.float64), want.astype(np.float64)
    with np.errstate(all="ignore"):
        nan_g, nan_w = np.isnan(g), np.isnan(w)
        close = g == w
        if scale is not None:
            tol = rtol * np.maximum(scale, np.abs(w)) + atol
            big = float(np.finfo(dtype).max) * (1 - 4 * rtol)
            close |= np.abs(g - w) <= tol
            close |= (((np.isinf(g) & (np.abs(w) >= big)) | (np.isinf(w) & (np.abs(g) >= big)))
                      & (np.sign(g) == np.sign(w)))
    ok = (nan_g & nan_w) | (~nan_g & ~nan_w & close)
    if not ok.all():
        i = np.flatnonzero(~ok.reshape(-1))[:5]
        raise AssertionError(f"{what}: got {g.reshape(-1)[i]}, want {w.reshape(-1)[i]} "
                             f"at flat index {i}")


def assert_unchanged(snap, what):
    for a, raw in snap:
        assert a.tobytes() == raw, f"{what}: an array or buffer changed"


def rejected(exc, hyper):
    """Whether ``exc`` is a rejection: TypeError or ValueError."""
    return isinstance(exc, (TypeError, ValueError))


def assert_rejected_cleanly(exc, snap, what, hyper):
    assert_unchanged(snap, what)
    event(f"outcome: {type(exc).__name__}")
    assert str(exc).startswith("Invalid"), f"{what}: message does not name the argument: {exc}"


def _address(a):
    return a.__array_interface__["data"][0]


def canaries_intact(mem, snap, arrays):
    """No byte of any buffer changed outside the memory of the arrays a call accepted
    (all C-contiguous, so each covers [data, data + nbytes))."""
    before = dict((id(b), raw) for b, raw in snap)
    for buf in mem.buffers:
        written = np.zeros(buf.size, bool)
        for a in arrays:
            lo = _address(np.asarray(a)) - _address(buf)
            if 0 <= lo < buf.size:
                written[lo:lo + np.asarray(a).nbytes] = True
        old = np.frombuffer(before[id(buf)], np.uint8)
        assert np.array_equal(buf[~written], old[~written]), "a byte outside every array changed"


def plain_copy(a):
    return np.array(np.asarray(a))      # base-class ndarray, own memory


# The NumPy classes' gradient policy: drawn like any hyperparameter, and grad_scale per step.
POLICY = dict(nonfinite=MODE, max_grad_norm=LIMIT, rounding=ROUNDING, seed=SEED)


def _kind(name, default):
    """How a hyperparameter is drawn, from its name and default in the registry."""
    if name == "step":
        return STEP
    if name in POLICY:
        return POLICY[name]
    if isinstance(default, bool):
        return FLAG
    if isinstance(default, (tuple, list)):
        return BETAS
    return REAL


# From the registry (tests/optimizers.py), per functional kernel (fastadam.X and
# reference.X): its arrays (positional, then the optional keyword states) and its
# hyperparameters with their kinds; per optimizer class: the class, its kernel, and its
# hyperparameters (the gradient policy's included).
BY_KERNEL = {info.kernel_name: info for info in registry.OPTIMIZERS}
KERNELS = {
    info.kernel_name: (info.arrays, info.optional,
                       {**{k: _kind(k, v) for k, v in info.kernel_defaults.items()},
                        **({"step": STEP} if info.kernel_step != "none" else {})})
    for info in registry.OPTIMIZERS}
CLASSES = {info.name: (info.cls, info.kernel_name,
                       {k: _kind(k, v) for k, v in info.defaults.items()})
           for info in registry.OPTIMIZERS}


def unwritten(kernel, h):
    """The arrays a step with hyperparameters ``h`` must not write: the grad, and the
    states its options leave out (the registry's rule)."""
    info = BY_KERNEL[kernel]
    h = {**info.kernel_defaults, **h}
    return {"grad"} | {s.name for s in info.states if not s.present(h)}


def param_scale(kernel, h, p_before, want):
    """Size of the operands of Adam's last subtraction ``p*decay - update``."""
    h = {**BY_KERNEL[kernel].kernel_defaults, **h}
    decay = 1.0
    if h.get("decoupled_weight_decay", kernel == "adamw_"):
        decay = 1.0 - h["lr"] * h["weight_decay"]
    with np.errstate(all="ignore"):
        return np.abs(p_before.astype(np.float64) * decay) + np.abs(want.astype(np.float64))


def check_step(kernel, arrays, before, h, what, grad_used=None):
    """After a successful step on ``arrays`` (name -> array; ``before``: plain copies from
    before it), compare with the reference applied to those copies (with ``grad_used`` for
    the grad, if given: the grad as the gradient policy scaled it)."""
    positional, optional, _ = KERNELS[kernel]

    def run_reference(h):
        ref = {name: a.copy() for name, a in before.items()}
        if grad_used is not None:
            ref["grad"] = grad_used
        with np.errstate(all="ignore"):
            getattr(reference, kernel)(*(ref[n] for n in positional),
                                       **{n: ref[n] for n in optional if n in ref}, **h)
        return ref

    ref = run_reference(h)
    if any(not np.isfinite(r).all() for r in ref.values()):
        event("ok: a result has NaN or inf")
    if any(isinstance(x, float) and abs(x) > 1e30 for x in h.values()):
        event("ok: a hyperparameter above 1e30")
    if any(isinstance(x, float) and 0 < abs(x) < 1e-300 for x in h.values()):
        event("ok: a hyperparameter below 1e-300")
    skip = unwritten(kernel, h)
    for name, a in arrays.items():
        got = np.asarray(a)
        if name in skip:
            assert got.tobytes() == before[name].tobytes(), f"{what}: {name} was written"
            continue
        # The kernels do the reference's operations in its order (README, "The update
        # rules"; FMA contraction off), so they give its values exactly, but for Adam's
        # param: the kernel multiplies by 1/sqrt(bc2) where the reference divides by
        # sqrt(bc2), a last-bit difference in the update.
        scale = None
        if name == "param" and kernel in ("adam_", "adamw_"):
            scale = param_scale(kernel, h, before[name], ref[name])
        assert_matches(got, ref[name], scale, f"{what}: {name}")


@pytest.fixture(autouse=True, scope="module")
def restore_simd_path():
    """The fuzz tests pick a SIMD path per example; put the default back afterwards."""
    old = fastadam.get_simd_path()
    yield
    fastadam.set_simd_path(old)


def _draw_simd_path(data):
    fastadam.set_simd_path(data.draw(st.sampled_from(fastadam.available_simd_paths()),
                                     label="simd path"))


# ------------------------------------------------------------------- functional kernels

@FUZZ
@given(data=st.data())
def test_fuzz_functional(data):
    kernel = data.draw(st.sampled_from(sorted(KERNELS)), label="kernel")
    positional, optional, kinds = KERNELS[kernel]
    _draw_simd_path(data)
    dtype = data.draw(st.sampled_from([F32, F64]), label="dtype")
    shape = data.draw(SHAPES, label="shape")
    scalars = BY_KERNEL[kernel].scalar_names
    passed = tuple(n for n in positional if n not in scalars) + tuple(
        n for n in optional if data.draw(st.booleans(), label=n))
    mem = Memory()
    arrays = data.draw(array_set(passed, dtype, shape, mem, odd=10), label="arrays")
    if scalars:
        sdtype = data.draw(st.sampled_from([F32, F64]), label="scalar dtype")
        arrays.update(data.draw(array_set(scalars, sdtype, (), mem, odd=10), label="scalars"))
    required = ("step",) if BY_KERNEL[kernel].kernel_step == "required" else ()
    hyper = data.draw(hyperparameters(kinds, required=required), label="hyper")
    snap = mem.snapshot(arrays.values())
    before = {n: plain_copy(a) for n, a in arrays.items() if isinstance(a, np.ndarray)}
    fn = getattr(fastadam, kernel)
    try:
        fn(*(arrays[n] for n in positional), **{n: arrays[n] for n in optional if n in arrays},
           **hyper)
    except Exception as e:
        if not rejected(e, hyper):
            raise
        note(f"rejected: {type(e).__name__}: {e}")
        assert_rejected_cleanly(e, snap, kernel, hyper)
        return
    event("outcome: ok")
    arrays = {n: a for n, a in arrays.items() if a is not None}   # None: a state left out
    event(f"ok: {kernel} {dtype}")
    event(f"ok: {'empty' if not math.prod(shape) else f'{len(shape)}-d'}")
    check_step(kernel, arrays, before, as_read(hyper, kinds), kernel)
    canaries_intact(mem, snap, arrays.values())


# ------------------------------------------------------------------- optimizer classes

def expected_policy(group, grads, grad_scale, reported_norm):
    """What the gradient policy must do with these (accepted) grads, from its definition,
    in float64: ("skip" | "raise", None) when ``nonfinite`` is "skip"/"raise" and a grad
    has a NaN or inf; else ("apply", factor), each grad to be multiplied by ``factor``:
    ``1/grad_scale`` (the unscale), times torch's clip_grad_norm_ rule
    ``min(1, max_grad_norm / (norm + 1e-6))`` on the 2-norm of the unscaled grads.

    ``reported_norm`` (``opt.grad_norm``) must equal that norm to rounding (the kernel's
    pre-pass adds the squares in another order); the factor is then computed from it, so
    that the rest of the step can be compared exactly."""
    nonfinite, max_norm = group["nonfinite"], group["max_grad_norm"]
    scale = 1.0 if grad_scale is None else float(grad_scale)
    grads = [g for g in grads if g is not None]     # a None grad takes no part
    finite = all(np.isfinite(np.asarray(g)).all() for g in grads)
    if nonfinite != "propagate" and not finite:
        return nonfinite, None
    if nonfinite == "propagate" and max_norm is None:
        assert reported_norm is None, "grad_norm reported though nothing computed it"
        return "apply", 1.0 / scale
    with np.errstate(all="ignore"):
        sumsq = sum(float(np.sum(np.square(np.asarray(g, np.float64)))) for g in grads)
        norm = math.sqrt(sumsq) / scale
    assert reported_norm is not None
    if math.isnan(norm) or math.isinf(norm):
        assert repr(reported_norm) == repr(norm), (reported_norm, norm)
    else:
        assert abs(reported_norm - norm) <= 1e-12 * norm, (reported_norm, norm)
    event(f"policy: norm {'finite' if math.isfinite(norm) else 'non-finite'}")
    factor = 1.0
    if max_norm is not None:
        coef = float(max_norm) / (reported_norm + 1e-6)
        factor = min(1.0, coef) if not math.isnan(coef) else coef
        event(f"policy: clip {'engaged' if factor < 1 else 'not engaged'}")
    return "apply", factor / scale


def _scaled(g, factor):
    """``g`` times ``factor``, one multiplication in the dtype the kernel computes in (g's,
    float32 for a 16-bit g): the grad the update uses."""
    g = plain_copy(g)
    if factor == 1.0:
        return g
    if g.dtype not in (F32, F64):
        g = g.astype(F32)
    with np.errstate(all="ignore"):
        return g * g.dtype.type(factor)


def opt_arrays(opt):
    return [a for st_ in opt.state.values() for a in st_.values()]


@st.composite
def grads_for(draw, params, keys, mem):
    """Grads in the params' structure, mostly valid; sometimes an odd grad or structure."""
    grads = [draw(array_set(("grad",), p.dtype, p.shape, mem, bad=draw(often(20)), odd=30))
             ["grad"] for p in params]
    if draw(often(4)):
        event("grads: wrong structure")
        return draw(st.sampled_from([None, grads[:-1], grads + grads[:1], tuple(grads),
                                     dict(enumerate(grads)), np.zeros(3, np.float32)]))
    return dict(zip(keys, grads)) if keys else grads


@FUZZ
@given(data=st.data())
def test_fuzz_optimizer(data):
    name = data.draw(st.sampled_from(sorted(CLASSES)), label="class")
    cls, kernel, kinds = CLASSES[name]
    _draw_simd_path(data)
    mem = Memory()
    n = data.draw(st.integers(1, 3), label="tensors")
    if data.draw(often(15)):      # params carved from one buffer
        dtype, shape = data.draw(st.sampled_from([F32, F64])), data.draw(SHAPES)
        params = list(data.draw(array_set(tuple(f"p{i}" for i in range(n)), dtype, shape,
                                          mem)).values())
    else:
        params = [data.draw(array_set(("param",), data.draw(st.sampled_from([F32, F64])),
                                      data.draw(SHAPES), mem,
                                      bad=data.draw(often(25)), odd=30))["param"]
                  for _ in range(n)]
    keys = [f"k{i}" for i in range(n)] if data.draw(st.booleans(), label="dict") else None
    hyper = data.draw(hyperparameters(kinds), label="hyper")
    snap = mem.snapshot(params)
    try:
        opt = cls(dict(zip(keys, params)) if keys else params, **hyper)
    except Exception as e:
        if not rejected(e, hyper):
            raise
        note(f"construction rejected: {type(e).__name__}: {e}")
        assert_rejected_cleanly(e, snap, f"{name}()", hyper)
        return
    event("construction: ok")
    taken = [0] * n         # per param, the steps it took (a None grad does not count)
    for _ in range(data.draw(st.integers(1, 3), label="steps")):
        if data.draw(often(25)):
            opt.param_groups[0].update(data.draw(hyperparameters(kinds), label="new hyper"))
        grads = data.draw(grads_for(params, keys, mem), label="grads")
        grad_list = list(grads.values()) if isinstance(grads, dict) else (
            list(grads) if isinstance(grads, (list, tuple)) else [grads])
        checked = opt.param_groups[0].get("nonfinite") in ("skip", "raise")
        if grad_list and data.draw(st.booleans() if checked else often(10),
                                   label="a non-finite grad element"):
            g = grad_list[data.draw(st.integers(0, len(grad_list) - 1), label="which grad")]
            if isinstance(g, np.ndarray) and g.size and g.flags.writeable \
                    and g.dtype in (F32, F64):
                g.reshape(-1)[data.draw(st.integers(0, g.size - 1), label="where")] = \
                    data.draw(st.sampled_from([NAN, INF, -INF]), label="value")
        states = [dict(opt.state[k]) for k in (keys or range(n))]
        count = opt.step_count
        snap = mem.snapshot(params + opt_arrays(opt) + grad_list)
        before = [{"param": plain_copy(p), **{s: plain_copy(a) for s, a in st_.items()}}
                  for p, st_ in zip(params, states)]
        kw = {}
        if data.draw(st.booleans(), label="grad_scale given"):
            kw["grad_scale"] = data.draw(st.one_of(SANE[LIMIT], ODD[LIMIT]) if data.draw(
                often(10)) else SANE[LIMIT], label="grad_scale")
        group_before = list(opt.param_groups[0].items())
        try:
            applied = opt.step(grads, **kw)
        except FloatingPointError as e:
            # nonfinite="raise" met a NaN or inf: nothing changed
            assert expected_policy(opt.param_groups[0], grad_list, kw.get("grad_scale"),
                                   None)[0] == "raise", e
            assert str(e).startswith("Non-finite gradient"), e
            event("outcome: FloatingPointError")
            assert_unchanged(snap, f"{name}.step raising FloatingPointError")
            assert opt.step_count == count
            continue
        except Exception as e:
            if not rejected(e, opt.param_groups[0]):
                raise
            note(f"step rejected: {type(e).__name__}: {e}")
            assert_rejected_cleanly(e, snap, f"{name}.step", opt.param_groups[0])
            assert opt.step_count == count
            continue
        assert all(opt.param_groups[0][k] is v for k, v in group_before)
        group = as_read({k: v for k, v in opt.param_groups[0].items() if k in kinds}, kinds)
        what, factor = expected_policy(group, grad_list, kw.get("grad_scale"), opt.grad_norm)
        if what == "skip":
            assert applied is False
            event("outcome: skipped")
            assert_unchanged(snap, f"{name}.step skipping")
            assert opt.step_count == count
            continue
        assert what == "apply" and applied is True, (what, applied)
        event("outcome: ok")
        event(f"policy: {group['nonfinite']}, max_grad_norm "
              f"{'off' if group['max_grad_norm'] is None else 'on'}, grad_scale "
              f"{'off' if kw.get('grad_scale') is None else 'on'}")
        assert opt.step_count == count + 1
        # the kernel's hyperparameters (not the policy's, nor a class-only option such as
        # Adagrad's initial_accumulator_value), and its step if it takes one
        info = BY_KERNEL[kernel]
        h = {k: v for k, v in group.items() if k in info.kernel_defaults}
        for i, (p, st_) in enumerate(zip(params, states)):
            g = grad_list[i]
            if g is None:       # the param and its states stay as they were
                event("a None grad")
                for sname, arr in {"param": p, **st_}.items():
                    assert np.asarray(arr).tobytes() == before[i][sname].tobytes(), \
                        f"{name} tensor {i}: {sname} changed though its grad is None"
                continue
            taken[i] += 1
            if info.kernel_step != "none":
                h["step"] = taken[i]
            check_step(kernel, {"param": p, "grad": g, **st_},
                       {**before[i], "grad": plain_copy(g)}, h, f"{name} tensor {i}",
                       grad_used=_scaled(g, factor))
        canaries_intact(mem, snap, params + opt_arrays(opt))


# ------------------------------------------------------------------- what it found, pinned

def _tensor(n=3, dtype=np.float32):
    return [np.zeros(n, dtype) for _ in range(5)]


def test_amsgrad_nan_in_max_exp_avg_sq_propagates():
    # np.maximum's rule (the reference's, and torch.maximum's): a NaN on either side.
    p, g, m, v, vmax = _tensor()
    vmax[1] = np.nan
    fastadam.adam_(p, g, m, v, step=1, amsgrad=True, max_exp_avg_sq=vmax)
    assert np.isnan(vmax[1]) and np.isnan(p[1])
    assert not np.isnan(vmax[[0, 2]]).any() and not np.isnan(p[[0, 2]]).any()


def test_an_initial_value_beyond_float_is_a_value_error():
    # float(10**400) raises OverflowError: the option is named in a ValueError instead.
    with pytest.raises(ValueError, match="^Invalid initial_accumulator_value: .*too large"):
        fastadam.Adagrad([np.zeros(3)], initial_accumulator_value=10**400)


def test_step_as_an_array_is_rejected_by_name():
    p, g, *_ = _tensor()
    with pytest.raises(TypeError, match="^Invalid step"):
        fastadam.sgd_(p, g, step=np.array([3]))


@pytest.mark.parametrize("make, name", [
    (lambda ps, x: fastadam.adam_(*ps[:4], step=1, decoupled_weight_decay=x),
     "decoupled_weight_decay"),
    (lambda ps, x: fastadam.RMSprop(ps[:1], centered=x), "centered"),
    (lambda ps, x: fastadam.Adam(ps[:1], amsgrad=x), "amsgrad"),
    (lambda ps, x: fastadam.SGD(ps[:1], momentum=x), "momentum"),
    (lambda ps, x: fastadam.RMSprop(ps[:1], momentum=x), "momentum"),
    (lambda ps, x: fastadam.Adam(ps[:1], decoupled_weight_decay=x), "decoupled_weight_decay"),
], ids=["adam_ decoupled_weight_decay", "RMSprop centered", "Adam amsgrad", "SGD momentum",
        "RMSprop momentum", "Adam decoupled_weight_decay"])
def test_array_of_two_as_a_flag_or_number_is_rejected_by_name(make, name):
    with pytest.raises(TypeError, match=f"^Invalid {name}"):
        make(_tensor(), np.array([0.5, 0.5]))


@pytest.mark.parametrize("cls", [fastadam.SGD, fastadam.RMSprop])
def test_decimal_snan_momentum_is_rejected_by_name(cls):
    # float(Decimal("sNaN")) raises; so did comparing it with 0 before validation.
    with pytest.raises(TypeError, match="^Invalid momentum"):
        cls(_tensor()[:1], momentum=Decimal("sNaN"))
