"""fastadam: fused, in-place optimizer steps on NumPy arrays.

Functional kernels (``sgd_``, ``rmsprop_``, ``adam_``, ``adamw_``, ``lion_``,
``adagrad_``, ``adamax_``, ``adadelta_``, ``radam_``, ``rprop_``, ``nadam_``, ``asgd_``),
torch.optim-style classes (``SGD``, ``RMSprop``, ``Adam``, ``AdamW``, ``Lion``, ``Adagrad``,
``Adamax``, ``Adadelta``, ``RAdam``, ``Rprop``, ``NAdam``, ``ASGD``), and
``fastadam.reference``, the same rules in plain NumPy; ``fastadam.quant``, the 8-bit states
(``QuantizedState``, taken wherever a state array is).
"""

__version__ = "0.1.0"

try:
    from . import _core  # noqa: F401
except ImportError as e:  # pragma: no cover - only in an unbuilt source tree
    import importlib.util
    if importlib.util.find_spec(f"{__name__}._core") is not None:
        raise      # built, but it fails to load (a missing library, say): say that
    raise ImportError(
        f"fastadam's compiled modules are missing from {__path__[0]}: this is the source "
        "tree, not an installed fastadam. Install it (pip install .) and run from another "
        "directory, or build in place: python setup.py build_ext --inplace") from e

from ._core import (  # noqa: E402
    adadelta_,
    adagrad_,
    adam_,
    adamax_,
    adamw_,
    asgd_,
    available_simd_paths,
    get_num_threads,
    get_simd_path,
    lion_,
    nadam_,
    radam_,
    rmsprop_,
    rprop_,
    set_num_threads,
    set_simd_path,
    sgd_,
)
from .config import show_config  # noqa: E402
from .flat import pack  # noqa: E402
from .quant import QuantizedState  # noqa: E402  (and fastadam.quant, the module)
from .optim import (  # noqa: E402
    ASGD, SGD, Adadelta, Adagrad, Adam, Adamax, AdamW, Lion, NAdam, Optimizer, RAdam, RMSprop,
    Rprop)

__all__ = [
    "sgd_", "rmsprop_", "adam_", "adamw_", "lion_", "adagrad_", "adamax_", "adadelta_",
    "radam_", "rprop_", "nadam_", "asgd_",
    "SGD", "RMSprop", "Adam", "AdamW", "Lion", "Adagrad", "Adamax", "Adadelta", "RAdam",
    "Rprop", "NAdam", "ASGD", "Optimizer",
    "pack", "show_config", "QuantizedState",
    "set_num_threads", "get_num_threads",
    "available_simd_paths", "get_simd_path", "set_simd_path",
]
