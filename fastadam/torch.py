"""torch.optim drop-ins that step CPU tensors with fastadam's fused kernels.

``fastadam.torch.Adam``, ``AdamW``, ``SGD`` and ``RMSprop`` are ``torch.optim.Optimizer``
subclasses with torch.optim's signatures, defaults, param groups, ``zero_grad``, closures,
hooks and ``state_dict()`` format::

    import fastadam.torch
    opt = fastadam.torch.AdamW(model.parameters(), lr=1e-3)
    for x, y in data:
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()                  # every param of a group in one native call

A step updates the params and the state tensors in place through zero-copy NumPy views, so
``opt.state`` holds ordinary torch tensors under torch's own names (``'step'``,
``'exp_avg'``, ...), and a checkpoint moves between ``torch.optim.Adam`` and
``fastadam.torch.Adam`` in either direction. The views, the validation and a
:class:`fastadam._core.Plan` per param group are built once and reused while the group's
params with a gradient, their memory and their state tensors stay the same.

Supported: dense, contiguous float32, float64, bfloat16 and float16 CPU tensors (the 16-bit
ones computed in float32 and rounded to nearest even on store, as torch's fused CPU
kernels; see :class:`_Optimizer` for master weights, 16-bit states and stochastic
rounding) and, with ``state_bits=8``, 8-bit block-wise states in bitsandbytes' layout (see
:class:`_Optimizer`). Sparse gradients, other devices and dtypes, non-contiguous tensors,
``capturable=True`` and ``differentiable=True`` raise a TypeError or ValueError naming the
param or option, before anything is written. ``foreach``
and ``fused`` are accepted and kept (fastadam's step is always one fused multi-tensor call),
so that state dicts from torch's fused or foreach optimizers load unchanged.

Gradient policy (group keys, one value for the whole step, as fastadam.optim's classes):
``nonfinite="propagate" | "skip" | "raise"`` and ``max_grad_norm`` (torch's
``clip_grad_norm_`` rule), from one pre-pass over the grads; ``opt.grad_norm`` is the last
step's norm. Under torch.distributed the pre-pass's ``[sum of squares, non-finite]`` is
summed by one all-reduce over ``process_group`` (a keyword of every class), or else over the
1-D mesh of DTensor params (FSDP2's shards), which are stepped by their local shards.

Importing ``fastadam`` does not import torch; this module needs it
(``pip install "fastadam[torch]"``).
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Dict, List, Optional, Tuple

if __name__ != "fastadam.torch":  # pragma: no cover - only when the package folder is on sys.path
    raise ImportError(
        f"fastadam/torch.py was imported as the top-level module {__name__!r}, which would "
        "hide PyTorch: the fastadam package folder is on sys.path (a script run from inside "
        "it?). Run from another directory.")

try:
    import torch  # the real PyTorch: absolute import, not this module
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError('fastadam.torch needs PyTorch, which is not installed: '
                      'pip install "fastadam[torch]" (a CPU build of torch is enough)') from e

import numpy as np
from torch.optim import Optimizer as _TorchOptimizer

from . import _core, _registry, quant as _quant
from .optim import MASTER, _flag, _initial_value, _storage as _storage16

__all__ = ["Adam", "AdamW", "SGD", "RMSprop", "Lion", "Adagrad", "Adamax",
           "Adadelta", "RAdam", "Rprop", "NAdam", "ASGD"]

_FLOATS = (torch.float32, torch.float64)
# The storage dtypes of the core (fastadam/_registry.py DTYPES) as torch dtypes.
_DTYPE_NAMES = {getattr(torch, name): name for name in _registry.DTYPE_NAMES}
_BY_NAME = {name: dt for dt, name in _DTYPE_NAMES.items()}
_HALF = tuple(_BY_NAME[name] for name in _registry.HALF_DTYPES)
# Stochastic rounding's generator is keyed by (seed, step, tensor): a group's plan numbers
# its tensors from 0, so the seed is offset per group; optimizers without state['step']
# (SGD, Lion) count their stochastic steps in the group (``SR_STEP``) and offset by it.
_GROUP_SALT = 0x9E3779B97F4A7C15
_STEP_SALT = 0xBF58476D1CE4E5B9
SR_STEP = "sr_step"
_STORAGE_DEFAULTS = {"rounding": "nearest", "seed": 0}
# The gradient policy (group keys, one for the whole step): as fastadam.optim's classes.
_POLICY_DEFAULTS = {"nonfinite": "propagate", "max_grad_norm": None}
_STRIDED = torch.strided
# 8-bit states (state_bits=8): bitsandbytes' layout. State k of the kernel (registry order)
# is 'state{k+1}', as uint8 codes of the param's shape when it is 8-bit, with
# 'absmax{k+1}' (float32, one per block of 256) and 'qmap{k+1}' (float32, 256 entries); a
# bitsandbytes state_dict wraps these under _BNB_WRAP, and keeps 'step' as an int.
_Q8_DEFAULTS = {"state_bits": 32, "min_8bit_size": _registry.MIN_8BIT_SIZE}
_BNB_WRAP = "__bnb_optimizer_quant_state__"
_Q8_KEY = re.compile(r"(state|absmax|qmap)[1-9][0-9]*")


def _q8_names(k: int) -> Tuple[str, str, str]:
    return f"state{k + 1}", f"absmax{k + 1}", f"qmap{k + 1}"


def _storage(hyper: Dict[str, Any], storage: Dict[str, Any]) -> Dict[str, Any]:
    """``hyper`` with the storage options: the 16-bit ones (fastadam.optim's) and
    ``state_bits``/``min_8bit_size``."""
    storage = dict(storage)
    q8 = {k: storage.pop(k) for k in _Q8_DEFAULTS if k in storage}
    policy = {k: storage.pop(k, v) for k, v in _POLICY_DEFAULTS.items()}
    pg = {"process_group": storage.pop("process_group")} if "process_group" in storage else {}
    return {**_storage16(hyper, storage), **_Q8_DEFAULTS, **q8, **policy, **pg}


def _state_bits(x: Any) -> int:
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)) \
            or int(x) not in _registry.STATE_BITS:
        raise ValueError(f"Invalid state_bits: {x!r} (expected one of "
                         f"{', '.join(map(str, _registry.STATE_BITS))})")
    return int(x)


def _min_8bit_size(x: Any) -> int:
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)) or x < 0:
        raise ValueError(f"Invalid min_8bit_size: {x!r} (expected an int >= 0)")
    return int(x)
# Tell autograd that a param changed in place (the kernels write behind its back), so that
# a graph which saved the old value raises as it would after torch.optim's step.
_bump_versions = getattr(getattr(torch.autograd, "graph", None), "increment_version", None)
# torch.compile must not trace into a step: its NumPy calls write tensors behind autograd's
# back (torch.optim's zero_grad is excluded the same way).
_no_dynamo = getattr(torch, "_disable_dynamo", lambda fn: fn)


def _dtensor_type() -> Any:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:     # a torch built without torch.distributed
        return ()
    return DTensor


_DTENSOR = _dtensor_type()


def _local(t: Any) -> Any:
    """What this process steps of ``t``: a DTensor's local shard (FSDP2, tensor-parallel
    params and their states; the update is elementwise, so each rank steps its shard),
    anything else as it is."""
    return t._local_tensor if _DTENSOR and isinstance(t, _DTENSOR) else t


def _ptr(t: torch.Tensor) -> int:
    return _local(t).data_ptr()     # (a DTensor's own data_ptr() is 0)


def _scalar_dtype(group: Dict[str, Any]) -> torch.dtype:
    """The dtype torch.optim gives ``state['step']`` (torch/optim/optimizer.py)."""
    if group.get("fused"):
        return torch.float32
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _where(group: Dict[str, Any], gi: int, j: int) -> str:
    names = group.get("param_names")
    where = f"param_groups[{gi}]['params'][{j}]"
    if isinstance(names, (list, tuple)) and j < len(names):
        where += f" ({names[j]!r})"
    return where


def _names(dtypes) -> str:
    return " or ".join(str(d) for d in dtypes)


def _allowed(stepped: torch.dtype, role: str) -> Tuple[torch.dtype, ...]:
    """The dtypes the core takes for a ``role`` ("grad", "state") of a param stepped in
    ``stepped`` (the param's dtype, or float32 for a 16-bit param with a master copy)."""
    return tuple(_BY_NAME[n] for n in _registry.MIXING[_DTYPE_NAMES[stepped]][role])


def _check_tensor(t: Any, what: str, like: Optional[torch.Tensor] = None,
                  role: Optional[str] = None, stepped: Optional[torch.dtype] = None) -> None:
    """Raise unless ``t`` can be updated in place through a NumPy view: a dense, contiguous
    float32/float64/bfloat16/float16 CPU tensor; given ``like`` (its param), of its shape
    and of its dtype, or with ``role`` ("grad", "state") of a dtype the core's MIXING table
    allows for a param stepped in ``stepped`` (default: the param's dtype). A DTensor is
    checked by its local shard."""
    t, like = _local(t), _local(like)
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"Invalid {what}: expected a torch.Tensor, got {type(t).__name__}")
    if t.layout is not _STRIDED:
        raise ValueError(f"Invalid {what}: layout {t.layout}; fastadam.torch steps dense "
                         f"(strided) tensors only")
    if t.device.type != "cpu":
        raise ValueError(f"Invalid {what}: on device {t.device}; fastadam.torch steps CPU "
                         f"tensors only")
    if like is None:
        if t.dtype not in _DTYPE_NAMES:
            raise TypeError(f"Invalid {what} dtype: expected {_names(_DTYPE_NAMES)}, "
                            f"got {t.dtype}")
    else:
        if role is None:
            if t.dtype != like.dtype:
                raise TypeError(f"Invalid {what} dtype: expected {like.dtype} (the param's), "
                                f"got {t.dtype}")
        else:
            stepped = stepped or like.dtype
            ok = _allowed(stepped, role)
            if t.dtype not in ok:
                how = "" if stepped == like.dtype else f" with a {stepped} master copy"
                raise TypeError(f"Invalid {what} dtype: a {like.dtype} param{how} takes "
                                f"{_names(ok)} {role}s, got {t.dtype}")
        if t.shape != like.shape:
            raise ValueError(f"Invalid {what} shape: expected {tuple(like.shape)} (the "
                             f"param's), got {tuple(t.shape)}")
    if not t.is_contiguous():
        raise ValueError(f"Invalid {what}: not contiguous (strides {t.stride()}); "
                         f"fastadam.torch updates tensors in place through a NumPy view, "
                         f"which needs a contiguous tensor")


def _bfloat16() -> Any:
    """NumPy's bfloat16 dtype (ml_dtypes'), imported when a bfloat16 tensor is met."""
    try:
        import ml_dtypes
    except ImportError:
        raise ImportError("fastadam.torch steps torch.bfloat16 tensors through NumPy "
                          "views of ml_dtypes.bfloat16, which is not installed: "
                          "pip install ml_dtypes") from None
    return ml_dtypes.bfloat16


def _view(t: torch.Tensor, what: str) -> np.ndarray:
    """A zero-copy NumPy view of ``t``'s memory (the detached alias keeps it alive).
    torch.bfloat16 has no ``.numpy()``: its bits are viewed as int16, then as bfloat16.
    A DTensor's view is its local shard's."""
    t = _local(t)
    try:
        if t.dtype is torch.bfloat16:
            return t.detach().view(torch.int16).numpy().view(_bfloat16())
        return t.detach().numpy()
    except (RuntimeError, TypeError, ValueError) as e:
        raise ValueError(f"Invalid {what}: it has no NumPy view ({e})") from None


def _check_master(t: Any, what: str, p: torch.Tensor) -> None:
    """A 16-bit param's master copy: a float32 tensor of its shape."""
    t, p = _local(t), _local(p)
    _check_tensor(t, what)
    if t.dtype != torch.float32:
        raise TypeError(f"Invalid {what} dtype: expected torch.float32 (the master copy of "
                        f"a {p.dtype} param), got {t.dtype}")
    if t.shape != p.shape:
        raise ValueError(f"Invalid {what} shape: expected {tuple(p.shape)} (the param's), "
                         f"got {tuple(t.shape)}")


def _check_plain(t: Any, what: str, dtype: torch.dtype, shape: Tuple[int, ...]) -> None:
    """A dense, contiguous CPU tensor of this dtype and shape (an 8-bit state's parts)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"Invalid {what}: expected a torch.Tensor, got {type(t).__name__}")
    if t.layout is not _STRIDED or t.device.type != "cpu":
        raise ValueError(f"Invalid {what}: expected a dense CPU tensor, got layout "
                         f"{t.layout} on {t.device}")
    if t.dtype != dtype:
        raise TypeError(f"Invalid {what} dtype: expected {dtype}, got {t.dtype}")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"Invalid {what} shape: expected {tuple(shape)}, got "
                         f"{tuple(t.shape)}")
    if not t.is_contiguous():
        raise ValueError(f"Invalid {what}: not contiguous (strides {t.stride()})")


def _check_q8(st: Dict[str, Any], k: int, p: torch.Tensor, where: str
              ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """State k of ``p`` in its 8-bit form: uint8 codes of the param's shape, a float32
    absmax per block of 256 and a float32 map of 256 entries (bitsandbytes' layout)."""
    names = _q8_names(k)
    out = []
    for name, dtype, shape in zip(names, (torch.uint8, torch.float32, torch.float32),
                                  (tuple(p.shape), (_quant.nblocks(p.numel()),),
                                   (_quant.CODES,))):
        t = st.get(name)
        what = f"state {name!r} of {where}"
        if t is None:
            raise ValueError(f"Invalid {what}: missing ({names[0]!r} holds 8-bit codes, "
                             f"which need {names[1]!r} and {names[2]!r})")
        _check_plain(t, what, dtype, shape)
        out.append(t)
    return out[0], out[1], out[2]


def _state_dtype(x: Any) -> Optional[torch.dtype]:
    if x is None:
        return None
    if x not in _DTYPE_NAMES:
        raise TypeError(f"Invalid state_dtype: expected None or {_names(_DTYPE_NAMES)}, "
                        f"got {x!r}")
    return x


def _check_rounding(group: Dict[str, Any], where: str) -> None:
    r, seed = group.get("rounding", "nearest"), group.get("seed", 0)
    if not isinstance(r, str):
        raise TypeError(f"Invalid rounding in {where}: expected one of "
                        f"{_registry.ROUNDINGS}, got {type(r).__name__}")
    if r not in _registry.ROUNDINGS:
        raise ValueError(f"Invalid rounding in {where}: {r!r} (expected one of "
                         f"{_registry.ROUNDINGS})")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"Invalid seed in {where}: expected an int, got {type(seed).__name__}")
    if not 0 <= seed < 2 ** 64:
        raise ValueError(f"Invalid seed in {where}: {seed!r} (must be in [0, 2**64))")


def _step_value(state: Dict[str, Any], what: str) -> float:
    s = state.get("step")
    try:
        v = float(s)      # a number or a one-element tensor
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"Invalid state 'step' of {what}: expected a number or a "
                         f"one-element tensor, got {s!r}") from None
    if not (math.isfinite(v) and v >= 0 and v == int(v)):
        raise ValueError(f"Invalid state 'step' of {what}: {v!r} (must be a whole number >= 0)")
    return v


def _scalar_value(t: Any, what: str) -> float:
    """A per-tensor scalar state's value (a number or a one-element tensor)."""
    if t is None:
        raise ValueError(f"Invalid {what}: missing (torch.optim fails here too)")
    try:
        return float(t)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"Invalid {what}: expected a number or a one-element tensor, "
                         f"got {t!r}") from None


class _Entry:
    """One param group's params that have a gradient, checked once: their NumPy views,
    state tensors and views, data pointers (to notice a change), step counts, and the
    plan(s) that step them. Rebuilt when any of that changes."""

    def __init__(self, opt: "_Optimizer", gi: int, group: Dict[str, Any],
                 params: List[torch.Tensor], slots: Tuple[Optional[str], ...]):
        # positions in the group (the same filter as step's, so the same order)
        pos = [j for j, p in enumerate(group["params"]) if p.grad is not None]
        n = len(params)
        self.gi = gi
        self.params = params
        self.locals = [_local(p) for p in params]   # the tensors written (DTensor: shard)
        self.slots = slots
        self.names = [_where(group, gi, j) for j in pos]
        self.scalar_names = opt._scalar_names
        keys = (("step",) if opt._has_step else ()) + self.scalar_names
        self.keys: List[Tuple[str, ...]] = []      # per param: its tensors' state keys
        self.dtypes = [p.dtype for p in params]
        self.shapes = [p.shape for p in params]
        self.views: List[np.ndarray] = []           # what the kernel steps: param or master
        self.copies: List[Optional[np.ndarray]] = []    # a master's 16-bit param, or None
        self.stepped: List[torch.Tensor] = []
        self.state_views: List[Tuple[Optional[np.ndarray], ...]] = []
        self.new_states: List[Dict[str, Any]] = []   # per param: entries to add at commit
        steps: List[float] = []
        scalar_values: List[List[float]] = [[] for _ in self.scalar_names]
        scalar_f64: List[bool] = []     # per param: its scalar states are float64
        slot_tensors: List[Tuple[torch.Tensor, ...]] = []
        written_tensors: List[Tuple[torch.Tensor, ...]] = []
        for p, name in zip(params, self.names):
            _check_tensor(p, name)
            self.views.append(_view(p, name))
            st = opt.state.get(p) or {}
            new = opt._new_state(p, group, st, slots)
            self.new_states.append(new)
            steps.append(opt._initial_step(st, new, name))
            f64 = _scalar_dtype(group) == torch.float64
            for k, (sname, init) in enumerate(zip(self.scalar_names, opt._scalar_inits)):
                if sname in new:
                    scalar_values[k].append(float(group[init]) if isinstance(init, str)
                                            else float(init))
                else:
                    t = st.get(sname)
                    scalar_values[k].append(_scalar_value(t, f"state {sname!r} of {name}"))
                    if k == 0 and torch.is_tensor(t) and t.dtype in _FLOATS:
                        f64 = t.dtype == torch.float64
            scalar_f64.append(f64)
            merged = {**st, **new}
            master = merged.get(MASTER) if p.dtype in _HALF else None
            if master is not None:
                what = f"state {MASTER!r} of {name}"
                _check_master(master, what, p)
                self.views.append(_view(master, what))
                self.copies.append(self.views[-2])
                del self.views[-2]
            else:
                self.copies.append(None)
            stepped = p if master is None else master
            self.stepped.append(stepped)
            row, tens, skeys, written = [], [], [], []
            for k, sname in enumerate(slots):
                if sname is None:
                    row.append(None)
                    continue
                t = merged.get(sname)
                if t is None:
                    raise ValueError(f"Invalid state of {name}: {sname!r} is missing (the "
                                     f"group's options changed since this state was made; "
                                     f"torch.optim fails here too)")
                what = f"state {sname!r} of {name}"
                if torch.is_tensor(t) and t.dtype == torch.uint8:
                    # 8-bit: codes, absmax, map (the map is shared and never written)
                    parts = _check_q8(merged, k, p, name)
                    row.append(_quant.QuantizedState(*(_view(x, f"state {nm!r} of {name}")
                                                       for x, nm in zip(parts,
                                                                        _q8_names(k)))))
                    tens.extend(parts)
                    skeys.extend(_q8_names(k))
                    written.extend(parts[:2])
                    continue
                _check_tensor(t, what, like=p, role="state", stepped=stepped.dtype)
                row.append(_view(t, what))
                tens.append(t)
                skeys.append(sname)
                written.append(t)
            self.keys.append(keys + tuple(skeys) + ((MASTER,) if master is not None else ()))
            self.state_views.append(tuple(row))
            slot_tensors.append(tuple(tens) + ((master,) if master is not None else ()))
            written_tensors.append(tuple(written) + ((master,) if master is not None else ()))
        if opt._has_step:
            # One buffer holds every param's 'step' (each state['step'] is a 0-d view of
            # it), so that reading and advancing n step counters is one NumPy operation.
            self.step_buf: Optional[torch.Tensor] = torch.tensor(
                steps, dtype=_scalar_dtype(group))
            self.steps = self.step_buf.numpy()
            step_views = [self.step_buf[i] for i in range(n)]
        else:
            self.step_buf = None
            self.steps = np.array(steps)
            step_views = [None] * n
        # Per-tensor scalar states (NAdam's mu_product, ...): like 'step', each param's state
        # entry is a 0-d view of a buffer, one per scalar and dtype. The dtype: the param's
        # existing tensor's (torch.optim's load_state_dict casts them to the param's dtype),
        # else torch's scalar dtype; a run (one native call) has one.
        self.scalar_f64 = np.array(scalar_f64, dtype=bool)
        self.scalar_bufs = [(torch.tensor(v, dtype=torch.float32),
                             torch.tensor(v, dtype=torch.float64)) for v in scalar_values]
        self.scalar_np = [tuple(b.numpy() for b in pair) for pair in self.scalar_bufs]
        scalar_views = [tuple(pair[int(f)][i] for pair in self.scalar_bufs)
                        for i, f in enumerate(scalar_f64)]
        self.one_dtype = bool(n) and bool(self.scalar_f64.all() or not self.scalar_f64.any())
        self.scalars0 = self.scalar_args(0) if self.scalar_names and n else None
        self.tensors = [((sv,) if opt._has_step else ()) + scv + tens
                        for sv, scv, tens in zip(step_views, scalar_views, slot_tensors)]
        self.ptrs = [(_ptr(p),) + tuple(_ptr(t) for t in tens)
                     for p, tens in zip(params, self.tensors)]
        # Byte ranges of everything the kernels write (for the cross-group overlap check).
        lo, hi = [], []
        for p, tens in zip(params, written_tensors):
            for t in (p,) + tens:
                t = _local(t)
                nb = t.numel() * t.element_size()
                if nb:
                    lo.append(t.data_ptr())
                    hi.append(t.data_ptr() + nb)
        self.w_lo = np.array(lo, dtype=np.uint64)
        self.w_hi = np.array(hi, dtype=np.uint64)
        self.plan_keys = [str(j) for j in pos]
        self._kernel = opt._kernel
        self.plan = self._make_plan()
        self.committed = False

    def _make_plan(self) -> "_core.Plan":
        try:
            return _core.Plan(self._kernel, self.views, self.state_views, self.plan_keys,
                              self.copies)
        except (TypeError, ValueError) as e:
            raise type(e)(f"param_groups[{self.gi}]: {e}") from None

    def matches(self, state, params: List[torch.Tensor], slots) -> bool:
        """Whether this entry still describes ``params`` and their state (cheap: identity and
        data-pointer checks, no validation)."""
        if slots != self.slots or len(params) != len(self.params):
            return False
        for p, q, dt, sh, tens, ptrs, keys in zip(params, self.params, self.dtypes,
                                                  self.shapes, self.tensors, self.ptrs,
                                                  self.keys):
            if (p is not q or _ptr(p) != ptrs[0] or p.dtype is not dt
                    or p.shape != sh or not _local(p).is_contiguous()):
                return False
            if keys:
                st = state.get(p)
                if st is None:
                    return False
                # (a master put into or taken out of the state changes what is stepped)
                if dt in _HALF and (st.get(MASTER) is None) == (keys[-1] == MASTER):
                    return False
                for k, t, ptr in zip(keys, tens, ptrs[1:]):
                    if st.get(k) is not t or _ptr(t) != ptr:
                        return False
        return True

    def grads(self) -> Tuple[List[np.ndarray], Tuple[List[int], List[int]]]:
        """Validated NumPy views of the params' gradients, and their data pointers and byte
        counts."""
        out, ptrs, nbytes = [], [], []
        for p, stepped, name in zip(self.params, self.stepped, self.names):
            g = p.grad
            if g.layout is not _STRIDED:
                raise ValueError(f"Invalid grad of {name}: layout {g.layout}; sparse gradients "
                                 f"are not supported (torch.optim.Adam rejects them too)")
            what = f"grad of {name}"
            _check_tensor(g, what, like=p, role="grad", stepped=stepped.dtype)
            gv = _view(g, what)
            ptr = _ptr(g)
            if ptr % gv.itemsize:
                raise ValueError(f"Invalid {what}: its data is not aligned to its itemsize")
            out.append(gv)
            ptrs.append(ptr)
            nbytes.append(gv.nbytes)
        return out, (ptrs, nbytes)

    def scalar_args(self, i: int) -> Tuple[np.ndarray, ...]:
        """Param ``i``'s scalar states as the plan takes them: 0-d views of the buffers."""
        f = int(self.scalar_f64[i])
        return tuple(pair[f][i:i + 1].reshape(()) for pair in self.scalar_np)

    def spread(self, rep: int, idx: Optional[np.ndarray]) -> None:
        """After a run stepped param ``rep``'s scalar states, give them to the whole run
        (whose scalar states all have ``rep``'s dtype)."""
        f = int(self.scalar_f64[rep])
        for pair in self.scalar_np:
            a = pair[f]
            if idx is None:
                a[:] = a[rep]
            else:
                a[idx] = a[rep]

    def runs(self, hyper: "_core.Hyperparams", by_step: bool) -> Tuple[list, Optional[
            np.ndarray], List[Tuple[int, Optional[np.ndarray]]]]:
        """The arguments of the plan's step_runs: ``(runs, run_of)``, a run per distinct
        (step count, scalar values), since params whose gradient was None on some steps lag
        behind the others (``run_of`` None: one run of every param, the usual case); and per
        run the param holding its scalar states and the run's params, for :meth:`spread`."""
        s = self.steps
        scal = self.scalar_np
        if not by_step and not scal:
            return [(hyper, 1, None)], None, [(0, None)]
        lo = float(s.min())
        f = int(self.scalar_f64[0]) if scal else 0
        if lo == s.max() and (not scal or self.one_dtype and all(
                pair[f].min() == pair[f].max() for pair in scal)):
            self._check_step(lo)
            return [(hyper, int(lo) + 1, self.scalars0)], None, [(0, None)]
        f64 = self.scalar_f64
        rows = np.stack([s.astype(np.float64), f64.astype(np.float64)]
                        + [np.where(f64, pair[1], pair[0].astype(np.float64))
                           for pair in scal], 1)
        values, first, inverse = np.unique(rows, axis=0, return_index=True,
                                           return_inverse=True)
        inverse = inverse.reshape(-1)
        for v in values:
            self._check_step(float(v[0]))
        runs = [(hyper, int(v[0]) + 1, self.scalar_args(int(i)) if scal else None)
                for v, i in zip(values, first)]
        reps = [(int(i), np.flatnonzero(inverse == k)) for k, i in enumerate(first)]
        return runs, inverse.astype(np.intp), reps

    def _check_step(self, v: float) -> None:
        # The step tensors are views anyone may write to: check what the kernel will use.
        if not (math.isfinite(v) and v >= 0 and v == int(v)):
            s = self.steps
            i = int(np.flatnonzero(~(np.isfinite(s) & (s >= 0) & (s == np.floor(s))))[0])
            raise ValueError(f"Invalid state 'step' of {self.names[i]}: {float(s[i])!r} "
                             f"(must be a whole number >= 0)")

    def commit(self, opt: "_Optimizer") -> None:
        """Put new state tensors and the shared step views into ``opt.state`` (once)."""
        if self.committed:
            return
        for p, new, tens in zip(self.params, self.new_states, self.tensors):
            if opt._has_step:
                st = opt.state[p]
                st.update(new)
                st["step"] = tens[0]
                for k, sname in enumerate(self.scalar_names):
                    st[sname] = tens[1 + k]
            elif new:               # SGD keeps no state without momentum, as torch
                opt.state[p].update(new)
        self.new_states = []
        self.committed = True
        opt._entries[self.gi] = self


_NO_SR_WITH_MASTER = ("Invalid rounding: 'stochastic' rounds 16-bit params stepped in place; "
                      "with master_weights=True the float32 master keeps the precision and "
                      "the 16-bit param is its nearest value")


class _Optimizer(_TorchOptimizer):
    """Shared machinery: param-group checks, the cached per-group plans, and ``step``.

    A subclass names its registry entry (fastadam/_registry.py) in ``_name``; the rest
    (validation, which states exist and when they are made, ``state['step']``, the plan's
    kernel) follows from the entry.

    16-bit storage, keywords of every class: a torch.bfloat16 or torch.float16 param is
    computed in float32 and stored rounded to nearest even; its states are by default in
    its own dtype (as torch's fused optimizers make them), grads in its dtype or float32.

    - ``master_weights=False``: with True, a 16-bit param's first step puts a float32 copy
      of it in ``state[p]['master_param']`` and makes its states float32 (or
      ``state_dtype``); every step updates the master and writes the param as the master
      rounded to nearest, in the same pass; grads may then be float32 or 16-bit. A param
      whose state has a master is stepped through it whatever this flag says.
    - ``state_dtype=None``: the dtype of new states (torch.bfloat16 or torch.float16 halve
      the state memory of float32 params or masters; a 16-bit param without a master keeps
      its own dtype).
    - ``rounding="nearest"``, ``seed=0``: group keys; ``"stochastic"`` rounds 16-bit params
      stepped in place without bias, from a generator keyed by (seed, step, tensor), so a
      resume from a state_dict and any thread count give the same bits (refused with
      master_weights=True). SGD and Lion, which keep no ``state['step']``, count these
      steps in the group's ``'sr_step'``.

    8-bit states (keywords of every class, fixed for the optimizer like master_weights):

    - ``state_bits=32``: with 8, a param of at least ``min_8bit_size`` elements keeps each
      state as uint8 codes of its shape, one float32 absmax per block of 256 elements and a
      256-entry float32 map (bitsandbytes' dynamic maps, signed or unsigned per state as the
      registry's ``State.qmap`` says; one map tensor per kind, shared); the kernels
      dequantize, step in float32 and requantize to the nearest code in one pass
      (fastadam.quant). Smaller params keep states of their param's dtype. float64 params
      of that size are refused; ``state_dtype`` cannot be combined with it.
    - ``min_8bit_size=4096`` (bitsandbytes' default).

    With ``state_bits=8`` the state follows bitsandbytes' 8-bit optimizers, so checkpoints
    move between the two: state k of the kernel is ``'state{k+1}'`` (with
    ``'absmax{k+1}'`` and ``'qmap{k+1}'`` when 8-bit), every optimizer keeps a ``'step'``
    (SGD and Lion too), and ``state_dict()`` gives the steps as ints, wraps the 8-bit
    tensors under ``'__bnb_optimizer_quant_state__'`` and adds to each group the keys
    bitsandbytes reads (SGD's and RMSprop's ``betas``, ...). ``load_state_dict`` takes
    bitsandbytes' checkpoints and gives their groups this class's keys for the rule
    bitsandbytes applied (Adam8bit's weight decay is decoupled).
    """

    _name: str = ""
    # torch.amp.GradScaler: it sets grad_scale and found_inf on the optimizer and calls
    # step(), which unscales inside the fused update (no separate unscale_ pass).
    _step_supports_amp_scaling = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        entry = _registry.by_name(cls._name)
        cls._kernel = getattr(_core, f"KERNEL_{entry.kernel.upper()}")
        cls._state_names = tuple(s.name for s in entry.states)
        cls._state_inits = tuple(s.init for s in entry.states)
        cls._state_qmaps = tuple(s.qmap for s in entry.states)   # their 8-bit maps
        cls._scalar_names = tuple(c.name for c in entry.scalars)
        cls._scalar_inits = tuple(c.init for c in entry.scalars)
        cls._has_step = entry.torch_step                # whether torch keeps state['step']
        cls._by_step = entry.step is not None           # whether the update depends on it
        cls._setdefaults = entry.torch_setdefaults      # what torch's __setstate__ fills in
        # the pair hyperparameters (betas, etas, ...): a list given is kept as a tuple
        cls._pairs = tuple(h.name for h in entry.hyper if h.kind.endswith("_pair"))

    def __init__(self, params, defaults: Dict[str, Any]):
        self._entries: Dict[int, _Entry] = {}
        defaults = dict(defaults)
        for name in self._pairs:
            if isinstance(defaults.get(name), list):
                defaults[name] = tuple(defaults[name])
        # The state's layout: fixed for the optimizer (kept by pickling, see __getstate__),
        # not group keys. rounding and seed are group keys, so a state_dict carries them.
        self.master_weights = _flag(defaults.pop("master_weights", False), "master_weights")
        self.state_dtype = _state_dtype(defaults.pop("state_dtype", None))
        self.state_bits = _state_bits(defaults.pop("state_bits", 32))
        self.min_8bit_size = _min_8bit_size(defaults.pop("min_8bit_size",
                                                          _registry.MIN_8BIT_SIZE))
        self.process_group = _process_group(defaults.pop("process_group", None))
        self.grad_norm: Optional[float] = None
        if self.state_bits == 8 and self.state_dtype is not None:
            raise ValueError(f"Invalid state_dtype: {self.state_dtype} with state_bits=8 "
                             f"(8-bit states are uint8 codes; the tensors below "
                             f"min_8bit_size keep states of their param's dtype)")
        self._set_layout()
        _check_rounding(defaults, "the defaults")
        if self.master_weights and defaults.get("rounding") == "stochastic":
            raise ValueError(_NO_SR_WITH_MASTER)
        super().__init__(params, defaults)

    def _set_layout(self) -> None:
        """The state names and 'step' of this optimizer's layout: with state_bits=8,
        bitsandbytes' ('state1', 'state2', ... and a 'step' for every optimizer)."""
        cls = type(self)
        q8 = getattr(self, "state_bits", 32) == 8
        self.__dict__["_has_step"] = cls._has_step or q8
        self.__dict__["_state_names"] = (tuple(_q8_names(k)[0] for k in range(len(
            cls._state_names))) if q8 else cls._state_names)
        self.__dict__.setdefault("_qmaps", {})

    def _is_8bit(self, p: torch.Tensor) -> bool:
        """Whether ``p``'s new states are 8-bit."""
        return self.state_bits == 8 and p.numel() >= self.min_8bit_size

    def _qmap(self, kind: str) -> torch.Tensor:
        """The optimizer's map tensor of this kind (one shared by its params, as
        bitsandbytes shares its 'dynamic' and 'udynamic' maps)."""
        t = self._qmaps.get(kind)
        if t is None:
            t = self._qmaps[kind] = torch.from_numpy(_quant.dynamic_map(kind == "signed"))
        return t

    def _state_tensors(self, p: torch.Tensor, k: int, name: str, value: float,
                       dtype: torch.dtype) -> Dict[str, torch.Tensor]:
        """New state k of ``p`` filled with ``value``: a tensor of ``dtype``, or its 8-bit
        form (codes, absmax, map) when ``p`` gets 8-bit states."""
        if not self._is_8bit(p):
            return {name: torch.full_like(p, value, dtype=dtype,
                                          memory_format=torch.preserve_format)}
        qmap = self._qmap(self._state_qmaps[k])
        codes = torch.zeros(tuple(p.shape), dtype=torch.uint8)
        absmax = torch.zeros(_quant.nblocks(p.numel()), dtype=torch.float32)
        if value != 0:
            c, a = _quant.quantize(np.full(tuple(p.shape), value, np.float32), qmap.numpy())
            codes.numpy()[...] = c
            absmax.numpy()[...] = a
        c_name, a_name, q_name = _q8_names(k)
        return {c_name: codes, a_name: absmax, q_name: qmap}

    # -- from the registry -----------------------------------------------------------------
    def _slots(self, hyper: "_core.Hyperparams") -> Tuple[Optional[str], ...]:
        """Per state of the kernel: its name when these options use it, else None."""
        return tuple(name if need else None for name, need in zip(self._state_names,
                                                                   hyper.needs))

    def _new_state(self, p: torch.Tensor, group: Dict[str, Any], state: Dict[str, Any],
                   slots: Tuple[Optional[str], ...]) -> Dict[str, Any]:
        """The state entries a param's first step adds, as torch.optim makes them: every
        state the options use when the param has none yet (with ``'step'``); for an
        optimizer without ``state['step']`` (SGD), each used state that is missing."""
        new: Dict[str, Any] = {}
        if not (self._has_step and state):
            if self._has_step:     # the shared step and scalar views, set at commit
                new.update({"step": None, **{c: None for c in self._scalar_names}})
            dtype = self._new_state_dtype(p, state)
            for k, (name, init) in enumerate(zip(slots, self._state_inits)):
                if name and (self._has_step or state.get(name) is None):
                    value = float(group[init]) if isinstance(init, str) else init
                    new.update(self._state_tensors(p, k, name, value, dtype))
        if self._with_master(p, state) and state.get(MASTER) is None:
            new[MASTER] = torch.empty_like(p, dtype=torch.float32,
                                           memory_format=torch.contiguous_format).copy_(p)
        return new

    def _with_master(self, p: torch.Tensor, state: Dict[str, Any]) -> bool:
        """Whether ``p`` is stepped through a float32 master copy (has or gets one)."""
        return p.dtype in _HALF and (self.master_weights or state.get(MASTER) is not None)

    def _new_state_dtype(self, p: torch.Tensor, state: Dict[str, Any]) -> torch.dtype:
        """The dtype of ``p``'s new states (checked against the core's MIXING table)."""
        stepped = torch.float32 if self._with_master(p, state) else p.dtype
        if self._is_8bit(p) and _local(p) is not p:
            raise TypeError(f"Invalid state_bits: 8-bit states of DTensor params are not "
                            f"supported (their blocks and absmax would be per shard); got a "
                            f"DTensor param of {p.numel()} elements (>= min_8bit_size="
                            f"{self.min_8bit_size})")
        if self._is_8bit(p) and not _registry.MIXING[_DTYPE_NAMES[stepped]]["state8"]:
            raise TypeError(f"Invalid state_bits: 8-bit states need a float32, bfloat16 or "
                            f"float16 param, got a {p.dtype} param of {p.numel()} elements "
                            f"(>= min_8bit_size={self.min_8bit_size})")
        dtype = self.state_dtype or stepped
        if dtype not in _allowed(stepped, "state"):
            how = " with a float32 master copy" if stepped != p.dtype else ""
            raise TypeError(f"Invalid state_dtype: a {p.dtype} param{how} takes "
                            f"{_names(_allowed(stepped, 'state'))} states, got {dtype}")
        return dtype

    def _initial_step(self, state: Dict[str, Any], new: Dict[str, Any], what: str) -> float:
        if not self._has_step:
            return 0.0 if new else 1.0      # 0: a state is new, this is its first step
        return 0.0 if "step" in new else _step_value(state, what)

    def _advance(self, entry: "_Entry") -> None:
        if self._has_step:
            entry.steps += 1
        else:
            entry.steps[:] = 1.0

    # -- torch.optim.Optimizer API ---------------------------------------------------------
    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        """Add a group (as torch.optim); its options are validated now."""
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            gi = len(self.param_groups) - 1
            self._check_group(group, f"param_groups[{gi}]")
            for j, p in enumerate(group["params"]):
                where = _where(group, gi, j)
                _check_tensor(p, where)
                try:
                    self._new_state_dtype(p, self.state.get(p) or {})
                except TypeError as e:
                    raise TypeError(f"{e} ({where})") from None
        except (TypeError, ValueError):
            self.param_groups.pop()
            raise

    def __getstate__(self) -> Dict[str, Any]:
        # (a process group is not picklable: a copy reduces over none until given one)
        return {**super().__getstate__(), "process_group": None,
                "master_weights": self.master_weights,
                "state_dtype": self.state_dtype, "state_bits": self.state_bits,
                "min_8bit_size": self.min_8bit_size}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__["_entries"] = {}
        self.__dict__.setdefault("master_weights", False)
        self.__dict__.setdefault("state_dtype", None)
        self.__dict__.setdefault("state_bits", 32)
        self.__dict__.setdefault("min_8bit_size", _registry.MIN_8BIT_SIZE)
        self.__dict__.setdefault("process_group", None)
        self.__dict__.setdefault("grad_norm", None)
        self._set_layout()
        for group in self.param_groups:
            for k, v in self._setdefaults.items():
                group.setdefault(k, v)
            # (a torch.optim checkpoint has no rounding: the optimizer's own is kept)
            for k, v in {**_STORAGE_DEFAULTS, **_POLICY_DEFAULTS}.items():
                group.setdefault(k, self.defaults.get(k, v))
            if not self._has_step:
                continue
            for p in group["params"]:
                st = self.state.get(p)
                if st and "step" in st and not torch.is_tensor(st["step"]):
                    st["step"] = torch.tensor(float(st["step"]), dtype=_scalar_dtype(group))

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Load a state dict (torch.optim's or fastadam.torch's format) as torch.optim does,
        then check every state tensor against its param; on error the previous state and
        groups are put back."""
        saved = (self.state, self.param_groups, self._entries)
        if self.state_bits == 8:
            state_dict = self._from_bnb(state_dict)
        try:
            # torch.optim's own load may fail half way (its __setstate__ converting a 'step'
            # that is no number): what it already replaced is put back as for ours.
            super().load_state_dict(state_dict)
            self._keep_saved_dtypes(state_dict)
            for gi, group in enumerate(self.param_groups):
                self._check_group(group, f"state_dict['param_groups'][{gi}]")
                for j, p in enumerate(group["params"]):
                    st = self.state.get(p)
                    if not st:
                        continue
                    where = _where(group, gi, j)
                    self._check_layout(st, where)
                    if self._has_step:
                        _step_value(st, where)
                    for name in self._scalar_names:     # NAdam's mu_product, ASGD's eta, mu
                        if name in st:
                            _scalar_value(st[name], f"state {name!r} of {where}")
                    master = st.get(MASTER) if p.dtype in _HALF else None
                    if master is not None:
                        _check_master(master, f"state {MASTER!r} of {where}", p)
                    stepped = torch.float32 if master is not None else p.dtype
                    for k, name in enumerate(self._state_names):
                        t = st.get(name)
                        if t is None:
                            continue
                        if torch.is_tensor(t) and t.dtype == torch.uint8:
                            _check_q8(st, k, p, where)
                        else:
                            _check_tensor(t, f"state {name!r} of {where}", like=p,
                                          role="state", stepped=stepped)
        except BaseException:
            self.state, self.param_groups, self._entries = saved
            raise

    def _keep_saved_dtypes(self, state_dict: Dict[str, Any]) -> None:
        """Undo torch.optim's cast of every state tensor to its param's dtype where the
        saved dtype is one the core takes: a 16-bit param's float32 master copy, states of
        another dtype (float32 with a master, 16-bit ones of float32 params) and a 16-bit
        param's float32 scalar states (NAdam's mu_product, ...)."""
        ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for k, p in zip(ids, params):
            saved = state_dict["state"].get(k)
            st = self.state.get(p)
            if not saved or not st or not isinstance(saved, dict):
                continue
            master = saved.get(MASTER)
            has_master = (p.dtype in _HALF and torch.is_tensor(master)
                          and master.dtype == torch.float32)
            stepped = torch.float32 if has_master else p.dtype
            for key, t in saved.items():
                if not torch.is_tensor(t) or t.dtype == p.dtype or key == "step":
                    continue
                keep = ((key == MASTER and has_master)
                        or (self.state_bits == 8 and _Q8_KEY.fullmatch(str(key)) is not None
                            and t.dtype == (torch.uint8 if str(key).startswith("state")
                                            else torch.float32))
                        or (key in self._state_names and t.dtype in _allowed(stepped, "state"))
                        or (key in self._scalar_names and p.dtype in _HALF
                            and t.dtype in _FLOATS))
                if keep:
                    st[key] = t.to(device=p.device)

    def state_dict(self) -> Dict[str, Any]:
        """torch.optim's state_dict; with ``state_bits=8`` in bitsandbytes' form: every
        param's ``'step'`` an int, its ``state{k}``/``absmax{k}``/``qmap{k}`` wrapped under
        ``'__bnb_optimizer_quant_state__'``, and each group with the keys bitsandbytes'
        optimizer of the same rule reads (:meth:`_to_bnb_group`)."""
        sd = super().state_dict()
        if self.state_bits != 8:
            return sd
        state = {}
        for k, v in sd["state"].items():
            v = dict(v)
            if "step" in v:
                v["step"] = int(float(v["step"]))
            wrap = {key: v.pop(key) for key in list(v) if _Q8_KEY.fullmatch(str(key))}
            if wrap:
                v[_BNB_WRAP] = wrap
            state[k] = v
        groups = [{**g, **self._to_bnb_group(g)} for g in sd["param_groups"]]
        return {"state": state, "param_groups": groups}

    def _check_layout(self, st: Dict[str, Any], where: str) -> None:
        """A loaded state in the other layout (8-bit names in a 32-bit optimizer, or
        torch.optim's names with state_bits=8) is refused, naming the option."""
        own = set(self._state_names)
        other = set(type(self)._state_names) if self.state_bits == 8 else {
            _q8_names(k)[0] for k in range(len(own))}
        found = sorted(str(k) for k in st if k in other - own or k == _BNB_WRAP)
        if found:
            want = ("8-bit states (state_bits=8)" if self.state_bits == 32 else
                    "torch.optim's state names (state_bits=32)")
            raise ValueError(f"Invalid state of {where}: {', '.join(map(repr, found))} "
                             f"belong to {want}; this optimizer has state_bits="
                             f"{self.state_bits}")

    def _from_bnb(self, state_dict: Dict[str, Any]) -> Dict[str, Any]:
        """A state dict with bitsandbytes' wrapped 8-bit states unwrapped and its groups
        given this optimizer's keys (a shallow copy; the tensors are not copied)."""
        state = {}
        for k, v in state_dict["state"].items():
            if isinstance(v, dict) and _BNB_WRAP in v:
                v = dict(v)
                v.update(v.pop(_BNB_WRAP))
            state[k] = v
        groups = [self._from_bnb_group(dict(g)) if "maximize" not in g else g
                  for g in state_dict["param_groups"]]
        return {**state_dict, "state": state, "param_groups": groups}

    def _from_bnb_group(self, group: Dict[str, Any]) -> Dict[str, Any]:
        """A bitsandbytes group (no 'maximize') with this optimizer's keys for what
        bitsandbytes computes."""
        return group

    def _to_bnb_group(self, group: Dict[str, Any]) -> Dict[str, Any]:
        """The keys bitsandbytes' optimizer reads that this group names otherwise."""
        return {}

    def _check_group(self, group: Dict[str, Any], where: str) -> "_core.Hyperparams":
        for flag in ("capturable", "differentiable"):
            if group.get(flag):
                raise ValueError(f"Invalid {flag}={group[flag]!r} in {where}: not supported "
                                 f"by fastadam.torch (its kernels step CPU tensors in place, "
                                 f"outside autograd and CUDA graphs)")
        for flag in ("foreach", "fused"):
            if flag in group and group[flag] not in (None, True, False):
                raise TypeError(f"Invalid {flag}={group[flag]!r} in {where}: expected None "
                                f"or a bool")
        if group.get("fused") and group.get("foreach"):
            raise ValueError(f"Invalid {where}: `fused` and `foreach` cannot be True together")
        _check_rounding(group, where)
        if self.master_weights and group.get("rounding") == "stochastic":
            raise ValueError(f"{_NO_SR_WITH_MASTER} ({where})")
        return _core.validate(self._name, group)

    def _policy(self) -> Tuple[str, Optional[float]]:
        """(nonfinite, max_grad_norm): one policy for the whole step, so every group must
        carry the same (the core checks the values)."""
        g0 = self.param_groups[0]
        nf, mgn = g0.get("nonfinite", "propagate"), g0.get("max_grad_norm")
        for gi, g in enumerate(self.param_groups[1:], 1):
            for name, ours in (("nonfinite", nf), ("max_grad_norm", mgn)):
                if g.get(name, ours) != ours:
                    raise ValueError(f"Invalid param_groups[{gi}][{name!r}]: {g[name]!r} "
                                     f"differs from param_groups[0]'s {ours!r}; the gradient "
                                     f"policy covers the whole step, so every group must "
                                     f"have the same")
        return nf, mgn

    def _grad_stats(self, work) -> np.ndarray:
        """[sum of squares, non-finite] of every grad of the step: each plan's pre-pass,
        then, when the params are shards, one all-reduce over their process group."""
        stats = np.zeros(2)
        for entry, grads, _, runs, run_of, *_ in work:
            stats += entry.plan.grad_stats(grads, runs if run_of is not None else None,
                                           run_of)
        pg = self._reduction(work)
        if pg is not None:
            import torch.distributed as dist
            t = torch.from_numpy(stats)
            dist.all_reduce(t, group=pg)        # one small collective per step
        return stats

    def _reduction(self, work) -> Any:
        """The process group whose grads make up the whole model's: ``process_group`` when
        given (ZeroRedundancyOptimizer's ranks each step a part), else the 1-D mesh of the
        DTensor params (FSDP2's shards), else none (every rank has every grad, as DDP)."""
        if self.process_group is not None:
            return self.process_group
        meshes = set()
        for entry, *_ in work:
            for p, name in zip(entry.params, entry.names):
                if _local(p) is p:
                    continue
                from torch.distributed.tensor import Shard
                if p.device_mesh.ndim != 1 or not isinstance(p.placements[0], Shard):
                    raise ValueError(
                        f"Invalid {name}: a DTensor with placements {p.placements} on a "
                        f"{p.device_mesh.ndim}-D mesh; nonfinite/max_grad_norm sum the "
                        f"grads' squares over the mesh of Shard params on a 1-D mesh (a "
                        f"replicated shard would count once per rank): pass process_group= "
                        f"for other layouts")
                meshes.add(p.device_mesh)
        if len(meshes) > 1:
            raise ValueError("Invalid params: DTensor params on different meshes; pass "
                             "process_group= to say over which the grads' norm is summed")
        return next(iter(meshes)).get_group() if meshes else None

    def _rounding(self, gi: int, group: Dict[str, Any]) -> Tuple[str, int]:
        """The plan's (rounding, seed) for group ``gi`` (see the class docstring)."""
        rounding, seed = group.get("rounding", "nearest"), group.get("seed", 0)
        if rounding != "stochastic":
            return rounding, seed
        count = 0 if self._has_step else int(group.get(SR_STEP, 0))
        return rounding, (seed + gi * _GROUP_SALT + count * _STEP_SALT) % 2 ** 64

    @_no_dynamo
    def step(self, closure: Optional[Callable[[], Any]] = None, *, grad_scale: Any = None,
             found_inf: Any = None):
        """One optimization step over every param that has a gradient.

        ``closure`` (optional) re-evaluates the model and returns the loss; it runs under
        ``torch.enable_grad()`` and its result is returned. Every group's options, params,
        states and gradients are checked before any tensor is written.

        ``grad_scale`` (a number or one-element tensor, > 0): the grads are divided by it
        inside the fused update; ``found_inf`` (same): when > 0 the step changes nothing.
        torch.amp.GradScaler passes both as the attributes ``grad_scale`` and
        ``found_inf`` (as to torch's fused optimizers), used when the arguments are None.
        """
        if grad_scale is None:
            grad_scale = getattr(self, "grad_scale", None)
        if found_inf is None:
            found_inf = getattr(self, "found_inf", None)
        scale = None if grad_scale is None else _scalar_value(grad_scale, "grad_scale")
        if scale is not None and not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"Invalid grad_scale: {scale!r} (must be finite and > 0)")
        skip = found_inf is not None and _scalar_value(found_inf, "found_inf") > 0
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with torch.no_grad():
            work = []
            for gi, group in enumerate(self.param_groups):
                params = [p for p in group["params"] if p.grad is not None]
                if not params:
                    continue
                hyper = self._check_group(group, f"param_groups[{gi}]")   # once per step
                slots = self._slots(hyper)
                entry = self._entries.get(gi)
                if entry is None or not entry.matches(self.state, params, slots):
                    entry = _Entry(self, gi, group, params, slots)
                grads, gptrs = entry.grads()
                work.append((entry, grads, gptrs) + entry.runs(hyper, self._by_step)
                            + self._rounding(gi, group))
            nf, mgn = self._policy()
            if len(work) > 1:
                # Several plans: check what each one's step would refuse before any runs
                # (one plan checks everything before it writes).
                for entry, _, _, runs, run_of, _, rounding, seed in work:
                    try:
                        entry.plan.check_runs(runs, run_of, nf, mgn, scale,
                                              rounding=rounding, seed=seed)
                    except (TypeError, ValueError) as e:
                        raise type(e)(f"param_groups[{entry.gi}]: {e}") from None
                _check_disjoint(work)
            if skip:
                return loss             # GradScaler found an inf: nothing written
            stats = None
            if work and (nf != "propagate" or mgn is not None):
                stats = self._grad_stats(work)
                self.grad_norm = math.sqrt(stats[0]) / (scale or 1.0)
                if stats[1] > 0 and nf == "skip":
                    return loss         # nothing written, on any rank
            for entry, grads, _, runs, run_of, reps, rounding, seed in work:
                try:
                    if run_of is None:
                        hyper, step, scalars = runs[0]
                        entry.plan.step(grads, hyper, step, nf, mgn, scale, scalars=scalars,
                                        rounding=rounding, seed=seed, grad_stats=stats)
                    else:
                        entry.plan.step_runs(grads, runs, run_of, nf, mgn, scale,
                                             rounding=rounding, seed=seed, grad_stats=stats)
                except (TypeError, ValueError) as e:   # checked above: nothing written
                    raise type(e)(f"param_groups[{entry.gi}]: {e}") from None
                if entry.scalar_np:
                    for rep, idx in reps:
                        entry.spread(rep, idx)
                entry.commit(self)
                self._advance(entry)
                if rounding == "stochastic" and not self._has_step:
                    group = self.param_groups[entry.gi]
                    group[SR_STEP] = int(group.get(SR_STEP, 0)) + 1
                if _bump_versions is not None:
                    _bump_versions(entry.locals)
        return loss


def _process_group(pg: Any) -> Any:
    if pg is None:
        return None
    from torch.distributed import ProcessGroup
    if not isinstance(pg, ProcessGroup):
        raise TypeError(f"Invalid process_group: expected None or a "
                        f"torch.distributed.ProcessGroup, got {type(pg).__name__}")
    return pg


def _check_disjoint(work) -> None:
    """With more than one plan in a step, no plan sees the others' tensors: check here that
    no gradient overlaps anything a kernel writes and that no two groups' params or states
    overlap, before any kernel runs (one plan checks this for its own tensors)."""
    lo = np.concatenate([w[0].w_lo for w in work])
    hi = np.concatenate([w[0].w_hi for w in work])
    order = np.argsort(lo, kind="stable")
    lo, hi = lo[order], hi[order]
    if lo.size > 1 and np.any(lo[1:] < hi[:-1]):
        raise ValueError("Invalid params: params or optimizer states of different param "
                         "groups share memory; every param must be a separate buffer")
    for entry, _, (gptrs, gbytes), *_ in work:
        if not lo.size:
            break
        glo = np.array(gptrs, dtype=np.uint64)
        nb = np.array(gbytes, dtype=np.uint64)
        ghi = glo + nb
        k = np.searchsorted(lo, ghi, side="left").astype(np.int64) - 1
        bad = (k >= 0) & (nb > 0) & (hi[np.maximum(k, 0)] > glo)
        if bad.any():
            name = entry.names[int(np.flatnonzero(bad)[0])]
            raise ValueError(f"Invalid grad of {name}: it shares memory with a param or "
                             f"optimizer state")


# ---------------------------------------------------------------------------- optimizers

class Adam(_Optimizer):
    r"""Adam (torch.optim.Adam's signature, defaults, state and rule) on fastadam's kernel.

    Per param, with ``t`` the 1-based step (``state['step']`` after it is advanced):
    ``g = -grad if maximize else grad``; weight decay: ``g = g + weight_decay*p`` (L2), or
    ``p = p*(1 - lr*weight_decay)`` with ``decoupled_weight_decay=True`` (AdamW);
    ``m = b1*m + (1-b1)*g``; ``v = b2*v + (1-b2)*g*g``; ``bc1 = 1 - b1**t``,
    ``bc2 = 1 - b2**t``; AMSGrad: ``vmax = max(vmax, v)`` replaces ``v``;
    ``p = p - (lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps)``.

    State per param: ``step`` (a 0-d float32 tensor, float64 under a float64 default
    dtype), ``exp_avg`` (m), ``exp_avg_sq`` (v), and ``max_exp_avg_sq`` (vmax) with amsgrad.
    ``eps`` must be > 0 (torch also accepts 0). ``foreach``/``fused`` are accepted and kept;
    ``capturable``/``differentiable`` must be False.
    """

    _name = "adam"

    def __init__(self, params, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0, amsgrad: bool = False, *,
                 foreach: Optional[bool] = None, maximize: bool = False,
                 capturable: bool = False, differentiable: bool = False,
                 fused: Optional[bool] = None, decoupled_weight_decay: bool = False,
                 **storage: Any):
        super().__init__(params, _storage(dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
            maximize=maximize, foreach=foreach, capturable=capturable,
            differentiable=differentiable, fused=fused,
            decoupled_weight_decay=decoupled_weight_decay), storage))

    def _from_bnb_group(self, group: Dict[str, Any]) -> Dict[str, Any]:
        # bitsandbytes' Adam8bit decays the weights decoupled (p *= 1 - lr*weight_decay)
        group.setdefault("decoupled_weight_decay", True)
        return group


class AdamW(Adam):
    r"""AdamW (torch.optim.AdamW): :class:`Adam` with decoupled weight decay, default 1e-2.

    ``p = p*(1 - lr*weight_decay)``, then the Adam update of :class:`Adam` with
    ``g = grad`` (``-grad`` with maximize): ``m = b1*m + (1-b1)*g``,
    ``v = b2*v + (1-b2)*g*g``, ``p = p - (lr/(1-b1**t)) * m / (sqrt(v)/sqrt(1-b2**t) + eps)``
    (``max(vmax, v)`` in place of ``v`` with amsgrad).
    """

    _name = "adamw"

    def __init__(self, params, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False, foreach: Optional[bool] = None,
                 capturable: bool = False, differentiable: bool = False,
                 fused: Optional[bool] = None, **storage: Any):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach,
                         maximize=maximize, capturable=capturable,
                         differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True, **storage)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:   # as torch.optim.AdamW: always decoupled
            group["decoupled_weight_decay"] = True


class SGD(_Optimizer):
    r"""SGD with momentum, dampening and Nesterov (torch.optim.SGD's signature, defaults,
    state and rule) on fastadam's kernel.

    ``g = -grad if maximize else grad``; ``g = g + weight_decay*p``; with momentum:
    ``buf = g`` at a param's first step (when it has no ``momentum_buffer`` yet), afterwards
    ``buf = momentum*buf + (1-dampening)*g``; then ``d = g + momentum*buf`` (nesterov) or
    ``d = buf``; without momentum ``d = g``; ``p = p - lr*d``.

    State per param: ``momentum_buffer`` (only when momentum != 0; no ``step``, as torch).
    """

    _name = "sgd"

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0, dampening: float = 0,
                 weight_decay: float = 0, nesterov: bool = False, *, maximize: bool = False,
                 foreach: Optional[bool] = None, differentiable: bool = False,
                 fused: Optional[bool] = None,
                 **storage: Any):
        super().__init__(params, _storage(dict(
            lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
            nesterov=nesterov, maximize=maximize, foreach=foreach,
            differentiable=differentiable, fused=fused), storage))

    def _from_bnb_group(self, group: Dict[str, Any]) -> Dict[str, Any]:
        # SGD8bit: betas = (momentum, dampening); its step ignores dampening
        betas = group.get("betas") or (0.0, 0.0)
        group.setdefault("momentum", float(betas[0]))
        group.setdefault("dampening", 0.0)
        group.setdefault("nesterov", False)
        return group

    def _to_bnb_group(self, group: Dict[str, Any]) -> Dict[str, Any]:
        return {"betas": (group["momentum"], group["dampening"]), "eps": 0.0}


class RMSprop(_Optimizer):
    r"""RMSprop, optionally centered and with momentum (torch.optim.RMSprop's signature,
    defaults, state and rule) on fastadam's kernel.

    ``g = -grad if maximize else grad``; ``g = g + weight_decay*p``;
    ``sq = alpha*sq + (1-alpha)*g*g``; centered: ``ga = alpha*ga + (1-alpha)*g``,
    ``avg = sqrt(sq - ga*ga) + eps``, else ``avg = sqrt(sq) + eps``; with momentum:
    ``buf = momentum*buf + g/avg``, ``p = p - lr*buf``; else ``p = p - lr*g/avg``.

    State per param: ``step``, ``square_avg`` (sq), ``momentum_buffer`` (buf, when momentum
    > 0 at the first step) and ``grad_avg`` (ga, when centered at the first step).
    """

    _name = "rmsprop"

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0, momentum: float = 0, centered: bool = False,
                 capturable: bool = False, foreach: Optional[bool] = None,
                 maximize: bool = False, differentiable: bool = False,
                 **storage: Any):
        super().__init__(params, _storage(dict(
            lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
            weight_decay=weight_decay, capturable=capturable, foreach=foreach,
            maximize=maximize, differentiable=differentiable), storage))

    def _from_bnb_group(self, group: Dict[str, Any]) -> Dict[str, Any]:
        # RMSprop8bit: betas = (alpha, momentum); its step ignores momentum, never centered
        betas = group.get("betas") or (0.99, 0.0)
        group.setdefault("alpha", float(betas[0]))
        group.setdefault("momentum", 0.0)
        group.setdefault("centered", False)
        return group

    def _to_bnb_group(self, group: Dict[str, Any]) -> Dict[str, Any]:
        return {"betas": (group["alpha"], group["momentum"])}


class Lion(_Optimizer):
    r"""Lion (Chen et al. 2023) with lion-pytorch's signature, defaults and state, on
    fastadam's kernel.

    ``g = -grad if maximize else grad``; ``c = b1*m + (1-b1)*g``;
    ``p = p*(1 - lr*weight_decay) - lr*sign(c)`` (sign(0) = 0); ``m = b2*m + (1-b2)*g``.

    State per param: ``exp_avg`` (m) only, no ``step``, as lion-pytorch's ``Lion``, so a
    checkpoint moves between the two (its groups: ``lr``, ``betas``, ``weight_decay``, and
    here ``maximize``, which lion-pytorch ignores and fills in as False on loading).
    """

    _name = "lion"

    def __init__(self, params, lr: float = 1e-4, betas: Tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0, *, maximize: bool = False,
                 **storage: Any):
        super().__init__(params, _storage(dict(lr=lr, betas=betas, weight_decay=weight_decay,
                                      maximize=maximize), storage))

    def _to_bnb_group(self, group: Dict[str, Any]) -> Dict[str, Any]:
        return {"eps": group.get("eps", 0.0)}     # read, not used, by Lion8bit


class NAdam(_Optimizer):
    r"""NAdam (torch.optim.NAdam's signature, defaults, state and rule) on fastadam's kernel.

    Per param at step ``t``: ``g = -grad if maximize else grad``; weight decay:
    ``g = g + weight_decay*p`` (L2), or ``p = p*(1 - lr*weight_decay)`` with
    ``decoupled_weight_decay=True``; ``mu = b1*(1 - 0.5*0.96**(t*momentum_decay))``,
    ``mu_next`` the same at ``t+1``; ``mu_product = mu_product*mu``;
    ``m = lerp(m, g, 1-b1)``; ``v = b2*v + (1-b2)*g*g``; ``denom = sqrt(v/(1-b2**t)) + eps``;
    ``p = p - lr*(1-mu)/(1-mu_product) * g/denom
    - lr*mu_next/(1-mu_product*mu_next) * m/denom``.

    State per param: ``step`` and ``mu_product`` (0-d tensors of torch's scalar dtype),
    ``exp_avg`` (m), ``exp_avg_sq`` (v). ``foreach`` is accepted and kept;
    ``capturable``/``differentiable`` must be False.
    """

    _name = "nadam"

    def __init__(self, params, lr: float = 2e-3, betas: Tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0, momentum_decay: float = 4e-3,
                 decoupled_weight_decay: bool = False, *, foreach: Optional[bool] = None,
                 maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False,
                 **storage: Any):
        super().__init__(params, _storage(dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
            momentum_decay=momentum_decay, decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize, foreach=foreach, capturable=capturable,
            differentiable=differentiable), storage))


class ASGD(_Optimizer):
    r"""ASGD, averaged SGD (torch.optim.ASGD's signature, defaults, state and rule) on
    fastadam's kernel.

    Per param at step ``t``: ``g = -grad if maximize else grad``; ``g = g + weight_decay*p``;
    ``p = p*(1 - lambd*eta) - eta*g``; ``ax = ax + (p - ax)*mu`` (``ax = p`` while
    ``mu == 1``); then ``eta = lr / (1 + lambd*lr*t)**alpha``, ``mu = 1 / max(1, t - t0)``.

    State per param: ``step``, ``eta`` (``lr`` at first) and ``mu`` (1 at first), 0-d tensors
    of torch's scalar dtype, and ``ax``. A new eta and mu are stored in their state's dtype
    (torch.optim rounds them through its default dtype first, which differs only for a
    float64 state, as its load_state_dict makes for a float64 param). ``lambd``, ``alpha``
    and ``t0`` must be finite
    (torch does not check them). ``foreach`` is accepted and kept;
    ``capturable``/``differentiable`` must be False.
    """

    _name = "asgd"

    def __init__(self, params, lr: float = 1e-2, lambd: float = 1e-4, alpha: float = 0.75,
                 t0: float = 1e6, weight_decay: float = 0, foreach: Optional[bool] = None,
                 maximize: bool = False, differentiable: bool = False,
                 capturable: bool = False,
                 **storage: Any):
        super().__init__(params, _storage(dict(
            lr=lr, lambd=lambd, alpha=alpha, t0=t0, weight_decay=weight_decay,
            foreach=foreach, maximize=maximize, differentiable=differentiable,
            capturable=capturable), storage))


class Adagrad(_Optimizer):
    r"""Adagrad (torch.optim.Adagrad's signature, defaults, state and rule) on fastadam's
    kernel.

    Per param, with ``t`` the 1-based step: ``g = -grad if maximize else grad``;
    ``g = g + weight_decay*p``; ``clr = lr / (1 + (t-1)*lr_decay)``; ``sum = sum + g*g``;
    ``p = p - clr*g / (sqrt(sum) + eps)``.

    State per param, made when the optimizer is built (as torch.optim.Adagrad does):
    ``step`` (a 0-d tensor of torch's scalar dtype, float32 with ``fused=True``) and ``sum``
    filled with the constructor's ``initial_accumulator_value`` (a group's own value is
    kept in the group but not used, as in torch.optim). ``eps`` must be > 0 (torch also accepts 0).
    ``foreach``/``fused`` are accepted and kept; ``differentiable`` must be False.
    """

    _name = "adagrad"

    def __init__(self, params, lr: float = 1e-2, lr_decay: float = 0,
                 weight_decay: float = 0, initial_accumulator_value: float = 0,
                 eps: float = 1e-10, foreach: Optional[bool] = None, *,
                 maximize: bool = False, differentiable: bool = False,
                 fused: Optional[bool] = None,
                 **storage: Any):
        _initial_value("initial_accumulator_value", initial_accumulator_value)
        super().__init__(params, _storage(dict(
            lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value, foreach=foreach,
            maximize=maximize, differentiable=differentiable, fused=fused), storage))
        for group in self.param_groups:
            self._init_state(group)

    def _from_bnb_group(self, group: Dict[str, Any]) -> Dict[str, Any]:
        # Adagrad8bit: no lr_decay, accumulators start at 0
        group.setdefault("lr_decay", 0.0)
        group.setdefault("initial_accumulator_value", 0.0)
        return group

    def _to_bnb_group(self, group: Dict[str, Any]) -> Dict[str, Any]:
        return {"betas": (0.0, 0.0)}

    def _new_state(self, p: torch.Tensor, group: Dict[str, Any], state: Dict[str, Any],
                   slots: Tuple[Optional[str], ...]) -> Dict[str, Any]:
        # torch.optim.Adagrad fills every param's sum from the constructor's
        # initial_accumulator_value, whatever the param's group says (added groups too)
        return super()._new_state(p, dict(group, initial_accumulator_value=self.defaults[
            "initial_accumulator_value"]), state, slots)

    def _init_state(self, group: Dict[str, Any]) -> None:
        value = _initial_value("initial_accumulator_value",
                               self.defaults["initial_accumulator_value"])
        for p in group["params"]:
            state = self.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=_scalar_dtype(group))
                state.update(self._state_tensors(p, 0, self._state_names[0], value,
                                                 self._new_state_dtype(p, state)))


class Adamax(_Optimizer):
    r"""Adamax (torch.optim.Adamax's signature, defaults, state and rule) on fastadam's
    kernel.

    Per param, with ``t`` the 1-based step: ``g = -grad if maximize else grad``;
    ``g = g + weight_decay*p``; ``m = lerp(m, g, 1-b1)``; ``u = maximum(b2*u, |g| + eps)``;
    ``p = p - (lr / (1 - b1**t)) * m / u``.

    State per param: ``step`` (a 0-d tensor of torch's scalar dtype), ``exp_avg`` (m) and
    ``exp_inf`` (u). ``eps`` must be > 0 (torch also accepts 0). ``foreach`` is accepted
    and kept; ``capturable``/``differentiable`` must be False.
    """

    _name = "adamax"

    def __init__(self, params, lr: float = 2e-3, betas: Tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0,
                 foreach: Optional[bool] = None, *, maximize: bool = False,
                 differentiable: bool = False, capturable: bool = False,
                 **storage: Any):
        super().__init__(params, _storage(dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, foreach=foreach,
            maximize=maximize, differentiable=differentiable, capturable=capturable), storage))


class Adadelta(_Optimizer):
    r"""Adadelta (torch.optim.Adadelta's signature, defaults, state and rule) on fastadam's
    kernel.

    ``g = -grad if maximize else grad``; ``g = g + weight_decay*p``;
    ``sq = rho*sq + (1-rho)*g*g``; ``delta = sqrt(acc + eps) / sqrt(sq + eps) * g``;
    ``acc = rho*acc + (1-rho)*delta*delta``; ``p = p - lr*delta``.

    State per param: ``step`` (a 0-d tensor of torch's scalar dtype; the rule does not use
    it), ``square_avg`` (sq) and ``acc_delta`` (acc). ``eps`` must be > 0 (torch also
    accepts 0). ``foreach`` is accepted and kept; ``capturable``/``differentiable`` must be
    False.
    """

    _name = "adadelta"

    def __init__(self, params, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6,
                 weight_decay: float = 0, foreach: Optional[bool] = None, *,
                 capturable: bool = False, maximize: bool = False,
                 differentiable: bool = False,
                 **storage: Any):
        super().__init__(params, _storage(dict(
            lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize,
            capturable=capturable, foreach=foreach, differentiable=differentiable), storage))


class RAdam(_Optimizer):
    r"""RAdam (torch.optim.RAdam's signature, defaults, state and rule) on fastadam's kernel.

    Per param, with ``t`` the 1-based step: ``g = -grad if maximize else grad``; weight
    decay: ``g = g + weight_decay*p`` (L2), or ``p = p*(1 - lr*weight_decay)`` with
    ``decoupled_weight_decay=True``; ``m = lerp(m, g, 1-b1)``; ``v = b2*v + (1-b2)*g*g``;
    ``rho_inf = 2/(1-b2) - 1``, ``rho_t = rho_inf - 2*t*b2**t/(1-b2**t)``; if ``rho_t > 5``:
    ``p = p - lr * m/(1-b1**t) * sqrt(1-b2**t)/(sqrt(v) + eps) * rect`` (``rect`` torch's
    variance rectification term), else ``p = p - lr * m/(1-b1**t)``.

    State per param: ``step`` (a 0-d float32 tensor, float64 under a float64 default
    dtype), ``exp_avg`` (m), ``exp_avg_sq`` (v). ``eps`` must be > 0 (torch also accepts 0).
    ``foreach`` is accepted and kept; ``capturable``/``differentiable`` must be False.
    """

    _name = "radam"

    def __init__(self, params, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0,
                 decoupled_weight_decay: bool = False, *, foreach: Optional[bool] = None,
                 maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False,
                 **storage: Any):
        super().__init__(params, _storage(dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize,
            foreach=foreach, capturable=capturable,
            decoupled_weight_decay=decoupled_weight_decay, differentiable=differentiable), storage))


class Rprop(_Optimizer):
    r"""Rprop (torch.optim.Rprop's signature, defaults, state and rule) on fastadam's kernel.

    ``g = -grad if maximize else grad``; per element, by the sign of ``g*prev``: the step
    size is multiplied by ``etaplus`` (> 0), ``etaminus`` (< 0, and ``g`` is set to 0) or
    1 (= 0), then clamped to ``step_sizes``; ``p = p - sign(g)*step_size``; ``prev = g``.

    State per param: ``step``, ``prev`` (zeros at the first step) and ``step_size``
    (filled with ``lr`` at the first step). ``etas`` must satisfy
    ``0 < etaminus < 1 < etaplus`` (a ValueError, as torch's "Invalid eta values");
    ``step_sizes`` must be a pair of finite numbers (torch does not check it).
    ``foreach`` is accepted and kept; ``capturable``/``differentiable`` must be False.
    """

    _name = "rprop"

    def __init__(self, params, lr: float = 1e-2, etas: Tuple[float, float] = (0.5, 1.2),
                 step_sizes: Tuple[float, float] = (1e-6, 50), *, capturable: bool = False,
                 foreach: Optional[bool] = None, maximize: bool = False,
                 differentiable: bool = False,
                 **storage: Any):
        super().__init__(params, _storage(dict(
            lr=lr, etas=etas, step_sizes=step_sizes, foreach=foreach, maximize=maximize,
            differentiable=differentiable, capturable=capturable), storage))
