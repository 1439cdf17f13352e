"""Train the digits MLP with bfloat16 weights: master weights, nearest and stochastic rounding
===========================================================================================

The network, data and batches of ``train_mlp_digits.py``, trained four ways from the same
initial weights on the same mini-batches, with Adam (lr = 1e-3):

- ``float32``: float32 weights, grads and states (the baseline);
- ``bf16 master``: bfloat16 weights and grads, as a GPU that trains in bfloat16 would hand
  them to an offloaded optimizer; ``fastadam.Adam(..., master_weights=True)`` keeps float32
  masters and states and writes the rounded bfloat16 weights in the same pass;
- ``bf16 nearest``: everything bfloat16 (weights, grads, states), rounded to nearest;
- ``bf16 stochastic``: the same with ``rounding="stochastic"``.

The forward and backward passes widen the bfloat16 weights to float32 (the arithmetic of a
bfloat16 matmul that accumulates in float32) and round the grads to bfloat16. An Adam step
moves a weight by about lr; a bfloat16 weight of magnitude 0.1 to 0.25 has an ulp of 2^-10
to 2^-9 (1e-3 to 2e-3), so rounding to nearest drops many of the updates, while stochastic
rounding keeps them on average (its expected stored value is the float32 result).

stdout: one line per mode with its final train loss and test accuracy, and last
``test accuracy: float32 0.9xxx, bf16 master 0.9xxx, ...``.

Run from the repository root:  python examples/train_mlp_digits_bf16.py [--epochs N]
Needs scikit-learn and ml_dtypes (pip install "fastadam[examples,bfloat16]").
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_mlp_digits as digits  # noqa: E402  (the network and the data)

import fastadam  # noqa: E402  (train_mlp_digits finds it, installed or in the checkout)

MODES = ("float32", "bf16 master", "bf16 nearest", "bf16 stochastic")


def make(mode, seed):
    """The mode's weights (a dict of arrays) and its optimizer."""
    import ml_dtypes

    params = digits.init_params(seed=seed)
    if mode == "float32":
        return params, fastadam.Adam(params, lr=digits.LR, betas=digits.BETAS)
    params = {k: p.astype(ml_dtypes.bfloat16) for k, p in params.items()}
    options = {"bf16 master": dict(master_weights=True),
               "bf16 nearest": dict(rounding="nearest"),
               "bf16 stochastic": dict(rounding="stochastic", seed=seed)}[mode]
    return params, fastadam.Adam(params, lr=digits.LR, betas=digits.BETAS, **options)


def loss_and_grads(params, X, y):
    """The float32 network's loss and grads at the weights widened to float32, the grads
    returned in the weights' dtype."""
    wide = {k: p.astype(np.float32) for k, p in params.items()}
    loss, grads = digits.loss_and_grads(wide, X, y)
    return loss, {k: g.astype(params[k].dtype) for k, g in grads.items()}


def train(epochs=digits.EPOCHS, batch=digits.BATCH, seed=digits.SEED):
    """Train every mode on the same batches; returns {mode: (train loss of the last epoch,
    test accuracy)}."""
    _, X_test, _, y_test = digits.load_digits_split(seed)
    runs = {mode: make(mode, seed) for mode in MODES}
    out = {}
    for epoch, losses in digits.train_modes(runs, epochs, batch, seed, loss_and_grads):
        for mode, (params, _) in runs.items():
            wide = {k: p.astype(np.float32) for k, p in params.items()}
            acc = float((digits.predict(wide, X_test) == y_test).mean())
            out[mode] = (losses[mode], acc)
        print(f"epoch {epoch:2d}/{epochs}: " + ", ".join(
            f"{mode} loss {loss:.4f} acc {acc:.4f}" for mode, (loss, acc) in out.items()),
            flush=True)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=digits.EPOCHS,
                        help=f"passes over the training set (default {digits.EPOCHS})")
    parser.add_argument("--seed", type=int, default=digits.SEED,
                        help="seed for the split, the weights, the batch order and the rounding")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be >= 1")
    print(f"MLP 64-{digits.HIDDEN}-10 on scikit-learn's 8x8 digits; Adam lr={digits.LR:g}, "
          f"batch {digits.BATCH}, {args.epochs} epochs, seed {args.seed}")
    out = train(args.epochs, seed=args.seed)
    print()
    for mode, (loss, acc) in out.items():
        print(f"  {mode:<16} train loss {loss:.4f}  test accuracy {acc:.4f}")
    print("test accuracy: " + ", ".join(f"{mode} {acc:.4f}" for mode, (_, acc) in out.items()))


if __name__ == "__main__":
    main()
