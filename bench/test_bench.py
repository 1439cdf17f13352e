"""pytest-benchmark suite over the cases of ``python -m fastadam.bench``
(docs/contract.md#performance).

Run: ``pytest bench/ --benchmark-only`` (see bench/README.md). Nothing here asserts a
speed: the numbers are for reading and comparing (``--benchmark-save`` /
``--benchmark-compare``), never for passing or failing.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest

pytest.importorskip("pytest_benchmark")

import fastadam  # noqa: E402  (bench/conftest.py has chosen which one)
from fastadam import _core, _registry, _tuned, reference  # noqa: E402
from fastadam.bench import (  # noqa: E402
    HALF_MODES, HALF_OPT, OPTIMIZERS, STREAMS, TRANSFORMER, TUNED, _arrays,
    _torch_optimizer, make_case, make_guarded_case, make_half_case, make_transformer_case,
    transformer_shapes,
)

from .conftest import LARGE, torch  # noqa: E402

DTYPES = (np.float32, np.float64)
SIZES = (16, 1_000, 100_000, 1_000_000) + ((10_000_000, 50_000_000) if LARGE else ())
# probe first, so that fastadam's row can be set against it in the summary
IMPLS = ("probe", "fastadam", "ref", "tuned", "torch")


def _needs_torch(impl):
    if impl.startswith("torch") and torch is None:
        pytest.skip("torch is not installed")


# ------------------------------------------------------------- the report's table rows

# One case (all implementations' callables and arrays) is alive at a time: the parameters
# run in order with the implementation innermost, so the five implementations of a row share
# one make_case, as in the report, and a 5e7-element case is freed before the next is built.
_CASE: dict = {}


def _case(opt, dtype, n):
    key = (opt, np.dtype(dtype).name, n)
    if key not in _CASE:
        _CASE.clear()
        gc.collect()
        rng = np.random.default_rng(0)
        try:
            fns = make_case(opt, dtype, n, rng, with_torch=torch is not None)
        except RuntimeError:            # torch has no optimizer for this case
            fns = make_case(opt, dtype, n, np.random.default_rng(0), with_torch=False)
        _CASE[key] = fns
    return _CASE[key]


def _has(opt, impl):
    """Whether the report's row for ``opt`` has column ``impl``: tuned NumPy only where
    fastadam/_tuned.py has the rule, torch only where torch.optim has the class (Lion: no).
    Without torch the torch cases stay, and skip."""
    if impl == "tuned":
        return opt in TUNED
    if impl == "torch":
        return torch is None or hasattr(torch.optim, _registry.by_name(opt).classes)
    return True


ROWS = [pytest.param(opt, dtype, n, impl, id=f"{opt}-{np.dtype(dtype).name}-{n}-{impl}")
        for opt in OPTIMIZERS for dtype in DTYPES for n in SIZES for impl in IMPLS
        if _has(opt, impl)]


@pytest.mark.parametrize("opt, dtype, n, impl", ROWS)
def test_step(measure, opt, dtype, n, impl):
    """One optimizer step over ``n`` elements; group = (optimizer, dtype, size)."""
    _needs_torch(impl)
    fns = _case(opt, dtype, n)
    assert impl in fns, f"the report has no {impl} column for {opt}"
    itemsize = np.dtype(dtype).itemsize
    streams = STREAMS["probe" if impl == "probe" else opt]
    info = dict(optimizer=opt, dtype=np.dtype(dtype).name, n=n, streams=streams)
    if impl == "torch":
        defaults = fns["torch"].__self__.defaults
        info["torch_flavour"] = ("fused" if defaults.get("fused") else
                                 "foreach" if defaults.get("foreach") else "for-loop")
    measure(fns[impl], f"{opt} {np.dtype(dtype).name} n={n}", impl,
            nbytes=streams * n * itemsize, **info)


# ------------------------------------------------------------------ per-call overhead

@pytest.fixture(scope="module")
def tiny():
    return _arrays(16, np.float32, np.random.default_rng(1), 4)


PER_CALL = ("sgd_", "rmsprop_", "adam_", "adamw_", "reference.adam_", "torch Adam")


@pytest.mark.parametrize("impl", PER_CALL)
def test_per_call(measure, tiny, impl):
    """One call on 16 float32 elements, validation included: the fixed cost of a call."""
    _needs_torch(impl)
    p, g, s0, s1 = tiny
    if impl == "torch Adam":
        tp = torch.from_numpy(p.copy())
        tp.grad = torch.from_numpy(g)
        opt, flavour = _torch_optimizer("adam", [tp])
        fn = opt.step
    else:
        fn = {"sgd_": lambda: fastadam.sgd_(p, g),
              "rmsprop_": lambda: fastadam.rmsprop_(p, g, s0),
              "adam_": lambda: fastadam.adam_(p, g, s0, s1, step=10),
              "adamw_": lambda: fastadam.adamw_(p, g, s0, s1, step=10),
              "reference.adam_": lambda: reference.adam_(p, g, s0, s1, step=10)}[impl]
    measure(fn, "per-call float32 n=16", impl)


# -------------------------------------------------------------------- many small tensors

COUNT, SIZE = 1000, 100


@pytest.fixture(scope="module")
def many():
    rng = np.random.default_rng(1)
    params = [rng.standard_normal(SIZE).astype(np.float32) for _ in range(COUNT)]
    grads = [rng.standard_normal(SIZE).astype(np.float32) for _ in range(COUNT)]
    return params, grads


MANY = ("fastadam", "packed", "ref", "tuned", "torch")


@pytest.mark.parametrize("impl", MANY)
def test_many_tensors(measure, many, impl):
    """One Adam step over 1000 float32 arrays of 100 elements: fastadam.Adam.step (one
    native call over every tensor), the same params packed into one flat array with
    fastadam.pack, a loop of reference.adam_, a loop of tuned NumPy, torch's fused Adam."""
    _needs_torch(impl)
    params, grads = many
    params = [q.copy() for q in params]
    if impl == "fastadam":
        opt = fastadam.Adam(params)
        fn = lambda: opt.step(grads)  # noqa: E731
    elif impl == "packed":
        flat_p, _ = fastadam.pack(params)
        flat_g, _ = fastadam.pack(grads)
        opt = fastadam.Adam([flat_p])
        fn = lambda: opt.step([flat_g])  # noqa: E731
    elif impl in ("ref", "tuned"):
        state = [(np.zeros(SIZE, np.float32), np.zeros(SIZE, np.float32)) for _ in params]
        tmp = np.empty(SIZE, np.float32)
        if impl == "ref":
            def fn():
                for q, gr, (m, v) in zip(params, grads, state):
                    reference.adam_(q, gr, m, v, step=10)
        else:
            def fn():
                for q, gr, (m, v) in zip(params, grads, state):
                    _tuned.adam_(q, gr, m, v, tmp, step=10)
    else:
        tps = [torch.from_numpy(q) for q in params]
        for tq, gr in zip(tps, grads):
            tq.grad = torch.from_numpy(gr)
        opt, flavour = _torch_optimizer("adam", tps)
        fn = opt.step
    measure(fn, f"many-tensors float32 {COUNT}x{SIZE}", impl,
            nbytes=STREAMS["adam"] * COUNT * SIZE * 4, count=COUNT, size=SIZE)


# --------------------------------------------------------------------- gradient policy

GUARDED_N = 1_000_000
GUARDED = ("plain", "skip", "clip", "torch")


@pytest.fixture(scope="module")
def guarded():
    return make_guarded_case(GUARDED_N, np.random.default_rng(4), torch is not None)


@pytest.mark.parametrize("impl", GUARDED)
def test_gradient_policy(measure, guarded, impl):
    """Adam.step at 1e6 float32 elements: plain; nonfinite="skip" (the pre-pass); skip with
    max_grad_norm and grad_scale; torch's unscale_ + clip_grad_norm_ + fused Adam."""
    _needs_torch(impl)
    streams = {"plain": 7, "skip": 8, "clip": 8, "torch": 12}[impl]
    measure(guarded[impl], f"gradient policy float32 n={GUARDED_N}", impl,
            nbytes=streams * GUARDED_N * 4, streams=streams)


# ----------------------------------------------------------------------------- threads

THREAD_N = 1_000_000


@pytest.fixture(scope="module")
def thread_arrays():
    rng = np.random.default_rng(2)
    return (_arrays(THREAD_N, np.float32, rng, 4), _arrays(THREAD_N, np.float32, rng, 4))


@pytest.fixture
def num_threads(request):
    """Run the test with fastadam.set_num_threads(param); restore the setting afterwards."""
    try:
        old = fastadam.set_num_threads(request.param)
    except (ValueError, RuntimeError) as e:
        pytest.skip(f"set_num_threads({request.param}): {e}")
    try:
        yield request.param
    finally:
        fastadam.set_num_threads(old)


@pytest.mark.parametrize("num_threads", [1, 2], indirect=True, ids=["1thread", "2threads"])
@pytest.mark.parametrize("impl", ["adam_", "probe"])
def test_threads(measure, thread_arrays, impl, num_threads):
    """adam_ (and the same-traffic probe) at 1e6 float32 elements on 1 and on 2 threads."""
    (p, g, s0, s1), (q, h, r0, r1) = thread_arrays
    assert fastadam.get_num_threads() == num_threads
    if impl == "adam_":
        fn = lambda: fastadam.adam_(p, g, s0, s1, step=10)  # noqa: E731
    else:
        fn = lambda: _core.roofline_(q, h, r0, r1)  # noqa: E731
    label = f"{impl} {num_threads} thread" + ("s" if num_threads > 1 else "")
    measure(fn, f"threads float32 n={THREAD_N}", label,
            nbytes=STREAMS["adam"] * THREAD_N * 4, threads=num_threads)


# ------------------------------------------------------------- transformer-shaped params

TRANSFORMER_IMPLS = {"fastadam": "fastadam Adam.step (NumPy)",
                     "fastadam.torch": "fastadam.torch Adam",
                     "torch fused": "torch Adam(fused=True)",
                     "torch foreach": "torch Adam(foreach=True)",
                     "torch for-loop": "torch Adam (for-loop)"}


@pytest.fixture(scope="module")
def transformer_case():
    """The report's transformer case (every implementation's own params and states, about
    1.6 GB): built once for this module's transformer benchmarks."""
    fns = make_transformer_case(np.random.default_rng(4), with_torch=torch is not None)
    yield fns
    fns.clear()
    gc.collect()


@pytest.mark.parametrize("impl", list(TRANSFORMER_IMPLS))
def test_transformer(measure, transformer_case, impl):
    """One float32 Adam step over a GPT-2-like parameter list (148 tensors of mixed sizes,
    24.8 M params): fastadam.Adam on NumPy arrays, fastadam.torch.Adam, and torch.optim.Adam
    fused, foreach and for-loop (torch's CPU default)."""
    _needs_torch(impl)
    fn = transformer_case.get(TRANSFORMER_IMPLS[impl])
    if fn is None:
        pytest.skip(f"this torch has no Adam {impl}")
    shapes = transformer_shapes(**TRANSFORMER)
    total = sum(int(np.prod(s)) for s in shapes)
    measure(fn, f"transformer float32 {len(shapes)} tensors {total / 1e6:.1f}M", impl,
            nbytes=STREAMS["adam"] * total * 4, tensors=len(shapes), params=total)


# ---------------------------------------------------------------------- 16-bit storage

HALF_SIZES = (1_000, 100_000, 1_000_000) + ((10_000_000,) if LARGE else ())
HALF_IMPLS = ("probe", "fastadam", "torch", "torch._fused_adam_", "torch grad.float()",
              "fastadam float32")


def _half_has(mode, impl):
    """The report's columns per 16-bit mode (fastadam.bench.make_half_case)."""
    if impl == "fastadam float32":
        return mode == "states"
    if impl == "torch grad.float()":
        return mode == "offload"
    if impl.startswith("torch"):
        return mode != "states" and (impl == "torch" or mode in ("bf16", "fp16"))
    return True


_HALF_CASE: dict = {}


def _half_case(mode, n):
    if (mode, n) not in _HALF_CASE:
        _HALF_CASE.clear()
        gc.collect()
        _HALF_CASE[(mode, n)] = make_half_case(mode, n, np.random.default_rng(5),
                                               with_torch=torch is not None)
    return _HALF_CASE[(mode, n)]


HALF_ROWS = [pytest.param(mode, n, impl, id=f"{mode}-{n}-{impl}")
             for mode in HALF_MODES for n in HALF_SIZES for impl in HALF_IMPLS
             if _half_has(mode, impl)]


@pytest.mark.parametrize("mode, n, impl", HALF_ROWS)
def test_half(measure, mode, n, impl):
    """A 16-bit storage step (fastadam.bench.HALF_MODES: all-bfloat16, all-float16, the
    offload step with a bfloat16 grad and param_copy, bfloat16 states), its same-streams
    probe and what it is compared with; group = (mode, size). All at the same bytes per
    element, so %roof in the summary is the probe's time over fastadam's."""
    _needs_torch(impl)
    case = _half_case(mode, n)
    fn = case["fns"].get(impl)
    if fn is None:
        pytest.skip(f"this torch has no {impl}")
    measure(fn, f"16-bit {mode} {HALF_OPT[mode]} n={n}", impl, nbytes=case["bytes"] * n,
            mode=mode, n=n, bytes_per_element=case["bytes"])
