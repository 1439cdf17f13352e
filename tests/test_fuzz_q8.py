"""Fuzzing the 8-bit states (hypothesis): every functional kernel with QuantizedState
states of random codes, block scales (0, tiny, subnormal, huge, NaN, inf) and maps, on
float32 and 16-bit params, random sizes and shapes, every SIMD path; and, as often, one
thing wrong with one state (its codes' dtype, shape, layout or writability, its absmax's
length, dtype or writability, a map the kernels cannot hold, an array state among 8-bit
ones, a float64 param, codes and absmax sharing memory).

The oracle (docs/contract.md#bad-input, #eight-bit-states), as tests/test_fuzz.py's:
- a call with nothing wrong either succeeds, and then every array equals what
  ``fastadam.reference`` computes on copies (codes and absmax exactly; Adam's param to the
  accuracy tolerances, as there), or is refused for its hyperparameters only;
- a call with something wrong is refused with a TypeError or ValueError whose message
  starts with "Invalid", and every byte of every array is as it was.

CI runs a bounded, derandomized number of examples; FASTADAM_FUZZ_EXAMPLES=N runs N fresh
ones (see tests/test_fuzz.py).
"""

import numpy as np
import pytest
from hypothesis import event, given, note
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from test_fuzz import (BY_KERNEL, FUZZ, KERNELS, as_read, assert_matches, hyperparameters,
                       often, param_scale, unwritten)

import fastadam
from fastadam import _registry, quant, reference

ml_dtypes = pytest.importorskip("ml_dtypes")

DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16),
          "float16": np.dtype(np.float16)}
# what may be wrong with one state, or with the tensor
FAULTS = ["codes dtype", "codes shape", "codes strided", "codes readonly", "absmax length",
          "absmax dtype", "absmax readonly", "qmap length", "qmap order", "array state",
          "float64 param", "codes and absmax overlap", "not a QuantizedState"]
SCALES = st.one_of(st.floats(2.0 ** -20, 10.0, width=32), st.sampled_from(
    [0.0, 1e-40, 3e-39, 1e30, 3.4e38, float("nan"), float("inf")]))


@pytest.fixture(autouse=True, scope="module")
def restore_simd_path():
    old = fastadam.get_simd_path()
    yield
    fastadam.set_simd_path(old)


def _state(draw, n, shape, signed):
    codes = draw(hnp.arrays(np.uint8, shape), label="codes")
    absmax = np.array(draw(st.lists(SCALES, min_size=quant.nblocks(n),
                                    max_size=quant.nblocks(n)), label="absmax"), np.float32)
    return quant.QuantizedState(codes, absmax, quant.dynamic_map(signed))


def _fault(draw, fault, states, name, shape):
    """State ``name`` of ``states`` with ``fault``."""
    s = states[name]
    if fault == "codes dtype":
        s = s._replace(codes=s.codes.astype(draw(st.sampled_from([np.int8, np.uint16]))))
    elif fault == "codes shape":
        s = s._replace(codes=np.zeros(s.codes.size + 1, np.uint8))
    elif fault == "codes strided":
        wide = np.zeros(s.codes.shape + (2,), np.uint8)
        wide[..., 0] = s.codes
        s = s._replace(codes=wide[..., 0])
    elif fault == "codes readonly":
        s.codes.flags.writeable = False
    elif fault == "absmax length":
        s = s._replace(absmax=np.zeros(s.absmax.size + draw(st.sampled_from([-1, 1])) + (
            1 if s.absmax.size == 0 else 0), np.float32))
    elif fault == "absmax dtype":
        s = s._replace(absmax=s.absmax.astype(np.float64))
    elif fault == "absmax readonly":
        s.absmax.flags.writeable = False
    elif fault == "qmap length":
        s = s._replace(qmap=s.qmap[:255].copy())
    elif fault == "qmap order":
        s = s._replace(qmap=s.qmap[::-1].copy())
    elif fault == "array state":
        s = np.zeros(shape, np.float32)
    elif fault == "codes and absmax overlap":
        buf = np.zeros(s.codes.nbytes + s.absmax.nbytes + 8, np.uint8)
        codes = buf[:s.codes.size].reshape(s.codes.shape)
        start = max(0, s.codes.size - 4) // 4 * 4
        absmax = buf[start:start + s.absmax.nbytes].view(np.float32)
        codes[...] = s.codes
        s = quant.QuantizedState(codes, absmax, s.qmap)
    elif fault == "not a QuantizedState":
        s = tuple(s)
    states[name] = s


def _copy(x):
    if isinstance(x, tuple):
        return type(x)(*(np.array(a) for a in x)) if isinstance(x, quant.QuantizedState) \
            else tuple(np.array(a) for a in x)
    return np.array(x)


def _raw(x):
    return b"".join(a.tobytes() for a in x) if isinstance(x, tuple) else x.tobytes()


@FUZZ
@given(data=st.data())
def test_fuzz_8bit_states(data):
    draw = data.draw
    kernel = draw(st.sampled_from(sorted(KERNELS)), label="kernel")
    positional, optional, kinds = KERNELS[kernel]
    info = BY_KERNEL[kernel]
    fastadam.set_simd_path(draw(st.sampled_from(fastadam.available_simd_paths()),
                                label="simd path"))
    pdt = DTYPES[draw(st.sampled_from(sorted(DTYPES)), label="param dtype")]
    gdt = DTYPES[draw(st.sampled_from(_registry.MIXING[pdt.name]["grad"]), label="grad")]
    shape = draw(st.one_of(st.integers(0, 700).map(lambda n: (n,)),
                           hnp.array_shapes(min_dims=2, max_dims=2, max_side=40)),
                 label="shape")
    n = int(np.prod(shape))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="seed"))
    param = (rng.standard_normal(shape) * 2).astype(pdt)
    grad = (rng.standard_normal(shape) * draw(st.sampled_from([1e-3, 1.0, 1e3]))).astype(gdt)
    scalars = info.scalar_names
    names = [s for s in positional if s not in ("param", "grad") and s not in scalars] + [
        s for s in optional if draw(st.booleans(), label=s)]
    qmaps = {s.name: s.qmap for s in _registry.by_name(kernel[:-1]).states}
    states = {s: _state(draw, n, shape, qmaps[s] == "signed" or draw(often(20))) for s in names}
    extra = {s: np.array(draw(st.floats(0.125, 1.0, width=32)), np.float32) for s in scalars}
    # (an empty array is contiguous and shares no memory; one array state alone is fine)
    faults = [f for f in FAULTS if (n or f not in ("codes strided", "codes and absmax overlap"))
              and (len(names) > 1 or f != "array state")]
    fault = draw(st.sampled_from(faults), label="fault") if names and draw(often(30)) else None
    if fault == "float64 param":
        param = param.astype(np.float64)
        grad = grad.astype(np.float64)
    elif fault:
        _fault(draw, fault, states, draw(st.sampled_from(names), label="faulty"), shape)
    required = ("step",) if info.kernel_step == "required" else ()
    hyper = draw(hyperparameters(kinds, required=required, odd=6), label="hyper")
    arrays = {"param": param, "grad": grad, **states, **extra}
    before = {k: _copy(v) for k, v in arrays.items()}
    raw = {k: _raw(v) for k, v in arrays.items()}

    def call(fn, arrs, h):
        fn(*(arrs[k] for k in positional), **{k: arrs[k] for k in optional if k in arrs}, **h)

    try:
        with np.errstate(all="ignore"):
            call(getattr(fastadam, kernel), arrays, hyper)
    except (TypeError, ValueError) as e:
        note(f"refused: {type(e).__name__}: {e}")
        event(f"outcome: {type(e).__name__}" + (" (fault)" if fault else ""))
        assert str(e).startswith("Invalid"), e
        assert all(_raw(v) == raw[k] for k, v in arrays.items()), f"{kernel}: written: {e}"
        if not fault:
            for part in (".codes", ".absmax", ".qmap", "8-bit"):
                assert part not in str(e), f"a valid 8-bit state refused: {e}"
        return
    assert fault is None, f"{kernel}: {fault} was accepted"
    event("outcome: ok")
    h = as_read(hyper, kinds)
    ref = {k: _copy(v) for k, v in before.items()}
    with np.errstate(all="ignore"):
        call(getattr(reference, kernel), ref, h)
    skip = unwritten(kernel, h)
    for name in names:
        got, want = arrays[name], ref[name]
        if name in skip:
            assert _raw(got) == _raw(before[name]), f"{kernel}: {name} was written"
            continue
        np.testing.assert_array_equal(got.codes, want.codes, err_msg=f"{kernel}: {name}")
        assert got.absmax.tobytes() == want.absmax.tobytes() or np.array_equal(
            got.absmax, want.absmax, equal_nan=True), f"{kernel}: {name}.absmax"
    for name in scalars:
        assert_matches(arrays[name], ref[name], None, f"{kernel}: {name}")
    got_p, want_p = arrays["param"], ref["param"]
    if kernel not in ("adam_", "adamw_"):
        # the reference's operations in its order: its bits (NaN where it has NaN)
        same = (got_p.tobytes() == want_p.tobytes()) or np.array_equal(
            got_p.astype(np.float64), want_p.astype(np.float64), equal_nan=True)
        assert same, f"{kernel}: param"
        return
    # Adam multiplies by 1/sqrt(bc2) where the reference divides: a last-bit float32
    # difference, which a 16-bit param may round across (one 16-bit ulp)
    scale = param_scale(kernel, h, before["param"].astype(np.float32),
                        want_p.astype(np.float32))
    if pdt.itemsize == 4:
        assert_matches(got_p, want_p, scale, f"{kernel}: param")
        return
    g, w = got_p.astype(np.float64), want_p.astype(np.float64)
    ulp = 2.0 ** -(8 if pdt.name == "bfloat16" else 11)
    with np.errstate(all="ignore"):
        ok = (np.isnan(g) & np.isnan(w)) | (g == w) | (
            np.abs(g - w) <= 2 * ulp * np.maximum(scale, np.abs(w)))
    assert ok.all(), f"{kernel}: param {g[~ok][:5]} vs {w[~ok][:5]}"
