"""8-bit states in the functional kernels, from tests/optimizers.py's rows and
fastadam/_registry.py (each state's map, MIXING's ``state8``) alone.

The contract (fastadam/quant.py, docs/user-guide.md#eight-bit): a step with 8-bit states
(``fastadam.quant.QuantizedState``) is the float32 kernel run on the dequantized states (and
on the widened 16-bit param and grad), each state then quantized back with
``quant.quantize(new_state, qmap)`` and a 16-bit param rounded as with 16-bit storage. So:

- the kernel against that simulation, bit for bit (codes, absmax, param), for every option
  set and every param/grad layout MIXING allows 8-bit states with, at sizes around the
  256-element block, over several steps;
- the kernel against fastadam.reference taking the same QuantizedState, bit for bit where
  the row's float32 kernel gives the reference's bits (``info.bitwise``), else within the
  float32 rule's accuracy (one code either way where a value sits on a code's edge);
- every SIMD path and 1 or 2 threads: the same bits;
- bad 8-bit states refused, naming the argument, with nothing written (kernel and
  reference alike);
- the kernels' bucket table (``quant.table_code``) equals the nearest-code rule around every
  threshold and over a random sample, and the maps are bitsandbytes' own.
"""

import re

import numpy as np
import pytest

import fastadam
from fastadam import _core, _registry, quant
from fastadam import _rounding as R
import optimizers as registry
# the 16-bit storage helpers: widen a 16-bit array, round float32 into one
from test_half_kernels import HALF, narrowed, store, widen
from test_registry_kernels import draw, random_states, step_variants

SIZES = (0, 1, 255, 256, 257, 4097)
STEPS = 3
ROWS = [pytest.param(info, id=info.name) for info in registry.OPTIMIZERS]
# (param, grad) layouts with 8-bit states: every param dtype MIXING gives them, with each of
# its grad dtypes
LAYOUTS = [(p, g) for p, mix in _registry.MIXING.items() if mix["state8"]
           for g in mix["grad"]]


def signed(info, name):
    """Whether state ``name`` of row ``info`` takes the signed map (the registry's)."""
    entry = _registry.by_name(info.kernel_name[:-1])
    return {s.name: s.qmap for s in entry.states}[name] == "signed"


# ------------------------------------------------------------------------------ helpers

def start(info, hyper, layout, n, seed):
    """Random param and grads in ``layout``'s dtypes, and the row's random states quantized
    (each with its registry map); scalar states float32 0-d arrays."""
    rng = np.random.default_rng(seed)
    pdt, gdt = layout
    p = narrowed(rng.standard_normal(n).astype(np.float32), pdt)
    states = random_states(info, hyper, rng, n, np.float32)
    scalars = set(info.scalar_names)
    states = {k: v if k in scalars else quant.QuantizedState.from_float(v, signed(info, k))
              for k, v in states.items()}
    grads = [narrowed(draw(info.grad_sample, rng, n, np.float32), gdt) for _ in range(STEPS)]
    return p, states, grads


def copied(p, states):
    return p.copy(), {k: v.copy() if type(v) is quant.QuantizedState
                      else np.array(v, copy=True) for k, v in states.items()}


def call(info, fn, p, g, states, hyper, step, **storage):
    if not storage:
        return info.call(fn, p, g, states, hyper, step)
    kw = info.kernel_hyper(hyper)
    kw.update({n: states[n] for n in info.optional if n in states})
    if step is not None and info.kernel_step != "none":
        kw["step"] = step
    return fn(p, g, *(states[n] for n in info.arrays[2:]), **kw, **storage)


def simulate(info, hyper, step, p, g, states, rounding="nearest", seed=0):
    """The contract: dequantize, the float32 kernel, quantize back; a 16-bit param rounded
    (stochastically with the functional's key when asked)."""
    wp = widen(p) if p.dtype.name in HALF else p
    wide = {k: v.dequantize() if type(v) is quant.QuantizedState else v
            for k, v in states.items()}
    info.call(info.kernel, wp, widen(g), wide, hyper, step)
    for k, v in states.items():
        if type(v) is quant.QuantizedState:
            v.codes[...], v.absmax[...] = quant.quantize(wide[k], v.qmap)
    if p.dtype.name in HALF:
        store(wp, p, R.sr_key(seed, step or 0, 0) if rounding == "stochastic" else None)


def same_bits(a, b, where):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, where
    if a.dtype == np.uint8:
        differ = np.count_nonzero(a != b)
    else:
        nan = np.isnan(widen(a)).reshape(-1)
        assert np.array_equal(nan, np.isnan(widen(b)).reshape(-1)), \
            f"{where}: NaN in different places"
        uint = {2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize]
        differ = np.count_nonzero(a.reshape(-1).view(uint)[~nan]
                                  != b.reshape(-1).view(uint)[~nan])
    assert not differ, f"{where}: {differ} elements differ"


def same_state(a, b, where):
    """Two states (QuantizedState or 0-d scalar arrays), bit for bit."""
    if type(a) is quant.QuantizedState:
        same_bits(a.codes, b.codes, f"{where}.codes")
        same_bits(a.absmax, b.absmax, f"{where}.absmax")
        same_bits(a.qmap, b.qmap, f"{where}.qmap")
    else:
        same_bits(a, b, where)


def run(info, hyper, use_step, layout, n, seed, rounding="nearest", sr_seed=0,
        reference=True):
    """The kernel against the simulation (bits) and the reference (bits where the row is
    bitwise, else close), step after step."""
    p, states, grads = start(info, hyper, layout, n, seed)
    sp, sstates = copied(p, states)
    rp, rstates = copied(p, states)
    storage = {} if rounding == "nearest" else dict(rounding=rounding, seed=sr_seed)
    bitwise = info.bitwise(info.full(hyper))
    grads0 = [g.copy() for g in grads]
    with np.errstate(all="ignore"):
        for t, g in enumerate(grads, 1):
            step = t if use_step else None
            where = f"{info.name} {registry.set_id(hyper)} p={layout[0]} g={layout[1]} " \
                    f"n={n} t={t} {rounding}"
            assert call(info, info.kernel, p, g, states, hyper, step, **storage) is None
            simulate(info, hyper, step, sp, g, sstates, rounding, sr_seed)
            same_bits(p, sp, f"param, {where}")
            for k in states:
                same_state(states[k], sstates[k], f"{k}, {where}")
            if not reference:
                continue
            call(info, info.reference, rp, g, rstates, hyper, step, **storage)
            if bitwise:
                same_bits(p, rp, f"param vs reference, {where}")
                for k in states:
                    same_state(states[k], rstates[k], f"{k} vs reference, {where}")
            else:
                close(info, p, rp, states, rstates, f"vs reference, {where}")
                rp, rstates = copied(p, states)     # each step from the kernel's
    assert all(a.tobytes() == b.tobytes() for a, b in zip(grads, grads0)), "a grad changed"


def close(info, p, rp, states, rstates, where):
    """A float32 rule an ulp away: the param within float32 accuracy, and each code at most
    one away (a value on a code's edge), rarely."""
    a, b = widen(p).astype(np.float64), widen(rp).astype(np.float64)
    assert np.array_equal(np.isnan(a), np.isnan(b)), where
    ok = ~np.isnan(b)
    scale = float(np.max(np.abs(b[ok]))) if ok.any() else 0.0
    rtol = 2 ** -6 if p.dtype.name in HALF else 1e-5
    np.testing.assert_allclose(a[ok], b[ok], rtol=rtol, atol=1e-5 * scale, err_msg=where)
    for k, s in states.items():
        if type(s) is not quant.QuantizedState:
            continue
        assert np.array_equal(np.isnan(s.absmax), np.isnan(rstates[k].absmax)), where
        d = np.abs(s.codes.astype(int) - rstates[k].codes.astype(int))
        assert d.max(initial=0) <= 1 and np.count_nonzero(d) <= max(2, d.size // 100), \
            f"{k} codes, {where}"


# ------------------------------------------------------------------------------ exactness

def _option_cases():
    cases, ids = [], []
    for info in registry.OPTIMIZERS:
        for h in info.option_sets():
            for use_step in step_variants(info):
                layout = LAYOUTS[len(cases) % len(LAYOUTS)]
                cases.append((info, h, use_step, layout))
                ids.append(f"{info.name}-{registry.set_id(h)}-step={use_step}-"
                           f"p={layout[0]},g={layout[1]}")
    return cases, ids


OPTION_CASES, OPTION_IDS = _option_cases()


@pytest.mark.parametrize("info, hyper, use_step, layout", OPTION_CASES, ids=OPTION_IDS)
def test_every_option_set_is_the_float32_kernel_quantized(info, hyper, use_step, layout):
    """Every option set of every row, in a layout taken in turn, across the block sizes."""
    for n in SIZES:
        run(info, hyper, use_step, layout, n, seed=n, reference=n in (0, 257, 4097))


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda lay: f"p={lay[0]},g={lay[1]}")
@pytest.mark.parametrize("info", ROWS)
def test_every_layout_is_the_float32_kernel_quantized(info, layout):
    """The option set with most branches in every layout; stochastic rounding for 16-bit
    params."""
    hyper, use_step = info.richest(), step_variants(info)[0]
    for n in (1, 257, 4097):
        run(info, hyper, use_step, layout, n, seed=n + 1)
        if layout[0] in HALF:
            run(info, hyper, use_step, layout, n, seed=n + 2, rounding="stochastic",
                sr_seed=2 ** 63 + n)


def test_a_zero_state_and_a_nan():
    """From zeros (codes 0, absmax 0) a zero gradient keeps a zero block code 0 with absmax
    0; a NaN gradient element makes its block's absmax NaN (the other blocks unchanged)."""
    n = 600
    p = np.ones(n, np.float32)
    g = np.zeros(n, np.float32)
    g[300:] = 1.0
    g[10] = np.nan
    m, v = quant.QuantizedState.zeros(n), quant.QuantizedState.zeros(n, signed=False)
    rp, rm, rv = p.copy(), m.copy(), v.copy()
    with np.errstate(all="ignore"):
        fastadam.adam_(p, g, m, v, step=1, bias_correction=False)
        fastadam.reference.adam_(rp, g, rm, rv, step=1, bias_correction=False)
    assert np.isnan(m.absmax[0]) and np.isnan(v.absmax[0])
    assert m.absmax[2] > 0 and np.all(m.codes[300:512] == np.argmax(m.qmap))
    g[10] = 0.0
    m2, v2 = quant.QuantizedState.zeros(n), quant.QuantizedState.zeros(n, signed=False)
    fastadam.adam_(np.ones(n, np.float32), g, m2, v2, step=1)
    assert m2.absmax[0] == 0 and np.all(m2.codes[:256] == 0), "a zero block"
    for a, b in ((m, rm), (v, rv)):
        same_state(a, b, "nan step")
    same_bits(p, rp, "param")


def test_nan_block_codes_follow_the_rule():
    """A block with a negative NaN (0xffc00000, the default NaN of an invalid operation) at
    element 3 (the vector loop) and 299 (a scalar tail): the absmax is NaN, and which NaN
    y = x * (1/absmax) is depends on which operand a multiply returns (once the baseline
    path and the AVX paths differed here). The rule gives a NaN block code 0 everywhere, on
    every path and in quant.quantize."""
    n = 300
    g = np.ones(n, np.float32)
    g[[3, 299]] = np.array(0xFFC00000, np.uint32).view(np.float32)
    with np.errstate(all="ignore"):
        want, _ = quant.quantize(g, quant.SIGNED_MAP)
    got = {}
    old = fastadam.get_simd_path()
    try:
        for path in fastadam.available_simd_paths():
            fastadam.set_simd_path(path)
            buf = quant.QuantizedState.zeros(n)
            with np.errstate(all="ignore"):
                fastadam.sgd_(np.zeros(n, np.float32), g, momentum_buffer=buf, momentum=0.9,
                              step=1)
            got[path] = buf.codes[[3, 299]].tolist()
    finally:
        fastadam.set_simd_path(old)
    assert want[:256].max() == 0 and want[256:].max() == 0, "two NaN blocks: code 0"
    assert all(c == want[[3, 299]].tolist() for c in got.values()), (got, want[[3, 299]])


# ------------------------------------------------------------------------------ paths, threads

def _simd_thread_run(info, hyper, use_step, layout, n):
    p, states, grads = start(info, hyper, layout, n, seed=5)
    with np.errstate(all="ignore"):
        for t, g in enumerate(grads, 1):
            call(info, info.kernel, p, g, states, hyper, t if use_step else None)
    def canonical(a):       # NaN as NaN (a NaN's sign and payload aside, as elsewhere)
        w = np.asarray(widen(a), np.float32)
        return np.where(np.isnan(w), np.float32(np.nan), w).tobytes()

    out = [canonical(p)]
    for k in sorted(states):
        s = states[k]
        out += [s.codes.tobytes(), canonical(s.absmax)] \
            if type(s) is quant.QuantizedState else [canonical(s)]
    return out


@pytest.mark.parametrize("info", ROWS)
def test_simd_paths_and_threads_bit_identical(info):
    """Every SIMD path, one thread and two (from 64 elements per thread on), the same bits:
    every option set at one layout, the richest at every layout."""
    cases = [(h, u, LAYOUTS[i % len(LAYOUTS)]) for i, h in enumerate(info.option_sets())
             for u in step_variants(info)[:1]]
    cases += [(info.richest(), step_variants(info)[0], lay) for lay in LAYOUTS]
    paths = fastadam.available_simd_paths()
    old_path, old_threads = fastadam.get_simd_path(), fastadam.get_num_threads()
    old_min = _core._set_min_per_thread(0)
    try:
        fastadam.set_num_threads(2)
        for hyper, use_step, layout in cases:
            for n in (257, 4097):
                results = {}
                for path in paths:
                    fastadam.set_simd_path(path)
                    for threads, min_per in ((1, old_min), (2, 64)):
                        _core._set_min_per_thread(min_per)
                        fastadam.set_num_threads(threads)
                        results[path, threads] = _simd_thread_run(info, hyper, use_step,
                                                                   layout, n)
                first = next(iter(results))
                for key, res in results.items():
                    assert res == results[first], \
                        f"{key} vs {first}: {registry.set_id(hyper)} {layout} n={n}"
    finally:
        fastadam.set_simd_path(old_path)
        fastadam.set_num_threads(old_threads)
        _core._set_min_per_thread(old_min)


# ------------------------------------------------------------------------------ refused

def _adam_start(n=300, pdt=np.float32):
    rng = np.random.default_rng(0)
    p = rng.standard_normal(n).astype(pdt)
    g = rng.standard_normal(n).astype(pdt)
    m = quant.QuantizedState.from_float(rng.standard_normal(n))
    v = quant.QuantizedState.from_float(np.abs(rng.standard_normal(n)), signed=False)
    return p, g, m, v


def _replace(q, **kw):
    return q._replace(**kw)


def _bad_cases():
    """(what, make() -> (p, g, exp_avg, exp_avg_sq), exception, argument named)."""
    def base(**change):
        def make():
            p, g, m, v = _adam_start()
            for key, fn in change.items():
                if key == "m":
                    m = fn(p, g, m)
                elif key == "v":
                    v = fn(p, g, v)
                elif key == "p":
                    p = fn(p, g, m)
            return p, g, m, v
        return make

    def readonly(a):
        a = a.copy()
        a.flags.writeable = False
        return a

    def not_increasing(q):
        m = q.copy()
        m[[10, 11]] = m[[11, 10]]
        return m

    def shared_codes(p, g, m):
        return _replace(m, codes=p.view(np.uint8)[:p.size])

    def shared_grad_codes(p, g, m):
        return _replace(m, codes=g.view(np.uint8)[-g.size:])

    def shared_absmax(p, g, m):
        return _replace(m, absmax=g[:m.absmax.size])

    def shared_states():
        p, g, m, v = _adam_start()
        return p, g, m, _replace(v, codes=m.codes)

    return [
        ("float64 param", lambda: (lambda p, g, m, v: (p.astype(np.float64),
                                                       g.astype(np.float64), m, v))(
            *_adam_start()), TypeError, "exp_avg"),
        ("codes int8", base(m=lambda p, g, m: _replace(m, codes=m.codes.view(np.int8))),
         TypeError, "exp_avg.codes"),
        ("codes float32", base(v=lambda p, g, v: _replace(v, codes=v.codes.astype(np.float32))),
         TypeError, "exp_avg_sq.codes"),
        ("codes wrong shape", base(m=lambda p, g, m: _replace(m, codes=m.codes[:-1].copy())),
         ValueError, "exp_avg.codes"),
        ("codes 2-d", base(m=lambda p, g, m: _replace(m, codes=m.codes.reshape(3, 100))),
         ValueError, "exp_avg.codes"),
        ("codes read-only", base(m=lambda p, g, m: _replace(m, codes=readonly(m.codes))),
         ValueError, "exp_avg.codes"),
        ("absmax short", base(m=lambda p, g, m: _replace(m, absmax=m.absmax[:1].copy())),
         ValueError, "exp_avg.absmax"),
        ("absmax long", base(v=lambda p, g, v: _replace(
            v, absmax=np.ones(v.absmax.size + 1, np.float32))), ValueError, "exp_avg_sq.absmax"),
        ("absmax float64", base(m=lambda p, g, m: _replace(m, absmax=m.absmax.astype(
            np.float64))), TypeError, "exp_avg.absmax"),
        ("absmax read-only", base(m=lambda p, g, m: _replace(m, absmax=readonly(m.absmax))),
         ValueError, "exp_avg.absmax"),
        ("qmap float64", base(m=lambda p, g, m: _replace(m, qmap=m.qmap.astype(np.float64))),
         TypeError, "exp_avg.qmap"),
        ("qmap 255 entries", base(m=lambda p, g, m: _replace(m, qmap=m.qmap[:255].copy())),
         ValueError, "exp_avg.qmap"),
        ("qmap not increasing", base(v=lambda p, g, v: _replace(v, qmap=not_increasing(v.qmap))),
         ValueError, "exp_avg_sq.qmap"),
        ("qmap beyond 1", base(m=lambda p, g, m: _replace(m, qmap=m.qmap * np.float32(2))),
         ValueError, "exp_avg.qmap"),
        ("8-bit then array", base(v=lambda p, g, v: v.dequantize()), TypeError, "exp_avg_sq"),
        ("array then 8-bit", base(m=lambda p, g, m: m.dequantize()), TypeError, "exp_avg_sq"),
        ("codes share the param", base(m=shared_codes), ValueError, "exp_avg"),
        ("codes share the grad", base(m=shared_grad_codes), ValueError, "exp_avg"),
        ("absmax shares the grad", base(m=shared_absmax), ValueError, "exp_avg.absmax"),
        ("two states share codes", shared_states, ValueError, "exp_avg_sq"),
    ]


BAD = _bad_cases()


def _arrays(p, g, m, v):
    out = [p, g]
    for s in (m, v):
        out += list(s) if type(s) is quant.QuantizedState else [s]
    return out


@pytest.mark.parametrize("api", ["kernel", "reference"])
@pytest.mark.parametrize("what, make, exc, arg", BAD, ids=[c[0] for c in BAD])
def test_bad_8bit_states_name_the_argument_and_write_nothing(what, make, exc, arg, api):
    p, g, m, v = make()
    fn = fastadam.adam_ if api == "kernel" else fastadam.reference.adam_
    arrays = _arrays(p, g, m, v)
    before = [a.tobytes() for a in arrays]
    with pytest.raises(exc, match=rf"^Invalid {re.escape(arg)}\b"):
        fn(p, g, m, v, step=1)
    assert [a.tobytes() for a in arrays] == before, "an array was written"


@pytest.mark.parametrize("api", ["kernel", "reference"])
@pytest.mark.parametrize("info", ROWS)
def test_every_row_refuses_8bit_states_on_float64_and_mixed(info, api):
    """Every row: a float64 param with 8-bit states, and (two states or more) an 8-bit
    state beside an array state, refused naming the state, nothing written."""
    hyper = info.rich()
    fn = getattr(info, api)
    names = [n for n in info.state_names(hyper) if n not in info.scalar_names]
    for case in ("float64", "mixed"):
        if case == "mixed" and len(names) < 2:
            continue
        p, states, grads = start(info, hyper, ("float32", "float32"), 300, seed=1)
        g = grads[0]
        if case == "float64":
            p, g, arg = p.astype(np.float64), g.astype(np.float64), names[0]
        else:
            states[names[1]] = states[names[1]].dequantize()
            arg = names[1]
        arrays = [p, g] + [a for s in states.values() for a in (
            list(s) if type(s) is quant.QuantizedState else [s])]
        before = [a.tobytes() for a in arrays]
        with pytest.raises(TypeError, match=rf"^Invalid {re.escape(arg)}\b"):
            call(info, fn, p, g, states, hyper, 1 if step_variants(info)[0] else None)
        assert [a.tobytes() for a in arrays] == before, f"{case}: an array was written"


# ------------------------------------------------------------------------------ the table

def _around(x, ulps=64):
    """Every float32 within ``ulps`` of each of ``x`` (by the floats' order)."""
    k = quant._ordered(x).astype(np.int64)
    k = (k[:, None] + np.arange(-ulps, ulps + 1)[None, :]).reshape(-1)
    k = np.clip(k, 0, 2 ** 32 - 1).astype(np.uint32)
    return quant._from_ordered(k)


@pytest.mark.parametrize("signed_map", [True, False], ids=["signed", "unsigned"])
def test_table_code_is_the_nearest_code(signed_map):
    qmap = quant.dynamic_map(signed_map)
    u = quant.thresholds(qmap)
    rng = np.random.default_rng(3)
    ys = [_around(u), _around(-u), _around(qmap), _around(-qmap),
          rng.uniform(-1, 1, 1_000_000).astype(np.float32),
          # magnitudes spread over the binades down to the subnormals
          (rng.choice([-1, 1], 200_000) * 2.0 ** rng.uniform(-130, 0, 200_000)).astype(
              np.float32),
          np.array([0.0, -0.0, 1.0, -1.0, 1.5, -1.5, np.inf, -np.inf, np.nan, -np.nan,
                    1e-45, -1e-45, 2.0 ** -23, -2.0 ** -23, 2.0 ** -22], np.float32)]
    y = np.concatenate(ys)
    with np.errstate(invalid="ignore"):
        want = quant.nearest_code(y, qmap)
    got = quant.table_code(y, qmap)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, f"{bad.size} differ, first y={y[bad[:5]]!r}: " \
                          f"{got[bad[:5]]} vs {want[bad[:5]]}"


def test_nearest_code_is_nearest():
    """The rule itself on a sample: the code's value is at least as near as its
    neighbours' (ties to the lower code)."""
    for signed_map in (True, False):
        qmap = quant.dynamic_map(signed_map)
        y = np.random.default_rng(4).uniform(qmap[0], 1, 100_000).astype(np.float32)
        c = quant.nearest_code(y, qmap).astype(np.int64)
        d = np.abs(qmap[c] - y)
        lo, hi = np.maximum(c - 1, 0), np.minimum(c + 1, 255)
        assert np.all(d <= np.abs(qmap[hi] - y)) and np.all(d < np.abs(qmap[lo] - y) + (
            lo == c))


@pytest.mark.parametrize("signed_map", [True, False], ids=["signed", "unsigned"])
def test_maps_are_bitsandbytes(signed_map):
    bnbf = pytest.importorskip("bitsandbytes.functional",
                               reason="the maps' source, bitsandbytes (the compare extra)")
    theirs = bnbf.create_dynamic_map(signed=signed_map).cpu().numpy().astype(np.float32)
    ours = quant.SIGNED_MAP if signed_map else quant.UNSIGNED_MAP
    assert theirs.shape == ours.shape == (256,)
    assert theirs.view(np.uint32).tolist() == ours.view(np.uint32).tolist()
