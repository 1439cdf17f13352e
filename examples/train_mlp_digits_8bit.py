"""Train the digits MLP with 8-bit optimizer states
================================================

The network, data and batches of ``train_mlp_digits.py``, trained three ways from the same
initial weights on the same mini-batches, with Adam (lr = 1e-3); the weights stay float32:

- ``32-bit``: float32 states (the baseline);
- ``8-bit W1``: ``fastadam.Adam(..., state_bits=8)`` with the default ``min_8bit_size``
  (4096): W1 (64 x 128 = 8192 elements) keeps ``exp_avg`` and ``exp_avg_sq`` as 8-bit
  block-wise states (uint8 codes, one float32 absmax per block of 256, bitsandbytes' signed
  and unsigned dynamic maps); W2 (128 x 10 = 1280), b1 and b2 keep float32 states;
- ``8-bit W1+W2``: ``min_8bit_size=1024``: both weight matrices 8-bit, the biases
  (128 and 10 elements) float32.

An 8-bit ``exp_avg_sq`` element far below its block's absmax (below about 1.6e-7 of it)
takes code 0, the value 0, while ``exp_avg``, whose map reaches smaller values, may keep it
nonzero; a step with a zero gradient there then moves the weight by ``lr * exp_avg / eps``.
With seed 0 that happens in W2 (single steps of tens, where Adam's are about lr) and the
W1+W2 run ends several points below the others.

stdout: one line per epoch, then one line per mode with its final train loss, test
accuracy and optimizer-state bytes, and last ``test accuracy: 32-bit 0.9xxx, 8-bit 0.9xxx``.

Run from the repository root:  python examples/train_mlp_digits_8bit.py [--epochs N]
Needs scikit-learn (pip install "fastadam[examples]").
"""

import argparse
import os
import sys


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_mlp_digits as digits  # noqa: E402  (the network and the data)

import fastadam  # noqa: E402  (train_mlp_digits finds it, installed or in the checkout)

# mode -> the optimizer's storage options
MODES = {
    "32-bit": {},
    "8-bit W1": dict(state_bits=8),                         # min_8bit_size 4096: W1 only
    "8-bit W1+W2": dict(state_bits=8, min_8bit_size=1024),  # W1 and W2, not b1 and b2
}


def make(mode, seed):
    """The mode's weights (a dict of float32 arrays) and its optimizer."""
    params = digits.init_params(seed=seed)
    return params, fastadam.Adam(params, lr=digits.LR, betas=digits.BETAS, **MODES[mode])


def state_bytes(opt):
    """The bytes of the optimizer's state arrays (an 8-bit state: codes, absmax and map)."""
    return sum(v.nbytes for st in opt.state.values() for v in st.values())


def train(epochs=digits.EPOCHS, batch=digits.BATCH, seed=digits.SEED):
    """Train both modes on the same batches; returns {mode: (train loss of the last epoch,
    test accuracy, state bytes)} and the two optimizers."""
    _, X_test, _, y_test = digits.load_digits_split(seed)
    runs = {mode: make(mode, seed) for mode in MODES}
    out = {}
    for epoch, losses in digits.train_modes(runs, epochs, batch, seed):
        for mode, (params, opt) in runs.items():
            acc = float((digits.predict(params, X_test) == y_test).mean())
            out[mode] = (losses[mode], acc, state_bytes(opt))
        print(f"epoch {epoch:2d}/{epochs}: " + ", ".join(
            f"{mode} loss {loss:.4f} acc {acc:.4f}" for mode, (loss, acc, _) in out.items()),
            flush=True)
    return out, {mode: opt for mode, (_, opt) in runs.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=digits.EPOCHS,
                        help=f"passes over the training set (default {digits.EPOCHS})")
    parser.add_argument("--seed", type=int, default=digits.SEED,
                        help="seed for the split, the weights and the batch order")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be >= 1")
    print(f"MLP 64-{digits.HIDDEN}-10 on scikit-learn's 8x8 digits; Adam lr={digits.LR:g}, "
          f"batch {digits.BATCH}, {args.epochs} epochs, seed {args.seed}")
    out, opts = train(args.epochs, seed=args.seed)
    print()
    for mode, (loss, acc, nbytes) in out.items():
        eight = [k for k, st in opts[mode].state.items()
                 if type(st["exp_avg"]) is fastadam.QuantizedState]
        print(f"  {mode:<12} train loss {loss:.4f}  test accuracy {acc:.4f}  state "
              f"{nbytes:6d} bytes  8-bit states: {', '.join(eight) or 'none'}")
    print("test accuracy: " + ", ".join(f"{mode} {acc:.4f}"
                                        for mode, (_, acc, _) in out.items()))


if __name__ == "__main__":
    main()
