"""Generate the compiled core's per-optimizer code from fastadam/_registry.py.

    python fastadam/_generate.py        (setup.py runs it before every build)

Renders each ``X.tp`` template in this folder (Tempita, which ships with Cython) into ``X``:
_kernels.pxd (dtype and kernel enums, the validated-hyperparameter structs, the table
type), _kernels.pxi (the SIMD modules' entry points and table), _optimizers.pxi (validation,
``prepare`` dispatch and functional wrappers in _core) and _core.pyi (the type stubs). The
outputs are build products (.gitignore); a file is only rewritten when its text changes,
so that an unchanged registry triggers no rebuild. Reads the registry by path: the package
need not be importable (it is not, before its first build).
"""

import os
import re
import runpy
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATES = ("_kernels.pxd", "_kernels.pxi", "_optimizers.pxi", "_core.pyi")

# kind -> (Cython declaration of the field, the validator call; {n}: the name)
_READ = {
    "nonneg": "h.{n} = _nonneg({n}, {q})",
    "positive": "h.{n} = _positive({n}, {q})",
    "finite": "h.{n} = _finite({n}, {q})",
    "unit": "h.{n} = _unit({n}, {q})",
    "unit_pair": "_unit_pair({n}, {q}, '{n}[0]', '{n}[1]', h.{n})",
    "real_pair": "_real_pair({n}, {q}, '{n}[0]', '{n}[1]', h.{n})",
    "flag": "h.{n} = _flag({n}, {q})",
}
_STUB = {"nonneg": "_Real", "positive": "_Real", "finite": "_Real", "unit": "_Real",
         "unit_pair": "Tuple[_Real, _Real]", "real_pair": "Tuple[_Real, _Real]",
         "flag": "bool"}


# Appended to every functional's docstring: the 16-bit options every functional takes.
_HALF_DOC = """

    16-bit arrays (float16, ``ml_dtypes.bfloat16``) are computed in float32 and rounded to
    nearest even when stored; ``param_copy``: for a float32 param, a 16-bit array that
    receives the updated param rounded to nearest, in the same pass; ``rounding``:
    ``"stochastic"`` rounds a 16-bit param unbiasedly with random bits keyed by ``seed``
    and the step (docs/user-guide.md, "16-bit params"). A state given as a
    :class:`fastadam.quant.QuantizedState` is 8-bit (uint8 codes, an absmax per block of 256):
    dequantized, stepped in float32 and requantized to the nearest code in the same pass
    (all states of the tensor 8-bit; docs/user-guide.md, "8-bit states").
    """


class _Obj(dict):
    __getattr__ = dict.__getitem__


def _cdecl(h, kinds):
    ctype = kinds[h.kind][0]
    if ctype.endswith("]"):
        base, dim = ctype[:-1].split("[")
        return f"{base} {h.name}[{dim}]"
    return f"{ctype} {h.name}"


def _cexpr(when, names):
    """A registry condition over hyperparameter names as C on the struct ``h``."""
    return re.sub(r"\b[A-Za-z_]\w*\b",
                  lambda m: f"h.{m.group(0)}" if m.group(0) in names else m.group(0), when)


def has_check(here, kernel):
    """Whether kernels/<kernel>.pxi defines the optional cross-parameter check
    ``<kernel>_check(const <kernel>_hp* h) except -1`` (nesterov needs momentum, say),
    which validation runs after each hyperparameter's own check."""
    with open(os.path.join(here, "kernels", f"{kernel}.pxi")) as f:
        return re.search(rf"^cdef inline int {kernel}_check\(", f.read(), re.M) is not None


def context(reg, reg_dir=HERE):
    kinds = reg["KINDS"]
    suffix = {"float32": "f32", "float64": "f64", "bfloat16": "bf16", "float16": "f16"}
    names = [d[0] for d in reg["DTYPES"]]
    dtypes = [_Obj(name=n, ctype=c, npy=npy, index=i, code=suffix[n].upper(),
                   suffix=suffix[n], compute=suffix[comp].upper(), half=n != comp)
              for i, (n, c, npy, comp) in enumerate(reg["DTYPES"])]
    computes = [d for d in dtypes if not d.half]
    if [d.index for d in computes] != list(range(len(computes))):
        raise ValueError("DTYPES: the compute dtypes must come first (the table's index)")
    mixing = {role: [[int(b in reg["MIXING"][a][role]) for b in names] for a in names]
              for role in ("grad", "state", "copy")}
    state8 = [int(reg["MIXING"][a]["state8"]) for a in names]
    kernels, entries = [], []
    first = reg["kernels"]()
    for i, (kname, opt) in enumerate(first.items()):
        names = [h.name for h in opt.hyper]
        kernels.append(_Obj(
            name=kname, index=i, kid=f"K_{kname.upper()}", nstates=len(opt.states),
            hyper=[_Obj(name=h.name, cdecl=_cdecl(h, kinds)) for h in opt.hyper],
            state_names=tuple(s.name for s in opt.states),
            state_why=tuple(reg["why"](s) if s.when else "" for s in opt.states),
            nscalars=len(opt.scalars), scalar_names=tuple(c.name for c in opt.scalars),
            min_per_thread=opt.min_per_thread or reg["DEFAULT_MIN_PER_THREAD"],
            grad_mul=(f"-1.0 if hp.d.{kname}.maximize else 1.0" if "maximize" in names
                      else "1.0")))
    for i, opt in enumerate(reg["OPTIMIZERS"]):
        base = first[opt.kernel]
        if [h.name for h in opt.hyper] != [h.name for h in base.hyper] or \
                [s.name for s in opt.states] != [s.name for s in base.states] or \
                [c.name for c in opt.scalars] != [c.name for c in base.scalars]:
            raise ValueError(f"{opt.name}: an entry sharing kernel {opt.kernel!r} must have "
                             f"its hyperparameters, states and scalars")
        names = {h.name for h in opt.hyper}
        offered = [h for h in opt.hyper if h.name not in opt.fixed]
        read = []
        for h in opt.hyper:
            if h.kind not in kinds:
                raise ValueError(f"{opt.name}.{h.name}: unknown constraint kind {h.kind!r}")
            if h.name in opt.fixed:
                read.append(f"h.{h.name} = {opt.fixed[h.name]!r}")
            else:
                read.append(_READ[h.kind].format(n=h.name, q=repr(h.name)))
        if has_check(reg_dir, opt.kernel):
            read.append(f"{opt.kernel}_check(h)")
        need = [f"hp.need[{j}] = " + ("True" if s.when is None else _cexpr(s.when, names))
                for j, s in enumerate(opt.states)]
        # the functional's mask of the states its options use (the converter's smask)
        smask = " | ".join(f"{1 << j}" if s.when is None else
                           f"({1 << j} if {_cexpr(s.when, names)} else 0)"
                           for j, s in enumerate(opt.states)) or "0"
        missing = []
        for s in opt.states:
            if s.when is not None:
                message = f"Invalid {s.name}: required when {reg['why'](s)}, got None"
                missing.append(f"if ({_cexpr(s.when, names)}) and {s.name} is None:\n"
                               f"        raise ValueError({message!r})")
        scalar_names = [c.name for c in opt.scalars]
        positional = (["param", "grad"] + [s.name for s in opt.states if s.when is None]
                      + scalar_names)
        kw_states = [s.name for s in opt.states if s.when is not None]
        order = [n for n in opt.order or (kw_states + [h.name for h in offered]
                                          + (["step"] if opt.step else []))
                 if n not in opt.fixed]
        want = set(kw_states) | {h.name for h in offered} | ({"step"} if opt.step else set())
        if set(order) != want or len(order) != len(want):
            raise ValueError(f"{opt.name}: order must list {sorted(want)}")
        defaults = {h.name: repr(h.default) for h in offered}
        sig = list(positional)
        stub = [f"{n}: {'_Float' if n in ('param', 'grad') else '_State'}" for n in positional]
        if order:
            sig.append("*")
            stub.append("*")
        kinds_of = {h.name: h.kind for h in offered}
        for n in order:
            if n == "step":
                required = opt.step == reg["REQUIRED"]
                sig.append("step" if required else "step=None")
                stub.append("step: int" if required else "step: Optional[int] = ...")
            elif n in kinds_of:
                sig.append(f"{n}={defaults[n]}")
                stub.append(f"{n}: {_STUB[kinds_of[n]]} = ...")
            else:
                sig.append(f"{n}=None")
                stub.append(f"{n}: Optional[_State] = ...")
        # Every functional: the 16-bit options (fastadam/_validate.pxi _rounding).
        if not order:
            sig.append("*")
            stub.append("*")
        sig += ["param_copy=None", "rounding='nearest'", "seed=0"]
        stub += ["param_copy: Optional[_Float] = ...", "rounding: str = ...", "seed: int = ..."]
        req = ["REQ_GRAD"] + [f"REQ_STATE << {j}" for j, s in enumerate(opt.states)
                              if s.when is None]
        step_expr = {None: "0", "optional": "0 if step is None else _step(step)",
                     reg["REQUIRED"]: "_step(step)"}[opt.step]
        entries.append(_Obj(
            name=opt.name, index=i, kernel=opt.kernel, kid=f"K_{opt.kernel.upper()}",
            args=[h.name for h in offered], defaults=defaults, read_lines=read,
            need_lines=need, missing_lines=missing, state_names=[s.name for s in opt.states],
            smask=smask,
            signature=", ".join(sig), stub=", ".join(stub), doc=opt.doc.rstrip() + _HALF_DOC,
            scalar_names=scalar_names,
            required=" | ".join(f"({r})" for r in req), step_expr=step_expr,
            step_key=step_expr,
            grad_mul=("-1.0 if h.maximize else 1.0" if "maximize" in names else "1.0")))
    return dict(dtypes=dtypes, computes=computes, mixing=mixing, state8=state8,
                state8_block=reg["STATE8_BLOCK"],
                kernels=kernels,
                entries=entries, max_states=reg["MAX_STATES"], max_scalars=reg["MAX_SCALARS"],
                dtype_names=" or ".join(d.name for d in dtypes),
                roundings=tuple(reg["ROUNDINGS"]))


def generate(here=HERE, verbose=False):
    """Render every template; returns the paths rewritten."""
    from Cython import Tempita

    reg = runpy.run_path(os.path.join(here, "_registry.py"))
    ctx = context(reg, here)
    changed = []
    for name in TEMPLATES:
        with open(os.path.join(here, name + ".tp")) as f:
            text = Tempita.Template(f.read(), name=name + ".tp").substitute(ctx)
        path = os.path.join(here, name)
        old = None
        if os.path.exists(path):
            with open(path) as f:
                old = f.read()
        if text != old:
            with open(path, "w") as f:
                f.write(text)
            changed.append(path)
            if verbose:
                print(f"generated {path}")
    return changed


if __name__ == "__main__":
    generate(verbose=True)
    sys.exit(0)
