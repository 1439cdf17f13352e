"""The benchmark report: ``python -m fastadam.bench [--quick] [--threads N] [--simd PATH]``.

Every row is measured side by side in this one process: the implementations take turns,
sample after sample, and each figure is the median of those samples, so a noisy neighbour
slows all of them alike. Columns:

- ``fastadam``: the fused kernel (functional call, validation included), µs per step;
- ``GB/s``: bytes the step must move (each array read once, each output written once)
  divided by its time;
- ``%roof``: that bandwidth as a share of the same-traffic probe's (``roofline_``: Adam's
  reads and writes, one add per element, same compiler flags and threads), measured at the
  same size; above ~1e6 elements it is the memory bandwidth, below it the cache's;
- ``x ref`` / ``x tuned`` / ``x torch``: how many times faster fastadam is than the readable
  NumPy reference, than tuned NumPy (in-place ufuncs with ``out=``), and than torch.optim's
  fused CPU kernel (when torch is installed; same thread count).

The 16-bit section (``--only 16-bit``; see HALF_MODES) has its own columns: bytes read and
written per element, and %roof against the probe over the same streams in the same dtypes.
So has the 8-bit section (``--only 8-bit``; see run_8bit): fastadam's float32 and 8-bit
steps, bitsandbytes' and torchao's 8-bit optimizers, each against the probe of its traffic.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import platform
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional

import numpy as np

import fastadam
from fastadam import _core, _registry, _tuned, quant, reference
from fastadam.config import cpu_features

torch = None      # the torch module once load_torch() found it: the optional columns


def load_torch():
    """Import torch if it is installed (it is optional); returns it or None."""
    global torch
    if torch is None:
        try:
            import torch as _torch
        except ImportError:  # pragma: no cover - depends on the environment
            return None
        torch = _torch
    return torch

# One row per registry entry with classes (fastadam/_registry.py), configured by its
# ``bench`` hyperparameters.
OPTIMIZERS = tuple(e.name for e in _registry.OPTIMIZERS if e.classes)
FULL_SIZES = (16, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 50_000_000)
QUICK_SIZES = (16, 1_000, 10_000, 100_000, 1_000_000)



def _used_states(opt: str) -> List[_registry.State]:
    """The states a benchmark step of ``opt`` reads and writes."""
    entry = _registry.by_name(opt)
    needs = _core.validate(opt, entry.bench).needs
    return [s for s, need in zip(entry.states, needs) if need]


# Arrays each step reads and writes, per element (with each entry's ``bench``
# hyperparameters: SGD with momentum 0.9, the others at their defaults): read p, g and
# every state, write p and every state. The traffic that GB/s counts.
STREAMS = {**{opt: 3 + 2 * len(_used_states(opt)) for opt in OPTIMIZERS}, "probe": 7}

# Tuned NumPy (fastadam/_tuned.py) for the benchmarked configurations: (param, grad,
# states then scalar states, two scratch arrays). An optimizer without one has no "tuned"
# column.
def _tuned_like_functional(opt: str) -> Callable[..., None]:
    """The later optimizers' tuned code takes the functional's arguments and ``scratch``."""
    fn, bench = getattr(_tuned, f"{opt}_"), _registry.by_name(opt).bench
    return lambda p, g, s, scratch: fn(p, g, *s, scratch=scratch, **bench)


TUNED: Dict[str, Callable[..., None]] = {
    "sgd": lambda p, g, s, tmp: _tuned.sgd_momentum_(p, g, s[0], tmp[0], lr=1e-3,
                                                     momentum=0.9),
    "rmsprop": lambda p, g, s, tmp: _tuned.rmsprop_(p, g, s[0], tmp[0]),
    "adam": lambda p, g, s, tmp: _tuned.adam_(p, g, s[0], s[1], tmp[0], step=10),
    "adamw": lambda p, g, s, tmp: _tuned.adam_(p, g, s[0], s[1], tmp[0], step=10,
                                               weight_decay=1e-2,
                                               decoupled_weight_decay=True),
    **{opt: _tuned_like_functional(opt) for opt in ("lion", "adagrad", "adamax", "adadelta",
                                                    "radam", "rprop", "nadam", "asgd")},
}


SETTLE = 0.02   # seconds of pause before each sample (see side_by_side)


def _timer(fn: Callable[[], object], number: int) -> float:
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def _calibrate(fn: Callable[[], object], target: float) -> int:
    """How many calls make one sample last about ``target`` seconds."""
    fn()
    number = 1
    while True:
        t = _timer(fn, number) * number
        if t >= target / 4 or number >= 1 << 20:
            return max(1, int(number * target / max(t, 1e-9)))
        number *= 4


def side_by_side(fns: Dict[str, Callable[[], object]], repeats: int, target: float
                 ) -> Dict[str, float]:
    """Median seconds per call of each function, sampled in turn.

    Each sample starts after a short pause: torch's OpenMP threads busy-wait for some
    milliseconds after torch's own calls, and would otherwise slow whatever runs next.
    """
    numbers = {k: _calibrate(f, target) for k, f in fns.items()}
    samples: Dict[str, List[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            time.sleep(SETTLE)
            samples[k].append(_timer(f, numbers[k]))
    return {k: statistics.median(v) for k, v in samples.items()}


# ---------------------------------------------------------------------------- cases

def _arrays(n: int, dtype, rng: np.random.Generator, count: int) -> List[np.ndarray]:
    p = rng.standard_normal(n).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    return [p, g] + [np.abs(rng.standard_normal(n)).astype(dtype) * 1e-3
                     for _ in range(count - 2)]


def _torch_optimizer(opt: str, params):
    """torch.optim's class for ``opt`` with its ``bench`` hyperparameters: fused if torch
    has that, else foreach, else the for-loop; RuntimeError if torch has no such class."""
    entry = _registry.by_name(opt)
    cls = getattr(torch.optim, entry.classes or "", None)
    if cls is None:
        raise RuntimeError(f"no torch {opt}")
    kw = {k: v for k, v in entry.bench.items() if k != "step"}
    for flavour in ({"fused": True}, {"foreach": True}, {}):
        try:
            o = cls(params, **kw, **flavour)
            o.step()
            return o, next(iter(flavour), "for-loop")
        except (RuntimeError, TypeError, ValueError):
            continue
    raise RuntimeError(f"no torch {opt}")


def _torch_step(opt: str, params, grads) -> Callable[[], object]:
    """torch's step for ``opt`` over copies of ``params`` with ``grads`` (shared memory)."""
    tensors = [torch.from_numpy(q.copy()) for q in params]
    for t, gr in zip(tensors, grads):
        t.grad = torch.from_numpy(gr)
    return _torch_optimizer(opt, tensors)[0].step


def make_case(opt: str, dtype, n: int, rng: np.random.Generator, with_torch: bool
              ) -> Dict[str, Callable[[], object]]:
    """Callables for one row: fastadam, probe, reference, tuned (and torch)."""
    entry = _registry.by_name(opt)
    used = _used_states(opt)
    p, g, *states = _arrays(n, dtype, rng, 2 + len(used))
    scratch = (np.empty_like(p), np.empty_like(p))
    pp, pg, ps0, ps1 = _arrays(n, dtype, rng, 4)     # the probe's own arrays
    # the functional's call: states needed always are positional, the others keywords
    pos = [a for s, a in zip(used, states) if s.when is None]
    # then the per-tensor scalar states, float32 0-d arrays (as torch's) from their initial
    # values
    hyper = {**{h.name: h.default for h in entry.hyper}, **entry.bench}
    scalars = [np.array(hyper[c.init] if isinstance(c.init, str) else c.init, np.float32)
               for c in entry.scalars]
    pos += scalars
    kw = {**entry.bench, **{s.name: a for s, a in zip(used, states) if s.when is not None}}
    fast, ref = getattr(fastadam, f"{opt}_"), getattr(reference, f"{opt}_")
    fns: Dict[str, Callable[[], object]] = {
        "fastadam": lambda: fast(p, g, *pos, **kw),
        "ref": lambda: ref(p, g, *pos, **kw),
    }
    if opt in TUNED:
        tuned = TUNED[opt]
        fns["tuned"] = lambda: tuned(p, g, states + scalars, scratch)
    fns["probe"] = lambda: _core.roofline_(pp, pg, ps0, ps1)
    if with_torch and torch is not None:
        try:
            fns["torch"] = _torch_step(opt, [p], [g])
        except RuntimeError:        # this torch has no such optimizer for this dtype
            pass
    return fns


# ---------------------------------------------------------------------------- report

def header(args) -> List[str]:
    lines = [
        f"fastadam {fastadam.__version__} | numpy {np.__version__}"
        + (f" | torch {torch.__version__}" if not args.no_torch else " | torch: not used")
        + f" | python {platform.python_version()}",
        f"cpu: {_cpu_name()} | {platform.machine()} | features: {cpu_features()}",
        f"simd path: {_core.get_simd_path()} (available: "
        f"{', '.join(_core.available_simd_paths())}) | threads: {_core.get_num_threads()}"
        + (f" (torch {torch.get_num_threads()})" if not args.no_torch else ""),
        f"mode: {'quick' if args.quick else 'full'} | times are medians of "
        f"{args.repeats} interleaved samples; µs per step",
    ]
    return lines


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _fmt_us(sec: float) -> str:
    us = sec * 1e6
    return f"{us:10.2f}" if us < 100 else f"{us:10.0f}"


def _fmt_gbs(gbs: float) -> str:
    # Two significant digits below 1 GB/s (tiny arrays on a slow or instrumented build),
    # where one decimal would print 0.0.
    return f"{gbs:7.1f}" if gbs >= 1 else f"{gbs:7.2g}"


def run_table(args, out) -> None:
    with_torch = not args.no_torch
    cols = f"{'optimizer':<9} {'dtype':<7} {'n':>10} {'fastadam':>10} {'GB/s':>7} " \
           f"{'%roof':>6} {'ref':>10} {'x ref':>7} {'tuned':>10} {'x tuned':>7}"
    if with_torch:
        cols += f" {'torch':>10} {'x torch':>7}"
    out(cols)
    rng = np.random.default_rng(0)
    for opt in args.optimizers:
        for dtype in (np.float32, np.float64):
            for n in args.sizes:
                fns = make_case(opt, dtype, n, rng, with_torch)
                repeats = args.repeats if n < 10_000_000 else max(3, args.repeats // 2)
                t = side_by_side(fns, repeats, args.target)
                nbytes = STREAMS[opt] * n * np.dtype(dtype).itemsize
                gbs = nbytes / t["fastadam"] / 1e9
                probe_gbs = STREAMS["probe"] * n * np.dtype(dtype).itemsize / t["probe"] / 1e9
                row = (f"{opt:<9} {np.dtype(dtype).name:<7} {n:>10} {_fmt_us(t['fastadam'])} "
                       f"{_fmt_gbs(gbs)} {100 * gbs / probe_gbs:5.0f}% {_fmt_us(t['ref'])} "
                       f"{t['ref'] / t['fastadam']:6.1f}x ")
                if "tuned" in t:
                    row += f"{_fmt_us(t['tuned'])} {t['tuned'] / t['fastadam']:6.1f}x"
                else:
                    row += f"{'n/a':>10} {'':>7}"
                if with_torch and "torch" in t:
                    row += f" {_fmt_us(t['torch'])} {t['torch'] / t['fastadam']:6.1f}x"
                elif with_torch:
                    row += f" {'n/a':>10} {'':>7}"
                out(row)
                del fns
                gc.collect()


def run_small(args, out) -> None:
    """Per-call overhead (16 elements) and many small tensors in one step."""
    with_torch = not args.no_torch
    rng = np.random.default_rng(1)
    out("")
    out("per call, 16 float32 elements, validation included (µs):")
    p, g, s0, s1 = _arrays(16, np.float32, rng, 4)
    fns = {
        "sgd_": lambda: fastadam.sgd_(p, g),
        "rmsprop_": lambda: fastadam.rmsprop_(p, g, s0),
        "adam_": lambda: fastadam.adam_(p, g, s0, s1, step=10),
        "adamw_": lambda: fastadam.adamw_(p, g, s0, s1, step=10),
        "reference.adam_": lambda: reference.adam_(p, g, s0, s1, step=10),
    }
    if with_torch:
        fns["torch Adam(fused)"] = _torch_step("adam", [p], [g])
    t = side_by_side(fns, args.repeats, args.target)
    for k, v in t.items():
        out(f"  {k:<20} {v * 1e6:8.3f}")

    out("")
    count, size = 1000, 100
    out(f"many tensors: one Adam step over {count} float32 arrays of {size} elements (µs):")
    params = [rng.standard_normal(size).astype(np.float32) for _ in range(count)]
    grads = [rng.standard_normal(size).astype(np.float32) for _ in range(count)]
    opt = fastadam.Adam(params)
    flat_p, _ = fastadam.pack([p.copy() for p in params])
    flat_g, _ = fastadam.pack(grads)
    flat_opt = fastadam.Adam([flat_p])
    ref_state = [(np.zeros(size, np.float32), np.zeros(size, np.float32)) for _ in params]
    tmp = np.empty(size, np.float32)

    def ref_loop():
        for q, gr, (m, v) in zip(params, grads, ref_state):
            reference.adam_(q, gr, m, v, step=10)

    def tuned_loop():
        for q, gr, (m, v) in zip(params, grads, ref_state):
            _tuned.adam_(q, gr, m, v, tmp, step=10)

    fns = {"fastadam Adam.step": lambda: opt.step(grads),
           "fastadam packed": lambda: flat_opt.step([flat_g]),
           "reference loop": ref_loop, "tuned NumPy loop": tuned_loop}
    if with_torch:
        fns["torch Adam(fused)"] = _torch_step("adam", params, grads)
    t = side_by_side(fns, args.repeats, args.target)
    base = t["fastadam Adam.step"]
    for k, v in t.items():
        out(f"  {k:<20} {v * 1e6:10.1f}   ({v / base:5.1f}x fastadam)")


def run_guarded(args, out) -> None:
    """The gradient pre-pass: what a non-finite check and clipping add to an Adam step.

    fastadam reads the grads once more (8 streams instead of 7); torch's usual sequence
    (GradScaler's unscale_, clip_grad_norm_, then the fused Adam) moves 12: unscale reads
    and writes the grads, the norm reads them, clipping reads and writes them again.
    torch runs with a loss scale of 1 and a clipping bound that never binds, so that its
    in-place passes leave the grads as they were from one sample to the next; the passes,
    and so the time, are the same whatever the values.
    """
    sizes = [n for n in args.sizes if n >= 10_000]
    if not sizes:
        return
    with_torch = not args.no_torch
    out("")
    out("gradient policy: Adam float32, Adam.step (µs): plain; nonfinite='skip'; skip + "
        "max_grad_norm + grad_scale" + ("; torch unscale_ + clip_grad_norm_ + fused Adam"
                                       if with_torch else ""))
    rng = np.random.default_rng(4)
    for n in sizes:
        fns = make_guarded_case(n, rng, with_torch)
        repeats = args.repeats if n < 10_000_000 else max(3, args.repeats // 2)
        t = side_by_side(fns, repeats, args.target)
        row = (f"  n={n:>10}  plain {_fmt_us(t['plain'])}  skip {_fmt_us(t['skip'])} "
               f"({100 * (t['skip'] / t['plain'] - 1):+4.0f}%)  clip {_fmt_us(t['clip'])} "
               f"({100 * (t['clip'] / t['plain'] - 1):+4.0f}%)")
        if with_torch:
            row += f"  torch {_fmt_us(t['torch'])} ({t['torch'] / t['clip']:.1f}x clip)"
        out(row)
        del fns
        gc.collect()


def make_guarded_case(n: int, rng: np.random.Generator, with_torch: bool
                      ) -> Dict[str, Callable[[], object]]:
    """Adam float32 steps over ``n`` elements: plain, with the non-finite check, with the
    check, clipping and a loss scale (and torch's sequence for the last; see run_guarded)."""
    p, g = _arrays(n, np.float32, rng, 2)
    plain = fastadam.Adam([p.copy()])
    skip = fastadam.Adam([p.copy()], nonfinite="skip")
    clip = fastadam.Adam([p.copy()], nonfinite="skip", max_grad_norm=1.0)
    fns: Dict[str, Callable[[], object]] = {
        "plain": lambda: plain.step([g]),
        "skip": lambda: skip.step([g]),
        "clip": lambda: clip.step([g], grad_scale=1024.0),
    }
    if with_torch and torch is not None:
        param = torch.from_numpy(p.copy())
        param.grad = torch.from_numpy(g.copy())
        opt = _torch_optimizer("adam", [param])[0]
        found_inf, inv_scale = torch.zeros(1), torch.ones(1)

        def torch_step():
            torch._amp_foreach_non_finite_check_and_unscale_([param.grad], found_inf,
                                                             inv_scale)
            torch.nn.utils.clip_grad_norm_([param], 1e30)
            opt.step()
        fns["torch"] = torch_step
    return fns


def _rss() -> int:
    """Resident set size now, in bytes (Linux; 0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def run_memory(args, out) -> None:
    """Resident memory over many steps: no allocation per step means it stays flat."""
    steps = 100_000
    rng = np.random.default_rng(3)
    p, g, s0, s1 = _arrays(16, np.float32, rng, 4)
    params = [rng.standard_normal(n).astype(np.float32) for n in (7, 100, 1000)]
    grads = [np.ones_like(q) for q in params]
    opt = fastadam.Adam(params)
    for t in range(1, 1001):                     # warm up (first-use allocations)
        fastadam.adam_(p, g, s0, s1, step=t)
        opt.step(grads)
    gc.collect()
    before = _rss()
    for t in range(1001, 1001 + steps):
        fastadam.adam_(p, g, s0, s1, step=t)
        opt.step(grads)
    gc.collect()
    after = _rss()
    out("")
    out(f"memory: resident set over {steps:,} adam_ calls and {steps:,} Adam.step calls: "
        f"{before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB ({(after - before) / 1024:+.0f} KiB)")


def run_threads(args, out) -> None:
    """Thread scaling at large sizes, and the cost of another OpenMP pool in the process."""
    big = [s for s in args.sizes if s >= 100_000]
    if _core.get_num_threads() < 2 or not big:
        return
    out("")
    nthreads = _core.get_num_threads()
    out(f"threads: Adam float32, 1 thread vs {nthreads} (µs; probe = same-traffic roofline):")
    rng = np.random.default_rng(2)
    for n in big:
        p, g, s0, s1 = _arrays(n, np.float32, rng, 4)
        q, h, r0, r1 = _arrays(n, np.float32, rng, 4)

        def at(k, fn):
            def run():
                old = fastadam.set_num_threads(k)
                try:
                    fn()
                finally:
                    fastadam.set_num_threads(old)
            return run

        adam = lambda: fastadam.adam_(p, g, s0, s1, step=10)  # noqa: E731
        probe = lambda: _core.roofline_(q, h, r0, r1)  # noqa: E731
        t = side_by_side({"adam1": at(1, adam), "adamN": at(nthreads, adam),
                          "probe1": at(1, probe), "probeN": at(nthreads, probe)},
                         args.repeats, args.target)
        out(f"  n={n:>10}  adam {_fmt_us(t['adam1'])} -> {_fmt_us(t['adamN'])} "
            f"({t['adam1'] / t['adamN']:.2f}x)   probe {_fmt_us(t['probe1'])} -> "
            f"{_fmt_us(t['probeN'])}   adam at {100 * t['probeN'] / t['adamN']:.0f}% of the "
            f"{nthreads}-thread probe")
    if not args.no_torch:
        # torch's OpenMP threads busy-wait for a while after each torch op (libgomp's default
        # policy); fastadam's own threads sleep when idle. Time an Adam step right after a
        # torch op and right after a NumPy op (single-threaded), in turns.
        n = 1_000_000
        p, g, s0, s1 = _arrays(n, np.float32, rng, 4)
        x, y = torch.randn(n), torch.randn(n)
        a = np.ones(n, np.float32)

        def after(op):
            def run():
                op()
                t0 = time.perf_counter()
                fastadam.adam_(p, g, s0, s1, step=10)
                return time.perf_counter() - t0
            return run

        runs = {"numpy": after(lambda: np.multiply(a, 1.0, out=a)),
                "torch": after(lambda: torch.add(x, y, out=x))}
        samples = {k: [] for k in runs}
        for _ in range(args.repeats):      # in blocks: torch's threads spin for milliseconds
            for k, f in runs.items():
                time.sleep(0.05)
                samples[k].extend(f() for _ in range(20))
        t = {k: statistics.median(v) for k, v in samples.items()}
        out(f"  n={n}: adam right after a torch op {_fmt_us(t['torch'])}, right after a NumPy "
            f"op {_fmt_us(t['numpy'])} ({t['torch'] / t['numpy']:.2f}x; torch's OpenMP threads "
            f"spin after their op unless OMP_WAIT_POLICY=passive)")


# ---------------------------------------------------------------------------- transformer

# The benchmark's transformer: GPT-2 small is 12 layers, d=768, vocab 50257, context 1024;
# this one is narrower (148 tensors, 24.8 M params).
TRANSFORMER = dict(layers=12, d=384, vocab=8192, context=1024)


def transformer_shapes(layers: int, d: int, vocab: int, context: int) -> List[tuple]:
    """Parameter shapes of a GPT-2-like decoder, in model order:
    token and position embeddings; per layer a LayerNorm (weight, bias), the fused qkv
    projection (weight, bias), the attention output projection (weight, bias), a second
    LayerNorm, the MLP's two projections (d -> 4d -> d, weights and biases); a final
    LayerNorm. The output layer shares the token embedding, as in GPT-2."""
    shapes: List[tuple] = [(vocab, d), (context, d)]
    for _ in range(layers):
        shapes += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,),
                   (d,), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,)]
    return shapes + [(d,), (d,)]


def make_transformer_case(rng: np.random.Generator, with_torch: bool
                          ) -> Dict[str, Callable[[], object]]:
    """One float32 Adam step over the params of :func:`transformer_shapes`: fastadam.Adam
    on NumPy arrays, fastadam.torch.Adam on torch tensors with ``.grad`` set, and
    torch.optim.Adam with ``fused=True``, ``foreach=True`` and its CPU default (a for-loop
    over the tensors). Every implementation steps its own copy of the params and states;
    all read the same gradient memory."""
    shapes = transformer_shapes(**TRANSFORMER)
    params = [rng.standard_normal(s, dtype=np.float32) * np.float32(0.02) for s in shapes]
    grads = [rng.standard_normal(s, dtype=np.float32) * np.float32(1e-3) for s in shapes]
    opt = fastadam.Adam([q.copy() for q in params])
    fns: Dict[str, Callable[[], object]] = {"fastadam Adam.step (NumPy)": lambda: opt.step(grads)}
    if not with_torch or torch is None:
        return fns
    import fastadam.torch as fastadam_torch

    def tensors():
        ts = [torch.from_numpy(q.copy()) for q in params]
        for t, g in zip(ts, grads):
            t.grad = torch.from_numpy(g)
        return ts

    fns["fastadam.torch Adam"] = fastadam_torch.Adam(tensors()).step
    for label, flavour in (("torch Adam(fused=True)", {"fused": True}),
                           ("torch Adam(foreach=True)", {"foreach": True}),
                           ("torch Adam (for-loop)", {"foreach": False})):
        try:
            fns[label] = torch.optim.Adam(tensors(), **flavour).step
        except (RuntimeError, TypeError, ValueError):   # this torch lacks the flavour
            pass
    return fns


def run_transformer(args, out) -> None:
    """A transformer-shaped parameter list (many tensors of mixed sizes), one Adam step."""
    shapes = transformer_shapes(**TRANSFORMER)
    total = sum(int(np.prod(s)) for s in shapes)
    out("")
    out(f"transformer-shaped params: one Adam step over {len(shapes)} float32 tensors "
        f"(GPT-2-like: {TRANSFORMER['layers']} layers, d={TRANSFORMER['d']}, vocab "
        f"{TRANSFORMER['vocab']}), {total / 1e6:.1f} M params (ms per step):")
    fns = make_transformer_case(np.random.default_rng(4), not args.no_torch)
    # a step takes ~20-100 ms: samples of at least 50 ms, so that each is a few steps
    t = side_by_side(fns, args.repeats, max(args.target, 0.05))
    base = t.get("fastadam.torch Adam", t["fastadam Adam.step (NumPy)"])
    base_name = "fastadam.torch" if "fastadam.torch Adam" in t else "fastadam"
    for k, v in t.items():
        gbs = STREAMS["adam"] * total * 4 / v / 1e9
        out(f"  {k:<28} {v * 1e3:8.2f}   ({v / base:5.2f}x {base_name})  {gbs:5.1f} GB/s")
    del fns
    gc.collect()


# ---------------------------------------------------------------------------- 16-bit storage

# The 16-bit modes (fastadam/_registry.py: DTYPES, MIXING), each one Adam-family step:
#   bf16, fp16: param, grad and both moments 16-bit (computed in float32 by the converter);
#   offload:    float32 param and moments, a bfloat16 grad, a bfloat16 param_copy written
#               (the master-weight step of mixed-precision training);
#   states:     float32 param and grad, bfloat16 moments (state_dtype).
# Each is set against what a user does without fastadam's 16-bit paths (HALF_AGAINST) and
# against its own roofline: the probe over the same streams, 16-bit ones as 16-bit words
# (fastadam/kernels/probe.pxi), no conversion.
HALF_MODES = ("bf16", "fp16", "offload", "states")
HALF_OPT = {"bf16": "adam", "fp16": "adam", "offload": "adamw", "states": "adam"}
HALF_AGAINST = {
    "bf16": "torch.optim.Adam(fused=True) on bfloat16 tensors, and torch._fused_adam_",
    "fp16": "torch.optim.Adam(fused=True) on float16 tensors, and torch._fused_adam_",
    "offload": "torch: p32.grad.copy_(g16), AdamW(fused=True) step, p16.copy_(p32); and "
               "with p32.grad = g16.float()",
    "states": "fastadam's float32 step (float32 moments)",
}
HALF_SIZES = (1_000, 10_000, 100_000, 1_000_000, 10_000_000)
HALF_QUICK_SIZES = (1_000, 10_000, 100_000, 1_000_000)
OVER_ROOF = 105     # % of the roofline above which a figure is a measurement fault


def _bfloat16():
    import ml_dtypes            # fastadam's bfloat16 arrays are ml_dtypes.bfloat16
    return np.dtype(ml_dtypes.bfloat16)


def _torch_view(a: np.ndarray):
    """A torch tensor sharing ``a``'s memory, bfloat16 included (torch.from_numpy has no
    ml_dtypes)."""
    if a.dtype == np.float32 or a.dtype == np.float16:
        return torch.from_numpy(a)
    return torch.from_numpy(a.view(np.uint16)).view(torch.bfloat16)


def _traffic(reads: List[np.ndarray], writes: List[np.ndarray], n: int) -> int:
    """Bytes per element a step moves: each array read once, each output written once."""
    return sum(a.nbytes for a in reads + writes) // n


def make_half_case(mode: str, n: int, rng: np.random.Generator, with_torch: bool) -> dict:
    """One 16-bit row: ``fns`` (fastadam, probe and the comparisons, by label; see
    HALF_AGAINST), ``bytes``, the traffic per element of fastadam's step, and ``arrays``,
    its (param, grad, exp_avg, exp_avg_sq, param_copy or None)."""
    f32 = np.dtype(np.float32)
    half = np.dtype(np.float16) if mode == "fp16" else _bfloat16()
    pdt, gdt, sdt = {"bf16": (half,) * 3, "fp16": (half,) * 3,
                     "offload": (f32, half, f32), "states": (f32, f32, half)}[mode]
    x = rng.standard_normal((4, n), dtype=np.float32)
    p, g = x[0].astype(pdt), x[1].astype(gdt)
    m, v = (x[2] * 1e-3).astype(sdt), np.abs(x[3] * 1e-3).astype(sdt)
    copy = x[0].astype(half) if mode == "offload" else None
    fast = getattr(fastadam, f"{HALF_OPT[mode]}_")
    kw = dict(step=10, param_copy=copy) if copy is not None else dict(step=10)
    fns: Dict[str, Callable[[], object]] = {"fastadam": lambda: fast(p, g, m, v, **kw)}
    reads, writes = [p, g, m, v], [p, m, v] + ([copy] if copy is not None else [])
    # the probe: float32 arrays at least as big as the step's (16-bit ones are read as
    # 16-bit words over their first 2n bytes); all-16-bit steps: the plain probe over n/2
    size = (n + 1) // 2 if mode in ("bf16", "fp16") else n
    q = rng.standard_normal((5, size), dtype=np.float32)
    probe_kw = {"states": dict(half_states=True),
                "offload": dict(offload=True, copy_words=q[4])}.get(mode, {})
    fns["probe"] = lambda: _core.roofline_(q[0], q[1], q[2], q[3], **probe_kw)
    if mode == "states":
        p32, g32, m32, v32 = (a.astype(np.float32) for a in (p, g, m, v))
        fns["fastadam float32"] = lambda: fastadam.adam_(p32, g32, m32, v32, step=10)
    elif with_torch and torch is not None:
        fns.update(_torch_half(mode, p, g, copy))
    return {"fns": fns, "bytes": _traffic(reads, writes, n), "arrays": (p, g, m, v, copy)}


def _torch_half(mode: str, p, g, copy) -> Dict[str, Callable[[], object]]:
    """torch's steps for a 16-bit row, each on its own copy of the params and states."""
    if mode == "offload":
        p32 = torch.from_numpy(p.copy())
        g16, p16 = _torch_view(g.copy()), _torch_view(copy.copy())
        p32.grad = torch.empty_like(p32)
        opt = torch.optim.AdamW([p32], fused=True)
        opt.step()

        def sequence():
            p32.grad.copy_(g16)     # grad.float(), into a kept buffer (no allocation)
            opt.step()
            p16.copy_(p32)          # the 16-bit model's param = param.to(bfloat16)

        def allocating():           # the same with a new float32 grad every step
            p32.grad = g16.float()
            opt.step()
            p16.copy_(p32)
        return {"torch": sequence, "torch grad.float()": allocating}
    tp, tg = _torch_view(p.copy()), _torch_view(g.copy())
    tp.grad = tg
    opt = torch.optim.Adam([tp], fused=True)
    opt.step()
    fns: Dict[str, Callable[[], object]] = {"torch": opt.step}
    fused = getattr(torch, "_fused_adam_", None)
    if fused is not None:
        q, m, v = tp.detach().clone(), torch.zeros_like(tp), torch.zeros_like(tp)
        steps = [torch.tensor(10.0)]
        fns["torch._fused_adam_"] = lambda: fused(
            [q], [tg], [m], [v], [], steps, lr=1e-3, beta1=0.9, beta2=0.999,
            weight_decay=0.0, eps=1e-8, amsgrad=False, maximize=False)
    return fns


def make_half_profile(mode: str, n: int, rng: np.random.Generator) -> dict:
    """The parts of a 16-bit step, to say where its time goes: the step; the float32
    kernel alone (the same optimizer on float32 arrays: its arithmetic, in cache at small
    ``n``); the converter alone (the probe through the block converter on the mode's
    dtypes: widening, narrowing and the traffic, trivial arithmetic); the pure probe."""
    case = make_half_case(mode, n, rng, with_torch=False)
    p, g, m, v, copy = case["arrays"]
    f32 = [a.astype(np.float32) for a in (p, g, m, v)]
    fast = getattr(fastadam, f"{HALF_OPT[mode]}_")
    conv_kw = dict(param_copy=copy) if copy is not None else {}
    return {"step": case["fns"]["fastadam"], "float32 kernel": lambda: fast(*f32, step=10),
            "converter": lambda: _core.roofline_(p, g, m, v, **conv_kw),
            "probe": case["fns"]["probe"]}


def run_half_profile(args, out) -> None:
    """ns per element of each 16-bit step's parts (make_half_profile), in L2 and in memory."""
    big = max([n for n in (args.half_sizes or args.sizes) if n >= 1_000_000], default=None)
    sizes = [32_768] + ([big] if big else [])
    out("")
    out("16-bit storage, where the time goes (ns per element; float32 kernel: the same step "
        "on float32 arrays; converter: the probe through the block converter on the mode's "
        "dtypes; probe: the same streams without conversion):")
    rng = np.random.default_rng(6)
    for mode in HALF_MODES:
        for n in sizes:
            fns = make_half_profile(mode, n, rng)
            for k in _thread_counts():
                restore = _at_threads(k, False)
                try:
                    t = side_by_side(fns, args.repeats, args.target)
                finally:
                    restore()
                out(f"  {mode:<8} thr {k} n={n:>10}  " + "  ".join(
                    f"{name} {1e9 * sec / n:6.3f}" for name, sec in t.items()))
            del fns
            gc.collect()


def _thread_counts() -> List[int]:
    nthreads = _core.get_num_threads()
    return [1, nthreads] if nthreads > 1 else [1]


def _at_threads(k: int, with_torch: bool):
    """Set fastadam's (and torch's) thread count to ``k``; returns the restoring call."""
    old = fastadam.set_num_threads(k)
    old_torch = torch.get_num_threads() if with_torch else None
    if with_torch:
        torch.set_num_threads(k)

    def restore():
        fastadam.set_num_threads(old)
        if old_torch is not None:
            torch.set_num_threads(old_torch)
    return restore


def half_row(mode: str, n: int, threads: int, t: Dict[str, float], nbytes: int) -> str:
    """One printed row of the 16-bit section from the medians ``t``."""
    gbs = nbytes * n / t["fastadam"] / 1e9
    roof = 100 * t["probe"] / t["fastadam"]
    flag = "!" if roof > OVER_ROOF else " "
    row = (f"{mode:<8} {HALF_OPT[mode]:<6} {threads:>3} {n:>10} {nbytes:>4} "
           f"{_fmt_us(t['fastadam'])} {_fmt_gbs(gbs)} {roof:5.0f}%{flag}"
           f"{_fmt_us(t['probe'])}")
    for k, v in t.items():
        if k not in ("fastadam", "probe"):
            row += f" | {k} {_fmt_us(v).strip()} ({v / t['fastadam']:.2f}x)"
    return row


def run_half(args, out) -> None:
    """Adam-family steps on 16-bit storage, 1 thread and all, against torch and the
    same-traffic probe."""
    with_torch = not args.no_torch
    sizes = [n for n in (args.half_sizes or args.sizes) if n >= 1_000]
    if not sizes:
        return
    out("")
    out("16-bit storage (µs; B/el: bytes read and written per element; %roof: of the probe "
        "with the same streams, ! above "
        f"{OVER_ROOF}%: a measurement fault; | comparison µs (its time over fastadam's)):")
    for mode in HALF_MODES:
        if mode in HALF_AGAINST and (with_torch or mode == "states"):
            out(f"  {mode}: against {HALF_AGAINST[mode]}")
    out(f"{'mode':<8} {'opt':<6} {'thr':>3} {'n':>10} {'B/el':>4} {'fastadam':>10} "
        f"{'GB/s':>7} {'%roof':>6} {'probe':>10}")
    rng = np.random.default_rng(5)
    for mode in HALF_MODES:
        for n in sizes:
            case = make_half_case(mode, n, rng, with_torch)
            for k in _thread_counts():
                restore = _at_threads(k, with_torch)
                try:
                    repeats = args.repeats if n < 10_000_000 else max(3, args.repeats // 2)
                    t = side_by_side(case["fns"], repeats, args.target)
                finally:
                    restore()
                out(half_row(mode, n, k, t, case["bytes"]))
            del case
            gc.collect()
    run_half_profile(args, out)


# ---------------------------------------------------------------------------- 8-bit states

# Steps with 8-bit block-wise states (fastadam/quant.py: uint8 codes, a float32 absmax per
# block of 256, bitsandbytes' dynamic maps), each row group one optimizer at one size and
# thread count: fastadam's float32 step (float32 states), fastadam's 8-bit step (every state
# a QuantizedState, its map the registry's: signed, or unsigned for second moments), and,
# when torch is used and they import, bitsandbytes' 8-bit class on CPU tensors and (Adam
# only) torchao's AdamW8bit (weight_decay=0: Adam's step). Each row is set against the
# probe of its kind: the plain probe (Adam's float32 streams) for the float32 step, the
# byte_states probe (float32 p and g, byte states, two float32 scales per block) for the
# 8-bit ones; %roof is the row's GB/s over that probe's.
Q8_SIZES = (100_000, 1_000_000, 10_000_000)
Q8_QUICK_SIZES = (100_000, 1_000_000)
Q8_OTHERS = ("lion", "sgd", "rmsprop", "adagrad")   # at the section's largest size
# bitsandbytes' class per optimizer, and the hyperparameters it is given (the report's:
# each entry's defaults with its ``bench`` values)
BNB_CLASSES = {"adam": ("Adam8bit", ("lr", "betas", "eps")),
               "lion": ("Lion8bit", ("lr", "betas")),
               "sgd": ("SGD8bit", ("lr", "momentum")),
               "rmsprop": ("RMSprop8bit", ("lr", "alpha", "eps")),
               "adagrad": ("Adagrad8bit", ("lr", "eps"))}
Q8_BLOCK = quant.BLOCK      # fastadam's block (256), bitsandbytes' and torchao's too


def load_8bit_libraries(with_torch: bool) -> Dict[str, object]:
    """bitsandbytes and torchao.optim by name: the module, or why it is absent (a str)."""
    if not with_torch:
        why = "torch not used: --no-torch, or not installed"
        return {"bitsandbytes": why, "torchao": why}
    found: Dict[str, object] = {}
    for name, module in (("bitsandbytes", "bitsandbytes.optim"), ("torchao", "torchao.optim")):
        try:
            importlib.import_module(module)
            found[name] = sys.modules[name]
        except Exception as e:      # noqa: BLE001 - any failure to import makes it absent
            found[name] = f"not importable ({type(e).__name__})"
    return found


def _hyper(opt: str) -> dict:
    entry = _registry.by_name(opt)
    return {**{h.name: h.default for h in entry.hyper}, **entry.bench}


def _functional(opt: str, p, g, states) -> Callable[[], object]:
    """The functional step of ``opt`` with its ``bench`` hyperparameters on ``states`` (the
    used states, float32 arrays or QuantizedState), as make_case calls it."""
    entry = _registry.by_name(opt)
    used = _used_states(opt)
    pos = [a for s, a in zip(used, states) if s.when is None]
    hyper = _hyper(opt)
    pos += [np.array(hyper[c.init] if isinstance(c.init, str) else c.init, np.float32)
            for c in entry.scalars]
    kw = {**entry.bench, **{s.name: a for s, a in zip(used, states) if s.when is not None}}
    fn = getattr(fastadam, f"{opt}_")
    return lambda: fn(p, g, *pos, **kw)


def _traffic_8bit(p, g, states, n: int) -> float:
    """Bytes per element a step moves: p read and written, g read, and each state's arrays
    (codes and absmax, or the float32 array) read and written; a map (256 floats, in cache)
    is not counted."""
    arrays = [a for s in states for a in ((s.codes, s.absmax) if hasattr(s, "codes") else (s,))]
    return (2 * p.nbytes + g.nbytes + 2 * sum(a.nbytes for a in arrays)) / n


def _tensor_traffic(tensors, states, n: int) -> float:
    """The same for torch tensors: ``tensors`` (param, grad) and the state tensors."""
    p, g = tensors
    size = lambda t: t.numel() * t.element_size()  # noqa: E731
    return (2 * size(p) + size(g) + 2 * sum(size(t) for t in states)) / n


def _bnb_case(lib, opt: str, p, g) -> dict:
    """bitsandbytes' 8-bit class for ``opt`` on copies of ``p`` (CPU tensors); absent (a
    str) if this bitsandbytes has no such class or keeps 32-bit states."""
    name, keys = BNB_CLASSES[opt]
    cls = getattr(lib.optim, name, None)
    if cls is None:
        return {"absent": f"bitsandbytes has no {name}"}
    hyper = _hyper(opt)
    tp = torch.from_numpy(p.copy())
    tp.grad = torch.from_numpy(g.copy())
    try:
        o = cls([tp], min_8bit_size=1, **{k: hyper[k] for k in keys})
        o.step()
    except Exception as e:          # noqa: BLE001 - a failure makes the row absent
        return {"absent": f"{name} failed ({type(e).__name__}: {str(e)[:60]})"}
    st = o.state[tp]
    codes = [t for k, t in st.items() if k.startswith("state")]
    if not codes or any(t.dtype != torch.uint8 for t in codes):
        return {"absent": f"{name} kept 32-bit states"}
    kept = codes + [t for k, t in st.items() if k.startswith("absmax")]
    return {"label": f"bnb {name}", "fn": o.step, "bytes": _tensor_traffic((tp, tp.grad),
                                                                          kept, p.size)}


def _torchao_case(lib, p, g) -> dict:
    """torchao's AdamW8bit (weight_decay=0) on CPU tensors. It keeps 32-bit states unless
    the size is a multiple of its block (256), so it runs on ``p`` padded to one, ``m``
    elements (its own n in the row). Its step is compiled (torch.compile) at the first call
    and again at each thread count (``warm``: compiled code keeps the thread count it was
    built with)."""
    n = p.size
    m = -(-n // Q8_BLOCK) * Q8_BLOCK
    tp = torch.from_numpy(np.resize(p, m))
    tp.grad = torch.from_numpy(np.resize(g, m))
    hyper = _hyper("adam")
    try:
        o = lib.optim.AdamW8bit([tp], lr=hyper["lr"], betas=hyper["betas"], eps=hyper["eps"],
                                weight_decay=0.0)
        _quiet_step(o)
    except Exception as e:          # noqa: BLE001 - a failure makes the row absent
        return {"absent": f"AdamW8bit failed ({type(e).__name__}: {str(e)[:60]})"}
    st = o.state[tp]
    if not all(hasattr(st[k], "codes") for k in ("exp_avg", "exp_avg_sq")):
        return {"absent": "AdamW8bit kept 32-bit states"}
    kept = [t for k in ("exp_avg", "exp_avg_sq") for t in (st[k].codes, st[k].scale)]

    def warm():
        torch._dynamo.reset()
        _quiet_step(o)
    return {"label": "torchao AdamW8bit", "fn": o.step, "n": m, "warm": warm,
            "bytes": _tensor_traffic((tp, tp.grad), kept, m)}


def _quiet_step(o) -> None:
    """A step with warnings silenced (torchao warns once about its tensor subclass when it
    compiles)."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        o.step()


def make_8bit_case(opt: str, n: int, rng: np.random.Generator,
                   libs: Optional[Dict[str, object]] = None) -> dict:
    """One group of the 8-bit section: ``rows``, in order, each a dict with ``label``,
    ``fn`` (or ``absent``: why the row has no figure), ``bytes`` per element, ``n``,
    ``probe`` ("probe 32-bit" or "probe 8-bit": the probe it is set against) and
    optionally ``warm`` (run at each thread count before timing); ``probes``: the two
    probes' callables and bytes per element."""
    libs = libs or {}
    used = _used_states(opt)
    p, g, *s32 = _arrays(n, np.float32, rng, 2 + len(used))
    p8, g8 = p.copy(), g.copy()
    s8 = [quant.QuantizedState.from_float(a, signed=s.qmap == "signed")
          for s, a in zip(used, s32)]
    rows = [{"label": "fastadam 32-bit", "fn": _functional(opt, p, g, s32), "n": n,
             "bytes": _traffic_8bit(p, g, s32, n), "probe": "probe 32-bit"},
            {"label": "fastadam 8-bit", "fn": _functional(opt, p8, g8, s8), "n": n,
             "bytes": _traffic_8bit(p8, g8, s8, n), "probe": "probe 8-bit"}]
    bnb, tao = libs.get("bitsandbytes"), libs.get("torchao")
    bnb_row = ({"absent": f"bitsandbytes: {bnb}"} if isinstance(bnb, str) or bnb is None
               else _bnb_case(bnb, opt, p, g))
    rows.append({"label": f"bnb {BNB_CLASSES[opt][0]}", "n": n, **bnb_row})
    if opt == "adam":
        tao_row = ({"absent": f"torchao: {tao}"} if isinstance(tao, str) or tao is None
                   else _torchao_case(tao, p, g))
        rows.append({"label": "torchao AdamW8bit", "n": n, **tao_row})
    for row in rows[2:]:
        row.setdefault("probe", "probe 8-bit")
    # the probes' own arrays; the 8-bit probe's states are bytes over the first n bytes of
    # float32 arrays, its scales the first 2*nblocks words of a fifth
    q = rng.standard_normal((5, n), dtype=np.float32)
    nb = quant.nblocks(n)
    probes = {"probe 32-bit": (lambda: _core.roofline_(q[0], q[1], q[2], q[3]), 28.0),
              "probe 8-bit": (lambda: _core.roofline_(q[0], q[1], q[2], q[3], byte_states=True,
                                                      copy_words=q[4]),
                              (3 * 4 * n + 4 * n + 2 * 2 * 4 * nb) / n)}
    return {"rows": rows, "probes": probes}


def _fmt_time(sec: float) -> str:
    return f"{sec * 1e6:8.1f} µs" if sec < 1e-3 else f"{sec * 1e3:8.2f} ms"


def eight_bit_rows(opt: str, threads: int, case: dict, t: Dict[str, float]) -> List[str]:
    """The printed rows of one 8-bit group from the medians ``t`` (by row label)."""
    base = t.get("fastadam 8-bit")
    lines = []
    for row in case["rows"]:
        head = f"{opt:<8} {row['label']:<18} {threads:>3} {row['n']:>10}"
        if "absent" in row:
            lines.append(f"{head} {'absent':>6}   ({row['absent']})")
            continue
        sec = t[row["label"]]
        gbs = row["bytes"] * row["n"] / sec / 1e9
        probe_sec = t[row["probe"]]
        probe_gbs = case["probes"][row["probe"]][1] * row["n"] / probe_sec / 1e9
        roof = 100 * gbs / probe_gbs
        # above the probe is a fault only against the same traffic (one-state optimizers'
        # steps move fewer streams than the probe, and can beat it in cache)
        same = abs(row["bytes"] - case["probes"][row["probe"]][1]) < 1e-9
        flag = "!" if same and roof > OVER_ROOF else " "
        lines.append(f"{head} {row['bytes']:6.2f} {_fmt_time(sec)} {_fmt_gbs(gbs)} "
                     f"{roof:5.0f}%{flag} {_fmt_time(probe_sec)} {sec / base:7.2f}x")
    return lines


def run_8bit(args, out) -> None:
    """Steps with 8-bit states, 1 thread and all: fastadam's float32 and 8-bit steps,
    bitsandbytes and torchao side by side, each against the probe of its traffic."""
    with_torch = not args.no_torch
    sizes = [n for n in (args.q8_sizes or args.sizes) if n >= _registry.MIN_8BIT_SIZE]
    if not sizes:
        return
    libs = load_8bit_libraries(with_torch)
    versions = " | ".join(f"{k} {getattr(v, '__version__', '?')}" if not isinstance(v, str)
                          else f"{k}: {v}" for k, v in libs.items())
    out("")
    out("8-bit states (blocks of 256, a float32 absmax each; B/el: bytes read and written "
        "per element, from the arrays; %roof: GB/s over the probe's with the same "
        f"kind of traffic, ! above {OVER_ROOF}%; probe: its time; x 8-bit: the row's time "
        "over fastadam 8-bit's, i.e. fastadam 8-bit's speed-up over it):")
    out(f"  {versions}; torch on as many threads as fastadam; torchao at n rounded up to a "
        "multiple of 256 (it keeps 32-bit states otherwise), compiled at each thread count")
    out("  the probe: 32-bit, Adam's float32 streams (28 B/el); 8-bit, float32 p and g with "
        "byte states and their scales (16 B/el + 16 per 256); for one-state optimizers "
        "%roof is a bandwidth share")
    out(f"{'opt':<8} {'implementation':<18} {'thr':>3} {'n':>10} {'B/el':>6} "
        f"{'time':>11} {'GB/s':>7} {'%roof':>6} {'probe':>11} {'x 8-bit':>8}")
    rng = np.random.default_rng(7)
    groups = [("adam", n) for n in sizes] + [(opt, max(sizes)) for opt in Q8_OTHERS]
    for opt, n in groups:
        case = make_8bit_case(opt, n, rng, libs)
        fns = {r["label"]: r["fn"] for r in case["rows"] if "fn" in r}
        fns.update({k: fn for k, (fn, _) in case["probes"].items()})
        for k in _thread_counts():
            restore = _at_threads(k, with_torch)
            try:
                for r in case["rows"]:
                    if "warm" in r:
                        r["warm"]()
                repeats = args.repeats if n < 10_000_000 else max(3, args.repeats // 2)
                t = side_by_side(fns, repeats, args.target)
            finally:
                restore()
            for line in eight_bit_rows(opt, k, case, t):
                out(line)
        out("")
        del case, fns
        gc.collect()


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m fastadam.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="sizes up to 1e6 and shorter samples (about a minute)")
    ap.add_argument("--threads", type=int, help="threads for fastadam and torch")
    ap.add_argument("--simd", choices=("baseline", "avx2", "avx512"),
                    help="force a SIMD path (default: the best the CPU has)")
    ap.add_argument("--optimizers", nargs="+", choices=OPTIMIZERS, default=list(OPTIMIZERS))
    ap.add_argument("--sizes", nargs="+", type=lambda s: int(float(s)),
                    help="array sizes (default: 16 to 5e7; quick: 16 to 1e6)")
    ap.add_argument("--repeats", type=int, help="samples per measurement (default 7; quick 5)")
    ap.add_argument("--no-torch", action="store_true", help="leave torch out even if present")
    ap.add_argument("--skip-small", action="store_true",
                    help="skip the per-call and many-tensor sections")
    ap.add_argument("--only", choices=("transformer", "gradient-policy", "16-bit", "8-bit"),
                    help="run only this section (transformer: the transformer-shaped "
                         "parameter list; gradient-policy: the pre-pass's cost; 16-bit: "
                         "the 16-bit storage modes; 8-bit: 8-bit states against "
                         "bitsandbytes and torchao)")
    ap.add_argument("--half-sizes", nargs="+", type=lambda s: int(float(s)),
                    help="sizes of the 16-bit section (default: 1e3 to 1e7; quick: to 1e6; "
                         "--sizes when given)")
    ap.add_argument("--skip-16bit", action="store_true", help="skip the 16-bit section")
    ap.add_argument("--8bit-sizes", dest="q8_sizes", nargs="+", type=lambda s: int(float(s)),
                    help="Adam's sizes in the 8-bit section (default: 1e5 1e6 1e7; quick: "
                         "1e5 1e6; --sizes when given, from 4096 up); the other optimizers "
                         "run at the largest")
    ap.add_argument("--skip-8bit", action="store_true", help="skip the 8-bit section")
    ap.add_argument("--plot", metavar="FILE.png",
                    help="also draw the table as a figure (speedup against size; needs "
                         "matplotlib): see fastadam/_plot.py")
    args = ap.parse_args(argv)
    if args.plot:
        if args.only:
            ap.error("--plot draws the main table, which --only leaves out")
        from fastadam import _plot
        try:
            _plot.require_matplotlib()
        except ImportError as e:
            ap.error(str(e))
    if args.sizes is None and args.half_sizes is None:
        args.half_sizes = HALF_QUICK_SIZES if args.quick else HALF_SIZES
    if args.sizes is None and args.q8_sizes is None:
        args.q8_sizes = Q8_QUICK_SIZES if args.quick else Q8_SIZES
    args.sizes = args.sizes or (QUICK_SIZES if args.quick else FULL_SIZES)
    args.repeats = args.repeats or (5 if args.quick else 7)
    args.target = 0.004 if args.quick else 0.015
    if not args.no_torch:
        load_torch()
    args.no_torch = args.no_torch or torch is None
    saved = (fastadam.get_num_threads(), fastadam.get_simd_path(),
             torch.get_num_threads() if not args.no_torch else None)
    try:
        if args.threads is not None:
            fastadam.set_num_threads(args.threads)
        if not args.no_torch:
            torch.set_num_threads(fastadam.get_num_threads())
        if args.simd:
            fastadam.set_simd_path(args.simd)

        printed: List[str] = []     # what --plot draws from

        def out(line: str) -> None:
            printed.append(line)
            print(line, flush=True)

        for line in header(args):
            out(line)
        if args.only:
            {"transformer": run_transformer, "gradient-policy": run_guarded,
             "16-bit": run_half, "8-bit": run_8bit}[args.only](args, out)
            return
        out("")
        run_table(args, out)
        if not args.skip_small:
            run_small(args, out)
            run_memory(args, out)
            run_transformer(args, out)
        run_guarded(args, out)
        run_threads(args, out)
        if not args.skip_16bit:
            run_half(args, out)
        if not args.skip_8bit:
            run_8bit(args, out)
        if args.plot:
            _plot.plot_report(printed, args.plot)
            print(f"\nplot: wrote {args.plot}", flush=True)
    finally:
        fastadam.set_num_threads(saved[0])
        fastadam.set_simd_path(saved[1])
        if saved[2] is not None:
            torch.set_num_threads(saved[2])


if __name__ == "__main__":
    main(sys.argv[1:])
