"""LeakSanitizer's workload (.ci/sanitize.sh runs it with detect_leaks=1, then
``python .ci/leak_loop.py --check DIR`` reads the reports written to DIR).

Every public entry point N times: each functional kernel and optimizer class with every
state on, valid and rejected calls (bad dtype, overlap, missing state, bad hyperparameter,
None), state_dict / load_state_dict, thread-count changes that start and stop the pool.
A leak in any of them leaks N times; CPython's own allocations that live until exit
(interned strings, module state, caches) do not grow with N. So the check fails on a
leak of >= N/2 objects, or on any leak allocated from fastadam's compiled modules outside
their import.
"""

import os
import re
import sys

N = 2000


def workload():
    import numpy as np

    import fastadam

    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        a = [rng.standard_normal(37).astype(dtype) for _ in range(6)]
        p, g, m, v, w, x = a
        v[...] = np.abs(v)
        w[...] = np.abs(w)
        bad = g.astype(np.int64)
        for i in range(N):
            fastadam.sgd_(p, g, momentum_buffer=m, lr=1e-3, momentum=0.9, nesterov=True,
                          weight_decay=0.01, step=i + 1)
            fastadam.rmsprop_(p, g, v, momentum_buffer=m, grad_avg=x, momentum=0.5,
                              centered=True, weight_decay=0.01)
            fastadam.adam_(p, g, m, v, step=i + 1, amsgrad=True, max_exp_avg_sq=w,
                           weight_decay=0.01, maximize=True)
            fastadam.adamw_(p, g, m, v, step=i + 1)
            for call in (lambda: fastadam.adam_(p, bad, m, v, step=1),
                         lambda: fastadam.adam_(p, p, m, v, step=1),
                         lambda: fastadam.adam_(p, g, m, v, step=0),
                         lambda: fastadam.adam_(p, g, m, v, step=1, betas=(1.0, 0.5)),
                         lambda: fastadam.adam_(p, g, m, v, step=1, amsgrad=True),
                         lambda: fastadam.rmsprop_(p, g, None),
                         lambda: fastadam.sgd_(p, g, lr="x")):
                try:
                    call()
                except (TypeError, ValueError):
                    pass
                else:
                    raise AssertionError("a bad call was accepted")

    def params():
        return [rng.standard_normal((3, 5)).astype(np.float32),
                rng.standard_normal(7).astype(np.float64), np.zeros(0, np.float32)]

    configs = [(fastadam.SGD, dict(momentum=0.9)),
               (fastadam.RMSprop, dict(momentum=0.5, centered=True)),
               (fastadam.Adam, dict(amsgrad=True)), (fastadam.AdamW, {})]
    for cls, hyper in configs:
        ps = params()
        grads = [np.ones_like(q) for q in ps]
        opt = cls(ps, **hyper)
        for i in range(N):
            opt.step(grads)
            try:
                opt.step(grads[:2])
            except ValueError:
                pass
            if i % 10 == 0:
                opt.load_state_dict(opt.state_dict())
        for _ in range(N // 10):
            cls(params(), **hyper).step(grads)

    big = [np.ones(3 * 2**17, np.float32) for _ in range(4)]
    old = fastadam.get_num_threads()
    for i in range(N // 20):        # each change stops and starts the pool's threads
        fastadam.set_num_threads(1 + i % 3)
        fastadam.adam_(*big, step=1)
    fastadam.set_num_threads(old)
    print(f"leak_loop: {N} iterations done")


HEADER = re.compile(r"(Direct|Indirect) leak of (\d+) byte\(s\) in (\d+) object\(s\)")
OURS = re.compile(r"fastadam/_(core|simd_\w+)\.\w|/fastadam/_\w+\.(pyx|pxi|c):")
IMPORT = re.compile(r"PyInit__(core|simd)|__pyx_pymod_exec|__Pyx_InitCachedConstants|"
                    r"__Pyx_InitConstants|__Pyx_CreateStringTabAndInitStrings")


def check(folder):
    """Print and count the reports' leaks that scale with N or come from fastadam, and any
    other sanitizer error."""
    blocks, bad = 0, 0
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name)) as f:
            text = f.read()
        if re.search(r"ERROR: AddressSanitizer|runtime error:", text):
            bad += 1
            print(text[:5000])
        for block in re.split(r"\n(?=(?:Direct|Indirect) leak of)", text):
            m = HEADER.search(block)
            if not m:
                continue
            blocks += 1
            objects = int(m.group(3))
            ours = any(OURS.search(line) for line in block.splitlines())
            at_import = IMPORT.search(block) is not None
            if objects >= N // 2 or (ours and not at_import):
                bad += 1
                print(block.strip()[:3000], end="\n\n")
    print(f"leak check: {blocks} leak reports read, {bad} from fastadam or growing "
          f"with the {N} iterations")
    return 1 if bad else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--check"]:
        sys.exit(check(sys.argv[2]))
    workload()
