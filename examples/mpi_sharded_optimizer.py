"""Data parallelism for NumPy with mpi4py, the optimizer sharded across the ranks
==============================================================================

Each rank computes the gradient of a least-squares loss on its slice of the data; one
all-reduce averages the gradients; each rank then steps only its own slice of the weights
(its optimizer state is that slice's alone, as ZeRO stage 1 shards it) with the gradient
clipped by the norm of the *whole* gradient: ``opt.grad_stats`` gives the slice's
``[sum of squares, non-finite]``, a second all-reduce of those two numbers sums them, and
``opt.step(grads, grad_stats=total)`` applies the global clipping factor. An all-gather puts
the weights back together.

.. code-block:: text

    mpirun -n 2 python examples/mpi_sharded_optimizer.py   # Open MPI: add --oversubscribe
    python examples/mpi_sharded_optimizer.py                # one process, same result

It prints the final loss and how far the weights are from one process running one
optimizer over all of them with the same clipping (0 up to rounding).
"""

import numpy as np
from mpi4py import MPI

import fastadam

N, D, STEPS = 512, 37, 60


def data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, D))
    y = x @ rng.standard_normal(D) + 0.1 * rng.standard_normal(N)
    return x, y


def grad(w, x, y):
    return 2 * x.T @ (x @ w - y) / len(y)


def main():
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    x, y = data()
    rows = np.array_split(np.arange(N), size)[rank]        # this rank's data
    cols = np.array_split(np.arange(D), size)               # each rank's weights
    lo, hi = cols[rank][0] if len(cols[rank]) else 0, (cols[rank][-1] + 1
                                                        if len(cols[rank]) else 0)
    w = np.zeros(D)
    mine = w[lo:hi].copy()
    opt = fastadam.Adam([mine], lr=0.05, max_grad_norm=1.0)
    for _ in range(STEPS):
        g = grad(w, x[rows], y[rows]) * (len(rows) / N)    # this rank's share of the mean
        comm.Allreduce(MPI.IN_PLACE, g, op=MPI.SUM)
        part = [np.ascontiguousarray(g[lo:hi])]
        total = opt.grad_stats(part)
        comm.Allreduce(MPI.IN_PLACE, total, op=MPI.SUM)    # two numbers per step
        opt.step(part, grad_stats=total)
        parts = comm.allgather(mine)
        w = np.concatenate(parts)

    # The same run in one process, one optimizer over every weight.
    ref = np.zeros(D)
    one = fastadam.Adam([ref], lr=0.05, max_grad_norm=1.0)
    for _ in range(STEPS):
        one.step([grad(ref, x, y)])
    if rank == 0:
        loss = float(np.mean((x @ w - y) ** 2))
        print(f"ranks: {size}")
        print(f"final loss: {loss:.6f}")
        print(f"max |w - one process|: {float(np.abs(w - ref).max()):.3e}")


if __name__ == "__main__":
    main()
