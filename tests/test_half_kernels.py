"""16-bit storage in the functional kernels, from tests/optimizers.py's rows and
fastadam/_registry.py's MIXING table alone.

The contract (fastadam/_kernels.pxi.tp's block converter): a step on 16-bit arrays is the
float32 kernel run on their widened values, each 16-bit output then rounded to nearest even
(or, for a 16-bit param with ``rounding="stochastic"``, stochastically, keyed by
``fa_sr_key(seed, step or 0, 0)`` and the element index). So every layout MIXING allows is
checked bit for bit against that simulation (fastadam/_rounding.py's mirror around the
float32 kernel), at sizes around the converter's 256-element block and the SIMD tails, over
several steps; stochastic rounding also for being unbiased and for landing on one of the
two neighbours of the exact value; the 16-bit reference (fastadam.reference) to a few ulps
of the 16-bit type (the same bits where the row's float32 kernel gives the reference's);
every combination MIXING refuses, and bad ``rounding``/``seed`` values, refused naming the
argument with nothing written; and the NumPy classes' gradient policy with 16-bit grads as
with float32 grads of the same values.
"""

import itertools
import re
from typing import NamedTuple, Optional

import ml_dtypes
import numpy as np
import pytest

from fastadam import _registry
from fastadam import _rounding as R
import optimizers as registry
from test_registry_kernels import draw, random_states, step_variants

DT = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64),
      "bfloat16": np.dtype(ml_dtypes.bfloat16), "float16": np.dtype(np.float16)}
HALF = _registry.HALF_DTYPES
WIDEN = {"bfloat16": R.widen_bf16, "float16": R.widen_f16}
NARROW = {"bfloat16": R.narrow_bf16, "float16": R.narrow_f16}
NARROW_SR = {"bfloat16": R.narrow_bf16_sr, "float16": R.narrow_f16_sr}
# around the converter's block (256) and the SIMD widths' tails
SIZES = (0, 1, 7, 255, 256, 257, 1500)
STEPS = 3
ROWS = [pytest.param(info, id=info.name) for info in registry.OPTIMIZERS]


class Layout(NamedTuple):
    param: str
    grad: str
    state: str
    copy: Optional[str] = None

    @property
    def id(self):
        return f"p={self.param},g={self.grad},s={self.state}" + (
            f",copy={self.copy}" if self.copy else "")


def _layouts():
    """Every layout MIXING allows with a 16-bit array in it (the others run the float32 or
    float64 kernels directly)."""
    out = []
    for p, mix in _registry.MIXING.items():
        for g, s, c in itertools.product(mix["grad"], mix["state"], (None,) + mix["copy"]):
            if {p, g, s, c} & set(HALF):
                out.append(Layout(p, g, s, c))
    return out


LAYOUTS = _layouts()
HALF_PARAM = [lay for lay in LAYOUTS if lay.param in HALF]


# ------------------------------------------------------------------------------ helpers

def widen(a):
    """A float32 copy of a 16-bit array (the same array otherwise)."""
    a = np.asarray(a)
    if a.dtype.name not in HALF:
        return a
    return WIDEN[a.dtype.name](a.view(np.uint16)).reshape(a.shape)


def store(x, out, key=None):
    """Round float32 ``x`` into 16-bit ``out`` (nearest even; stochastic with ``key``)."""
    name = out.dtype.name
    bits = NARROW[name](x) if key is None else NARROW_SR[name](x, key, 0)
    out.view(np.uint16)[...] = bits.reshape(out.shape)


def narrowed(x, dtype):
    """float32 ``x`` rounded to nearest in ``dtype`` (a new array)."""
    out = np.empty(np.shape(x), DT[dtype])
    if dtype in HALF:
        store(np.asarray(x, np.float32), out)
    else:
        out[...] = x
    return out


def start(info, hyper, layout, n, seed):
    """Random param, grads and states (as the row samples them) in ``layout``'s dtypes;
    the per-tensor scalar states in float32."""
    rng = np.random.default_rng(seed)
    p = narrowed(rng.standard_normal(n).astype(np.float32), layout.param)
    states = random_states(info, hyper, rng, n, np.float32)
    scalars = set(info.scalar_names)
    states = {k: v if k in scalars else narrowed(v, layout.state) for k, v in states.items()}
    grads = [narrowed(draw(info.grad_sample, rng, n, np.float32), layout.grad)
             for _ in range(STEPS)]
    copy = None if layout.copy is None else np.zeros(n, DT[layout.copy])
    return p, states, grads, copy


def copied(p, states, copy):
    return (p.copy(), {k: np.array(v, copy=True) for k, v in states.items()},
            None if copy is None else copy.copy())


def call(info, fn, p, g, states, hyper, step, **storage):
    """``info.call`` with the 16-bit keywords (param_copy, rounding, seed)."""
    if not storage:
        return info.call(fn, p, g, states, hyper, step)
    if info.kernel_call is not None:
        raise AssertionError(f"{info.name}: a kernel_call row takes no 16-bit keywords")
    kw = info.kernel_hyper(hyper)
    kw.update({n: states[n] for n in info.optional if n in states})
    if step is not None and info.kernel_step != "none":
        kw["step"] = step
    return fn(p, g, *(states[n] for n in info.arrays[2:]), **kw, **storage)


def simulate(info, hyper, step, p, g, states, copy=None, rounding="nearest", seed=0):
    """One step as the converter defines it: widen every 16-bit array, run the float32
    kernel, round every 16-bit output back (a 16-bit param stochastically when asked, with
    the functional's key), the param_copy from the float32 param."""
    scalars = set(info.scalar_names)
    wp = widen(p)
    wide = {k: v if k in scalars else widen(v) for k, v in states.items()}
    info.call(info.kernel, wp, widen(g), wide, hyper, step)
    for k, v in states.items():
        if v.dtype.name in HALF:
            store(wide[k], v)
    if p.dtype.name in HALF:
        key = R.sr_key(seed, step or 0, 0) if rounding == "stochastic" else None
        store(wp, p, key)
    if copy is not None:
        store(p, copy)


def same_bits(a, b, where):
    """The same dtype and bits; NaN compared as NaN (any payload)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, where
    nan = np.isnan(widen(a)).reshape(-1)
    assert np.array_equal(nan, np.isnan(widen(b)).reshape(-1)), \
        f"{where}: NaN in different places"
    uint = {2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize]
    differ = np.count_nonzero(a.reshape(-1).view(uint)[~nan] != b.reshape(-1).view(uint)[~nan])
    assert not differ, f"{where}: {differ} elements differ"


def run_both(info, hyper, use_step, layout, n, seed, rounding="nearest", sr_seed=0):
    """The kernel on ``layout`` against the simulation, step after step; returns the
    kernel's param."""
    p, states, grads, copy = start(info, hyper, layout, n, seed)
    sp, sstates, scopy = copied(p, states, copy)
    storage = {} if layout.copy is None and rounding == "nearest" else dict(
        param_copy=copy, rounding=rounding, seed=sr_seed)
    grads_before = [g.copy() for g in grads]
    with np.errstate(all="ignore"):     # a state rounded past a rule's relation: NaN
        for t, g in enumerate(grads, 1):
            step = t if use_step else None
            assert call(info, info.kernel, p, g, states, hyper, step, **storage) is None
            simulate(info, hyper, step, sp, g, sstates, scopy, rounding, sr_seed)
            where = f"{info.name} {layout.id} n={n} t={t}"
            same_bits(p, sp, f"param, {where}")
            for k in states:
                assert states[k].dtype == (np.float32 if k in info.scalar_names
                                           else DT[layout.state]), k
                same_bits(states[k], sstates[k], f"{k}, {where}")
            if copy is not None:
                same_bits(copy, scopy, f"param_copy, {where}")
    assert all(g.tobytes() == g0.tobytes() for g, g0 in zip(grads, grads_before)), \
        "a grad was modified"
    return p


# ------------------------------------------------------------------------------ exactness

@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda lay: lay.id)
@pytest.mark.parametrize("info", ROWS)
def test_every_layout_is_the_float32_kernel_rounded(info, layout):
    """The option set with most branches, every size, a few steps."""
    hyper = info.richest()
    for n in SIZES:
        run_both(info, hyper, step_variants(info)[0], layout, n, seed=n)


def _option_cases():
    cases, ids = [], []
    for info in registry.OPTIMIZERS:
        for i, h in enumerate(info.option_sets()):
            for use_step in step_variants(info):
                layout = LAYOUTS[len(cases) % len(LAYOUTS)]
                cases.append((info, h, use_step, layout))
                ids.append(f"{info.name}-{registry.set_id(h)}-step={use_step}-{layout.id}")
    return cases, ids


OPTION_CASES, OPTION_IDS = _option_cases()


@pytest.mark.parametrize("info, hyper, use_step, layout", OPTION_CASES, ids=OPTION_IDS)
def test_every_option_set_is_the_float32_kernel_rounded(info, hyper, use_step, layout):
    """Every option set (each its own unswitched loop), in a layout taken in turn, and in
    all-bfloat16 and all-float16, across a block boundary."""
    for lay in {layout, Layout("bfloat16", "bfloat16", "bfloat16"),
                Layout("float16", "float16", "float16")}:
        run_both(info, hyper, use_step, lay, 515, seed=3)


def test_layouts_cover_mixing():
    """Every 16-bit role MIXING names is in some layout (the table, not a copy of it)."""
    for p, mix in _registry.MIXING.items():
        for role in ("grad", "state", "copy"):
            for d in mix[role]:
                if {p, d} & set(HALF):
                    assert any(lay.param == p and getattr(lay, role) == d
                               for lay in LAYOUTS), (p, role, d)
    assert len(LAYOUTS) == 30


# ------------------------------------------------------------------------------ stochastic

@pytest.mark.parametrize("layout", HALF_PARAM, ids=lambda lay: lay.id)
@pytest.mark.parametrize("info", ROWS)
def test_stochastic_rounding_is_the_mirror_with_the_key(info, layout):
    """Bit for bit the mirror's stochastic rounding with key fa_sr_key(seed, step or 0, 0),
    the element index counted from the array's start (not the block's)."""
    hyper = info.richest()
    for use_step in step_variants(info):
        for n in SIZES:
            run_both(info, hyper, use_step, layout, n, seed=n, rounding="stochastic",
                     sr_seed=2**63 + 12345 + n)


@pytest.mark.parametrize("info", ROWS)
def test_stochastic_rounding_is_not_nearest(info):
    """Against a vacuous check: stochastic and nearest rounding differ, and so do seeds."""
    layout = Layout("bfloat16", "bfloat16", "bfloat16")
    use_step = step_variants(info)[0]
    nearest = run_both(info, info.richest(), use_step, layout, 1500, seed=1)
    sr = [run_both(info, info.richest(), use_step, layout, 1500, seed=1,
                   rounding="stochastic", sr_seed=s) for s in (1, 2)]
    assert nearest.tobytes() != sr[0].tobytes() != sr[1].tobytes()


def neighbours(x, dtype):
    """The 16-bit values just below and above float32 ``x`` in magnitude (equal where
    ``x`` is representable), as float32."""
    bits = NARROW[dtype](x).astype(np.int32)
    near = WIDEN[dtype](bits.astype(np.uint16))
    exact = near == x
    up = np.abs(near) > np.abs(x)         # nearest is the upper neighbour in magnitude
    other = np.where(exact, bits, np.where(up, bits - 1, bits + 1)).astype(np.uint16)
    far = WIDEN[dtype](other)
    lo = np.where(np.abs(near) <= np.abs(far), near, far)
    hi = np.where(np.abs(near) <= np.abs(far), far, near)
    return lo, hi, exact


SEEDS = 200


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("info", ROWS)
def test_stochastic_rounding_is_unbiased(info, dtype):
    """One step from a fixed start under SEEDS seeds: every result is one of the two
    neighbours of the float32 value (that value itself where it is representable), and the
    mean is the float32 value within 4 standard errors over all the inexact elements
    together, and within 5 element by element where the normal approximation holds (of
    hundreds of elements, drawn from a skewed binomial, some pass 4 by chance; the draws
    were checked uniform by Kolmogorov-Smirnov per element and per seed)."""
    hyper, use_step = info.richest(), step_variants(info)[0]
    layout = Layout(dtype, dtype, dtype)
    p, states, grads, _ = start(info, hyper, layout, 600, seed=7)
    step = 1 if use_step else None
    wp, wide = widen(p), {k: widen(v) if k not in info.scalar_names else np.array(v)
                          for k, v in states.items()}
    with np.errstate(all="ignore"):
        info.call(info.kernel, wp, widen(grads[0]), wide, hyper, step)
    finite = np.isfinite(wp)
    x = wp[finite]
    results = np.empty((SEEDS, x.size), np.float32)
    for s in range(SEEDS):
        q, st, _ = copied(p, states, None)
        with np.errstate(all="ignore"):
            call(info, info.kernel, q, grads[0], st, hyper, step, rounding="stochastic",
                 seed=s)
        results[s] = widen(q)[finite]
    lo, hi, exact = neighbours(x, dtype)
    assert np.all((results == lo) | (results == hi)), "a result is not a neighbour"
    assert np.all(results[:, exact] == x[exact]), "a representable value moved"
    inexact = ~exact
    assert inexact.sum() > 100, "too few inexact values to say anything"
    frac = ((x[inexact] - lo[inexact]) / (hi[inexact] - lo[inexact])).astype(np.float64)
    ups = (results[:, inexact] == hi[inexact]).sum(axis=0)
    var = SEEDS * frac * (1 - frac)
    z_all = (ups.sum() - SEEDS * frac.sum()) / np.sqrt(var.sum())
    assert abs(z_all) < 4, f"biased over all elements: z = {z_all:.2f}"
    many = var > 9          # the normal approximation holds
    z = (ups[many] - SEEDS * frac[many]) / np.sqrt(var[many])
    assert many.sum() > 50 and np.all(np.abs(z) < 5), \
        f"biased elements: max |z| = {np.abs(z).max():.2f}"


# ------------------------------------------------------------------------------ reference

def ulps(dtype):
    """4 ulps of ``dtype``, relative (bfloat16 has 8 significant bits, float16 11)."""
    return 4 * 2.0 ** -(7 if dtype == "bfloat16" else 10)


@pytest.mark.parametrize("layout", LAYOUTS[::3] + HALF_PARAM, ids=lambda lay: lay.id)
@pytest.mark.parametrize("info", ROWS)
def test_matches_the_16bit_reference(info, layout):
    """fastadam.reference with 16-bit arrays: the kernel's bits where the row's float32
    kernel gives the reference's bits, else within a few ulps of the 16-bit type (the
    float32 rules differ by an ulp of float32, which can cross a rounding boundary; steps
    carry it on). Stochastic rounding as well for a 16-bit param."""
    hyper, use_step = info.richest(), step_variants(info)[0]
    bitwise = info.bitwise(info.full(hyper))
    for rounding in (("nearest", "stochastic") if layout.param in HALF else ("nearest",)):
        p, states, grads, copy = start(info, hyper, layout, 1500, seed=11)
        rp, rstates, rcopy = copied(p, states, copy)
        with np.errstate(all="ignore"):
            for t, g in enumerate(grads, 1):
                step = t if use_step else None
                for fn, q, st, c in ((info.kernel, p, states, copy),
                                     (info.reference, rp, rstates, rcopy)):
                    call(info, fn, q, g, st, hyper, step, param_copy=c, rounding=rounding,
                         seed=99)
        pairs = [("param", p, rp)] + [(k, states[k], rstates[k]) for k in states]
        if copy is not None:
            pairs.append(("param_copy", copy, rcopy))
        for name, a, b in pairs:
            where = f"{name}, {info.name} {layout.id} {rounding}"
            assert a.dtype == b.dtype, where
            if bitwise:
                same_bits(a, b, where)
                continue
            wa, wb = widen(a).astype(np.float64), widen(b).astype(np.float64)
            assert np.array_equal(np.isnan(wa), np.isnan(wb)), where
            ok = ~np.isnan(wb)
            scale = float(np.max(np.abs(wb[ok]))) if ok.any() else 0.0
            rtol = ulps(a.dtype.name) if a.dtype.name in HALF else 1e-5
            np.testing.assert_allclose(wa[ok], wb[ok], rtol=rtol, atol=1e-5 * scale,
                                       err_msg=where)


# ------------------------------------------------------------------------------ refused

def _refused(info):
    """(what, layout or a maker of the arrays, storage keywords, exception, argument
    named) for ``info``'s rich option set."""
    first = info.state_names(info.rich())
    first = [n for n in first if n not in info.scalar_names]
    cases = [
        ("float64 param, bfloat16 grad", Layout("float64", "bfloat16", "float64"), {},
         TypeError, "grad"),
        ("float64 param, float16 states", Layout("float64", "float64", "float16"), {},
         TypeError, first[0]),
        ("bfloat16 param, float16 grad", Layout("bfloat16", "float16", "bfloat16"), {},
         TypeError, "grad"),
        ("float16 param, float64 grad", Layout("float16", "float64", "float16"), {},
         TypeError, "grad"),
        ("bfloat16 param, float32 states", Layout("bfloat16", "bfloat16", "float32"), {},
         TypeError, first[0]),
        ("float16 param, bfloat16 states", Layout("float16", "float32", "bfloat16"), {},
         TypeError, first[0]),
        ("float32 param, float64 states", Layout("float32", "bfloat16", "float64"), {},
         TypeError, first[0]),
        ("param_copy on a bfloat16 param", Layout("bfloat16", "bfloat16", "bfloat16",
                                                   "float16"), {}, TypeError, "param_copy"),
        ("param_copy on a float16 param", Layout("float16", "float32", "float16",
                                                  "float16"), {}, TypeError, "param_copy"),
        ("param_copy on a float64 param", Layout("float64", "float64", "float64",
                                                  "bfloat16"), {}, TypeError, "param_copy"),
        ("float32 param_copy", Layout("float32", "float32", "float32", "float32"), {},
         TypeError, "param_copy"),
        ("float64 param_copy", Layout("float32", "bfloat16", "bfloat16", "float64"), {},
         TypeError, "param_copy"),
        ("stochastic, float32 param", Layout("float32", "bfloat16", "bfloat16"),
         dict(rounding="stochastic"), TypeError, "rounding"),
        ("stochastic, float32 param with a copy", Layout("float32", "float32", "float32",
                                                         "bfloat16"),
         dict(rounding="stochastic"), TypeError, "rounding"),
        ("stochastic, float64 param", Layout("float64", "float64", "float64"),
         dict(rounding="stochastic"), TypeError, "rounding"),
    ]
    if len(first) > 1:
        for a, b in (("bfloat16", "float16"), ("float32", "bfloat16"), ("float16", "float32")):
            cases.append((f"states {a} and {b}", (Layout("float32", "float32", a), b), {},
                          TypeError, first[1]))
    bf16 = Layout("bfloat16", "bfloat16", "bfloat16")
    for value, exc in (("Nearest", ValueError), ("sr", ValueError), ("", ValueError),
                       ("stochastic ", ValueError), (None, TypeError), (1, TypeError),
                       (b"nearest", TypeError)):
        cases.append((f"rounding={value!r}", bf16, dict(rounding=value), exc, "rounding"))
    for value, exc in ((-1, ValueError), (2**64, ValueError), (1.5, TypeError),
                       ("1", TypeError), (True, TypeError), (None, TypeError),
                       (np.float64(1.0), TypeError)):
        for rounding in ("nearest", "stochastic"):
            cases.append((f"seed={value!r} {rounding}", bf16,
                          dict(rounding=rounding, seed=value), exc, "seed"))
    return cases


REFUSED = [(info, *case) for info in registry.OPTIMIZERS for case in _refused(info)]


@pytest.mark.parametrize("api", ["kernel", "reference"])
@pytest.mark.parametrize("info, what, layout, storage, exc, arg", REFUSED,
                         ids=[f"{c[0].name}-{c[1]}" for c in REFUSED])
def test_refused_combinations_name_the_argument_and_write_nothing(info, what, layout,
                                                                  storage, exc, arg, api):
    hyper, use_step = info.rich(), step_variants(info)[0]
    second = None
    if isinstance(layout, tuple) and not isinstance(layout, Layout):
        layout, second = layout
    p, states, grads, copy = start(info, hyper, layout, 9, seed=1)
    if second is not None:      # the second state in another dtype
        name = [n for n in info.state_names(hyper) if n not in info.scalar_names][1]
        states[name] = narrowed(widen(states[name]).astype(np.float32), second)
    arrays = [p, grads[0], copy] + list(states.values())
    before = [None if a is None else a.tobytes() for a in arrays]
    kw = dict(storage)
    if copy is not None:
        kw["param_copy"] = copy
    with pytest.raises(exc, match=rf"^Invalid {re.escape(arg)}\b"):
        call(info, getattr(info, api), p, grads[0], states, hyper, 1 if use_step else None,
             **(kw or dict(rounding="nearest")))
    after = [None if a is None else a.tobytes() for a in arrays]
    assert before == after, "an array was written"


# ------------------------------------------------------------------------------ policy

POLICY = [dict(nonfinite="skip"), dict(nonfinite="raise"), dict(max_grad_norm=0.5),
          dict(nonfinite="skip", max_grad_norm=2.0)]


@pytest.mark.parametrize("grad_dtype", HALF)
@pytest.mark.parametrize("param_dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("info", ROWS)
def test_grad_policy_with_16bit_grads(info, param_dtype, grad_dtype):
    """The NumPy classes' nonfinite check, clipping and grad_scale read 16-bit grads (the
    pre-pass fa_sumsq_bf16/f16) as they read float32 grads of the same values: the same
    results, norms, skips and errors."""
    if param_dtype in HALF and grad_dtype != param_dtype:
        grad_dtype = param_dtype            # a 16-bit param takes its own dtype or float32
    rng = np.random.default_rng(4)
    sizes = (513, 7, 1)
    p0 = [narrowed(rng.standard_normal(n).astype(np.float32), param_dtype) for n in sizes]
    grads = [[narrowed(rng.standard_normal(n).astype(np.float32) * 3, grad_dtype)
              for n in sizes] for _ in range(4)]
    grads[1][0][100] = np.nan               # step 2: a NaN; step 3: an inf
    grads[2][2][0] = np.inf
    for policy in POLICY:
        runs = {}
        for kind in ("16-bit", "float32"):
            params = [a.copy() for a in p0]
            opt = info.cls(params, **info.rich(), **policy)
            out = []
            for t, gs in enumerate(grads):
                gs = gs if kind == "16-bit" else [widen(g).copy() for g in gs]
                scale = 4.0 if t == 3 else None
                try:
                    with np.errstate(all="ignore"):
                        out.append(opt.step(gs, grad_scale=scale))
                except FloatingPointError as e:
                    out.append(str(e))
                out.append(repr(opt.grad_norm))      # (nan == nan: by repr)
                out.extend(a.tobytes() for a in params)
                out.extend(v.tobytes() for i in range(len(params))
                           for k, v in sorted(opt.state[i].items()))
            runs[kind] = out
        assert runs["16-bit"] == runs["float32"], policy
        assert any(x is True for x in runs["float32"]), policy
