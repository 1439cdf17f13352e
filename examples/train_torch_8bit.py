"""Train a torch MLP with 8-bit AdamW states: fastadam.torch against bitsandbytes
==============================================================================

A two-hidden-layer MLP (64-256-256-10, ReLU) on scikit-learn's 8x8 digits (75/25 split,
pixels / 16), trained three times from the same initial weights on the same mini-batches
(batch 64) with AdamW (lr 1e-3, weight_decay 1e-2):

- ``fastadam 32-bit``: ``fastadam.torch.AdamW``, float32 states (torch.optim.AdamW's);
- ``fastadam 8-bit``: ``fastadam.torch.AdamW(..., state_bits=8)``: the three weight
  matrices with at least 4096 elements (64x256, 256x256; not the 256x10 output layer)
  keep their two states as uint8 codes with one float32 absmax per block of 256, the
  others float32 states, as bitsandbytes does;
- ``bitsandbytes 8-bit``: ``bitsandbytes.optim.AdamW8bit`` (its CPU backend), for
  reference.

stdout: one line per run with its final train loss (mean over the last epoch), test loss
and test accuracy, and the optimizer state's bytes; with ``--json``, last, a JSON line of
the same numbers.

Run from the repository root:  python examples/train_torch_8bit.py [--epochs N] [--json]
Needs torch, bitsandbytes and scikit-learn (pip install "fastadam[torch,compare,examples]").
"""

import argparse
import json
import warnings

import numpy as np
import torch
from torch import nn

import fastadam.torch

SEED = 0
EPOCHS = 20
BATCH = 64
LR = 1e-3
WEIGHT_DECAY = 1e-2


def load_digits_split(seed=SEED):
    """scikit-learn's digits, pixels / 16 as float32 tensors, split 75/25 (stratified)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    X = (d.data / 16.0).astype(np.float32)
    Xtr, Xte, ytr, yte = train_test_split(X, d.target, test_size=0.25, random_state=seed,
                                          stratify=d.target)
    return (torch.from_numpy(Xtr), torch.from_numpy(Xte), torch.from_numpy(ytr).long(),
            torch.from_numpy(yte).long())


def make_model(seed=SEED):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                         nn.Linear(256, 10))


def make_optimizer(kind, params):
    kw = dict(lr=LR, weight_decay=WEIGHT_DECAY)
    if kind == "fastadam 32-bit":
        return fastadam.torch.AdamW(params, **kw)
    if kind == "fastadam 8-bit":
        return fastadam.torch.AdamW(params, state_bits=8, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import bitsandbytes as bnb
    return bnb.optim.AdamW8bit(params, **kw)


def state_bytes(opt):
    seen, total = set(), 0
    for st in opt.state.values():
        for v in st.values():
            if torch.is_tensor(v) and v.data_ptr() not in seen:
                seen.add(v.data_ptr())
                total += v.numel() * v.element_size()
    return total


def train(kind, data, epochs, seed=SEED):
    Xtr, Xte, ytr, yte = data
    model = make_model(seed)
    opt = make_optimizer(kind, model.parameters())
    loss_fn = nn.CrossEntropyLoss()
    order = torch.Generator().manual_seed(seed + 1)
    train_loss = float("nan")
    for _ in range(epochs):
        perm = torch.randperm(len(Xtr), generator=order)
        total, count = 0.0, 0
        for i in range(0, len(Xtr), BATCH):
            idx = perm[i:i + BATCH]
            loss = loss_fn(model(Xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            count += len(idx)
        train_loss = total / count
    with torch.no_grad():
        logits = model(Xte)
        test_loss = float(loss_fn(logits, yte))
        accuracy = float((logits.argmax(1) == yte).float().mean())
    return dict(train_loss=train_loss, loss=test_loss, accuracy=accuracy,
                state_bytes=state_bytes(opt))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--json", action="store_true", help="print a JSON line last")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    data = load_digits_split(args.seed)
    results = {}
    for kind in ("fastadam 32-bit", "fastadam 8-bit", "bitsandbytes 8-bit"):
        r = results[kind] = train(kind, data, args.epochs, args.seed)
        print(f"{kind:19s} train loss {r['train_loss']:.4f}  test loss {r['loss']:.4f}  "
              f"test accuracy {r['accuracy']:.4f}  state {r['state_bytes']} bytes")
    if args.json:
        print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
