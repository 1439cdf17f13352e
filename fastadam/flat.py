"""Pack many arrays into one contiguous buffer, so a whole model steps as one flat array."""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["pack"]


def pack(arrays: Union[Sequence[np.ndarray], Mapping[str, np.ndarray]],
         dtype: Optional[np.dtype] = None
         ) -> Tuple[np.ndarray, Union[List[np.ndarray], Dict[str, np.ndarray]]]:
    """Copy ``arrays`` into one new C-contiguous 1-D buffer; return it and zero-copy views.

    ``flat = concatenate([a.ravel() for a in arrays])`` and
    ``views[i] = flat[o_i : o_i + arrays[i].size].reshape(arrays[i].shape)`` with
    ``o_i = sum(a.size for a in arrays[:i])``, in the arrays' order (a dict's key order).

    The views have the arrays' shapes, in the same structure (list or dict), and share
    memory with the buffer: write a model's parameters through the views and step the
    buffer, or write gradients into the views of a second packed buffer::

        flat_p, params = fastadam.pack(params)
        flat_g, grads = fastadam.pack([np.zeros_like(p) for p in params])
        opt = fastadam.Adam([flat_p])
        ...                          # fill grads[i] in place
        opt.step([flat_g])           # one kernel pass over the whole model

    ``dtype`` defaults to the common type of the arrays (float32 and float64 give float64).
    """
    is_dict = isinstance(arrays, Mapping)
    keys = list(arrays.keys()) if is_dict else None
    items = [np.asarray(a) for a in (arrays.values() if is_dict else arrays)]
    if dtype is None:
        dtype = np.result_type(*items) if items else np.float32
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"Invalid dtype: expected float32 or float64, got {dtype}")
    flat = np.empty(sum(a.size for a in items), dtype=dtype)
    views = []
    offset = 0
    for a in items:
        view = flat[offset:offset + a.size].reshape(a.shape)
        view[...] = a
        views.append(view)
        offset += a.size
    return flat, (dict(zip(keys, views)) if is_dict else views)
