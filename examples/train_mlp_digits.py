"""Train a small multilayer perceptron on handwritten digits with fastadam.Adam
=============================================================================

The network is plain NumPy, forward and backward: 64 pixels -> 128 ReLU units -> 10 logits,
softmax cross-entropy, float32. The data is scikit-learn's bundled 8x8 digits (1797 images,
no download), split 75/25 into train and test, pixels scaled to [0, 1]. Mini-batches of 32,
Adam with lr = 1e-3 and torch's defaults otherwise.

Two copies of the network train side by side from the same initial weights on the same
mini-batches: one stepped by ``fastadam.Adam`` (one native call for all four tensors), the
other by ``fastadam.reference.adam_`` (the same rule in plain NumPy, one call per tensor).
``time.perf_counter`` around the optimizer step alone measures the time each spends in the
optimizer; taking turns batch by batch exposes both to the same machine noise. The two
reach the same test accuracy (they compute the same rule; float32 rounding differs in the
last bits, see docs/contract.md).

A tqdm progress bar per epoch goes to stderr (``--no-progress`` turns it off); stdout gets
one line per epoch and, last, ``test accuracy: 0.9xxx`` for the fastadam-trained network.

Run from the repository root:  python examples/train_mlp_digits.py [--epochs N]
Needs scikit-learn and tqdm (pip install "fastadam[examples]").
"""

import argparse
import os
import sys
import time

import numpy as np

try:
    import fastadam
except ImportError:  # run from a source checkout without installing: use the repo's copy
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import fastadam
from fastadam import reference

SEED = 0
HIDDEN = 128
EPOCHS = 15
BATCH = 32
LR = 1e-3
BETAS = (0.9, 0.999)
DTYPE = np.float32


def load_digits_split(seed=SEED):
    """scikit-learn's 8x8 digits, pixels / 16 as float32, split 75/25 (stratified)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    X = (digits.data / 16.0).astype(DTYPE)
    return train_test_split(X, digits.target, test_size=0.25, random_state=seed,
                            stratify=digits.target)


def init_params(n_in=64, hidden=HIDDEN, n_out=10, seed=SEED):
    """He-normal weights for the ReLU layer, Glorot-normal for the output, zero biases."""
    rng = np.random.default_rng(seed)
    return {
        "W1": (rng.standard_normal((n_in, hidden)) * np.sqrt(2.0 / n_in)).astype(DTYPE),
        "b1": np.zeros(hidden, DTYPE),
        "W2": (rng.standard_normal((hidden, n_out))
               * np.sqrt(2.0 / (hidden + n_out))).astype(DTYPE),
        "b2": np.zeros(n_out, DTYPE),
    }


def forward(params, X):
    """Logits of the MLP, and the hidden layer's pre-activation and activation."""
    z = X @ params["W1"] + params["b1"]
    h = np.maximum(z, 0)
    return h @ params["W2"] + params["b2"], z, h


def loss_and_grads(params, X, y):
    """Mean softmax cross-entropy over the batch and its gradient for every param.

    With p = softmax(logits) and Y the one-hot labels: dL/dlogits = (p - Y) / n;
    dW2 = hᵀ·dlogits, db2 = Σ dlogits; dh = dlogits·W2ᵀ, zeroed where z <= 0 (ReLU);
    dW1 = Xᵀ·dh, db1 = Σ dh.
    """
    n = len(y)
    logits, z, h = forward(params, X)
    shifted = logits - logits.max(axis=1, keepdims=True)   # no overflow in exp
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -float(log_p[np.arange(n), y].mean())
    dlogits = np.exp(log_p)
    dlogits[np.arange(n), y] -= 1
    dlogits /= n
    dh = dlogits @ params["W2"].T
    dh[z <= 0] = 0
    return loss, {"W1": X.T @ dh, "b1": dh.sum(axis=0),
                  "W2": h.T @ dlogits, "b2": dlogits.sum(axis=0)}


def predict(params, X):
    return forward(params, X)[0].argmax(axis=1)


class ReferenceAdam:
    """Adam over a dict of arrays with ``fastadam.reference.adam_``, one call per tensor."""

    def __init__(self, params, lr=LR, betas=BETAS):
        self.params, self.lr, self.betas, self.t = params, lr, betas, 0
        self.exp_avg = {k: np.zeros_like(p) for k, p in params.items()}
        self.exp_avg_sq = {k: np.zeros_like(p) for k, p in params.items()}

    def step(self, grads):
        self.t += 1
        for k, p in self.params.items():
            reference.adam_(p, grads[k], self.exp_avg[k], self.exp_avg_sq[k], step=self.t,
                            lr=self.lr, betas=self.betas)


class Model:
    """One copy of the network, its optimizer, and the time spent in each part."""

    def __init__(self, label, make_optimizer, seed=SEED):
        self.label = label
        self.params = init_params(seed=seed)
        self.opt = make_optimizer(self.params)
        self.opt_times = []          # seconds in each opt.step
        self.grad_seconds = 0.0      # forward + backward

    def train_batch(self, X, y):
        t0 = time.perf_counter()
        loss, grads = loss_and_grads(self.params, X, y)
        t1 = time.perf_counter()
        self.opt.step(grads)
        t2 = time.perf_counter()
        self.grad_seconds += t1 - t0
        self.opt_times.append(t2 - t1)
        return loss

    @property
    def steps(self):
        return len(self.opt_times)

    @property
    def opt_seconds(self):
        return float(np.sum(self.opt_times))

    @property
    def opt_median(self):
        """Median seconds per step: unlike the sum, not moved by the odd step during which
        the operating system ran something else."""
        return float(np.median(self.opt_times))

    def accuracy(self, X, y):
        return float((predict(self.params, X) == y).mean())


def train_modes(runs, epochs=EPOCHS, batch=BATCH, seed=SEED, grads_of=loss_and_grads):
    """Train several ``{mode: (params, optimizer)}`` side by side, on the same mini-batches
    in the order ``seed`` gives (the other digits scripts' loop); yields ``(epoch, {mode:
    mean train loss of the epoch})``. ``grads_of(params, X, y)`` gives the loss and the
    grads a step takes."""
    X_train, _, y_train, _ = load_digits_split(seed)
    rng = np.random.default_rng(seed + 1)
    n = len(y_train)
    for epoch in range(1, epochs + 1):
        order = rng.permutation(n)
        losses = {mode: [] for mode in runs}
        for start in range(0, n, batch):
            idx = order[start:start + batch]
            for mode, (params, opt) in runs.items():
                loss, grads = grads_of(params, X_train[idx], y_train[idx])
                opt.step(grads)
                losses[mode].append(loss)
        yield epoch, {mode: float(np.mean(v)) for mode, v in losses.items()}


def train(epochs=EPOCHS, batch=BATCH, lr=LR, seed=SEED, progress=True):
    """Train the fastadam and the reference copy side by side; print one line per epoch.

    Returns ``(fast, ref, (X_test, y_test))``, the two :class:`Model`s after training.
    """
    from tqdm import tqdm

    X_train, X_test, y_train, y_test = load_digits_split(seed)
    fast = Model("fastadam.Adam", lambda p: fastadam.Adam(p, lr=lr, betas=BETAS), seed)
    ref = Model("reference.adam_", lambda p: ReferenceAdam(p, lr=lr, betas=BETAS), seed)
    rng = np.random.default_rng(seed + 1)        # the batch order, shared by both copies
    n = len(y_train)
    for epoch in range(1, epochs + 1):
        order = rng.permutation(n)
        losses = {fast.label: [], ref.label: []}
        bar = tqdm(range(0, n, batch), desc=f"epoch {epoch:2d}/{epochs}", unit="batch",
                   leave=True, disable=not progress, file=sys.stderr, dynamic_ncols=True)
        for start in bar:
            idx = order[start:start + batch]
            Xb, yb = X_train[idx], y_train[idx]
            # Taking turns, first one then the other, exposes both to the same machine
            # noise and the same cache state (each finds the other's data in the caches).
            for model in ((fast, ref) if start // batch % 2 else (ref, fast)):
                losses[model.label].append(model.train_batch(Xb, yb))
            if start // batch % 10 == 0 or start + batch >= n:   # shown at the next redraw
                bar.set_postfix(loss=f"{np.mean(losses[fast.label]):.4f}", refresh=False)
        print(f"epoch {epoch:2d}/{epochs}: train loss {np.mean(losses[fast.label]):.4f} "
              f"(reference {np.mean(losses[ref.label]):.4f}), test accuracy "
              f"{fast.accuracy(X_test, y_test):.4f} (reference "
              f"{ref.accuracy(X_test, y_test):.4f})", flush=True)
    return fast, ref, (X_test, y_test)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=EPOCHS,
                        help=f"passes over the training set (default {EPOCHS})")
    parser.add_argument("--batch", type=int, default=BATCH,
                        help=f"mini-batch size (default {BATCH})")
    parser.add_argument("--lr", type=float, default=LR, help=f"Adam's lr (default {LR:g})")
    parser.add_argument("--seed", type=int, default=SEED,
                        help="seed for the split, the weights and the batch order")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.batch < 1:
        parser.error("--epochs and --batch must be >= 1")

    print(f"MLP 64-{HIDDEN}-10 (ReLU, softmax cross-entropy, float32) on scikit-learn's 8x8 "
          f"digits; Adam lr={args.lr:g}, batch {args.batch}, {args.epochs} epochs, "
          f"seed {args.seed}")
    print(f"fastadam {fastadam.__version__}, SIMD path {fastadam.get_simd_path()!r}, "
          f"{fastadam.get_num_threads()} threads")
    fast, ref, (X_test, y_test) = train(args.epochs, args.batch, args.lr, args.seed,
                                        progress=not args.no_progress)
    acc_fast, acc_ref = fast.accuracy(X_test, y_test), ref.accuracy(X_test, y_test)
    same = int((predict(fast.params, X_test) == predict(ref.params, X_test)).sum())
    drift = max(float(np.max(np.abs(fast.params[k] - ref.params[k]))) for k in fast.params)
    print()
    print(f"test accuracy on {len(y_test)} digits: fastadam.Adam {acc_fast:.4f}, "
          f"fastadam.reference.adam_ {acc_ref:.4f} (same prediction on {same} of "
          f"{len(y_test)}; largest weight difference {drift:.1e})")
    for m in (fast, ref):
        print(f"  {m.label:<16} optimizer {m.opt_seconds * 1e3:7.1f} ms in {m.steps} steps "
              f"(median {m.opt_median * 1e6:6.1f} µs per step), forward + backward "
              f"{m.grad_seconds * 1e3:6.1f} ms: the optimizer is "
              f"{m.opt_seconds / (m.opt_seconds + m.grad_seconds):.0%} of training")
    print(f"time in the optimizer: fastadam.Adam is {ref.opt_seconds / fast.opt_seconds:.1f}x "
          f"faster than fastadam.reference.adam_ in total, "
          f"{ref.opt_median / fast.opt_median:.1f}x per step (medians)")
    print(f"test accuracy: {acc_fast:.4f}")


if __name__ == "__main__":
    main()
