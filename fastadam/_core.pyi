# Type stubs for the compiled core (fastadam/_core.pyx and its .pxi parts).
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np
from numpy.typing import NDArray

_Float = Union[NDArray[np.float32], NDArray[np.float64]]
_Real = Union[float, int, np.floating, np.integer]

SIMD_PATHS: Tuple[str, str, str]
KERNEL_SGD: int
KERNEL_RMSPROP: int
KERNEL_ADAM: int
CHECK_ONLY: object

def sgd_(param: _Float, grad: _Float, *, momentum_buffer: Optional[_Float] = ...,
         lr: _Real = ..., momentum: _Real = ..., dampening: _Real = ...,
         nesterov: bool = ..., weight_decay: _Real = ..., maximize: bool = ...,
         step: Optional[int] = ...) -> None: ...
def rmsprop_(param: _Float, grad: _Float, square_avg: _Float, *,
             momentum_buffer: Optional[_Float] = ..., grad_avg: Optional[_Float] = ...,
             lr: _Real = ..., alpha: _Real = ..., eps: _Real = ..., weight_decay: _Real = ...,
             momentum: _Real = ..., centered: bool = ..., maximize: bool = ...) -> None: ...
def adam_(param: _Float, grad: _Float, exp_avg: _Float, exp_avg_sq: _Float, *, step: int,
          lr: _Real = ..., betas: Tuple[_Real, _Real] = ..., eps: _Real = ...,
          weight_decay: _Real = ..., amsgrad: bool = ...,
          max_exp_avg_sq: Optional[_Float] = ..., maximize: bool = ...,
          bias_correction: bool = ..., decoupled_weight_decay: bool = ...) -> None: ...
def adamw_(param: _Float, grad: _Float, exp_avg: _Float, exp_avg_sq: _Float, *, step: int,
           lr: _Real = ..., betas: Tuple[_Real, _Real] = ..., eps: _Real = ...,
           weight_decay: _Real = ..., amsgrad: bool = ...,
           max_exp_avg_sq: Optional[_Float] = ..., maximize: bool = ...,
           bias_correction: bool = ...) -> None: ...
def roofline_(param: _Float, grad: _Float, exp_avg: _Float, exp_avg_sq: _Float) -> None: ...
def check_param(obj: Any, name: str = ...) -> None: ...
def check_flag(x: Any, name: str) -> bool: ...
def check_nonneg(x: Any, name: str) -> float: ...

def available_simd_paths() -> Tuple[str, ...]: ...
def simd_import_errors() -> Dict[str, str]: ...
def get_simd_path() -> str: ...
def set_simd_path(path: str) -> str: ...
def set_num_threads(n: int) -> int: ...
def get_num_threads() -> int: ...
def _set_min_per_thread(n: int) -> int: ...

_Nonfinite = str   # "propagate" | "skip" | "raise"

class Plan:
    kernel: int
    ntensors: int
    grad_norm: float
    def __init__(self, kernel: int, params: list, states: list, keys: list,
                 state_names: tuple) -> None: ...
    def sgd(self, grads: Any, lr: Any, momentum: Any, dampening: Any, nesterov: Any,
            weight_decay: Any, maximize: Any, first_step: bool,
            nonfinite: _Nonfinite = ..., max_grad_norm: Optional[_Real] = ...,
            grad_scale: Optional[_Real] = ...) -> bool: ...
    def rmsprop(self, grads: Any, lr: Any, alpha: Any, eps: Any, weight_decay: Any,
                momentum: Any, centered: Any, maximize: Any, nonfinite: _Nonfinite = ...,
                max_grad_norm: Optional[_Real] = ...,
                grad_scale: Optional[_Real] = ...) -> bool: ...
    def adam(self, grads: Any, step: Any, lr: Any, betas: Any, eps: Any, weight_decay: Any,
             amsgrad: Any, maximize: Any, bias_correction: Any, decoupled: Any,
             nonfinite: _Nonfinite = ..., max_grad_norm: Optional[_Real] = ...,
             grad_scale: Optional[_Real] = ...) -> bool: ...
