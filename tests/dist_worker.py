"""One rank of tests/test_distributed.py: ``python dist_worker.py`` under RANK, WORLD_SIZE,
MASTER_ADDR and MASTER_PORT (gloo on loopback). Raises (exit code 1) on any mismatch.

1. Every fastadam.torch optimizer steps DTensor params (Shard(0), Shard(1) and Replicate
   on a 1-D mesh of every rank, a rank's shard possibly empty) by their local shards: the
   gathered params equal single-process fastadam.torch bit for bit (the update is
   elementwise) and single-process torch.optim (float64 to 1e-12, float32 to 1e-5, relative
   to the tensor's largest magnitude); the states are DTensors too.
2. FSDP2 (``fully_shard``, with and without ``CPUOffloadPolicy``) trains a small model with
   fastadam.torch.AdamW, each rank on its slice of the batch, and ends where torch.optim's
   AdamW on the whole model and batch in one process ends.
"""

import os
import sys
import warnings

import torch
import torch.distributed as dist
from torch import nn

import fastadam.torch as ft

warnings.filterwarnings("ignore")
STEPS = 4
TOL = {torch.float64: 1e-12, torch.float32: 1e-5}


def dev(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def check_dtensors(mesh, world):
    from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor
    layouts = [((7, 5), [Shard(0)]), ((3,), [Shard(0)]), ((4, 6), [Shard(1)]),
               ((5,), [Replicate()])]
    for name in ft.__all__:
        cls = getattr(ft, name)
        ref_cls = getattr(torch.optim, name, None)      # Lion: none in torch.optim
        for dtype in (torch.float64, torch.float32):
            gen = torch.Generator().manual_seed(1234)
            full = [torch.randn(shape, generator=gen, dtype=dtype) for shape, _ in layouts]
            grads = [[torch.randn(shape, generator=gen, dtype=dtype) for shape, _ in layouts]
                     for _ in range(STEPS)]
            sharded = [nn.Parameter(distribute_tensor(t.clone(), mesh, pl))
                       for t, (_, pl) in zip(full, layouts)]
            plain = [nn.Parameter(t.clone()) for t in full]
            theirs = [nn.Parameter(t.clone()) for t in full]
            opts = [cls(sharded), cls(plain)] + ([ref_cls(theirs)] if ref_cls else [])
            for g in grads:
                for p, gt, (_, pl) in zip(sharded, g, layouts):
                    p.grad = distribute_tensor(gt.clone(), mesh, pl)
                for p, gt in zip(plain, g):
                    p.grad = gt.clone()
                for p, gt in zip(theirs, g):
                    p.grad = gt.clone()
                for o in opts:
                    o.step()
            for k, (p, q, r) in enumerate(zip(sharded, plain, theirs)):
                got = p.full_tensor()
                where = f"{name} {dtype} param {k} {layouts[k]} world {world}"
                assert torch.equal(got, q.detach()), f"{where}: differs from one process"
                if ref_cls:
                    d = dev(got, r.detach())
                    assert d <= TOL[dtype], f"{where}: {d:.2e} from torch.optim"
                for key, t in opts[0].state[p].items():
                    if torch.is_tensor(t) and t.dim():
                        assert isinstance(t, DTensor), f"{where}: state {key} not a DTensor"


def check_policy(mesh, world, rank):
    """max_grad_norm over shards is clip_grad_norm_ over the whole model; a NaN on one rank
    skips the step on every rank (nonfinite="skip")."""
    from torch.distributed.tensor import Shard, distribute_tensor
    gen = torch.Generator().manual_seed(99)
    shapes = [(9, 4), (5,), (2, 3)]
    full = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    sharded = [nn.Parameter(distribute_tensor(t.clone(), mesh, [Shard(0)])) for t in full]
    ref = [nn.Parameter(t.clone()) for t in full]
    opt = ft.AdamW(sharded, lr=0.1, max_grad_norm=0.5, nonfinite="skip")
    ref_opt = torch.optim.AdamW(ref, lr=0.1)
    for _ in range(STEPS):
        g = [3 * torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
        for p, gt in zip(sharded, g):
            p.grad = distribute_tensor(gt.clone(), mesh, [Shard(0)])
        for p, gt in zip(ref, g):
            p.grad = gt.clone()
        opt.step()
        norm = torch.nn.utils.clip_grad_norm_(ref, 0.5)
        ref_opt.step()
        assert abs(opt.grad_norm - float(norm)) <= 1e-12 * float(norm), (opt.grad_norm, norm)
    for k, (p, q) in enumerate(zip(sharded, ref)):
        d = dev(p.full_tensor(), q.detach())
        assert d <= TOL[torch.float64], f"clipped across ranks, param {k}: {d:.2e}"
    before = [t.clone() for p in sharded for t in [p.to_local()] + [
        v.to_local() if hasattr(v, "to_local") else v for v in opt.state[p].values()]]
    for p in sharded:
        p.grad = distribute_tensor(torch.ones(p.shape, dtype=torch.float64), mesh,
                                   [Shard(0)])
    if rank == 1:               # a NaN in one rank's shard only (its shard is not empty)
        sharded[0].grad.to_local().view(-1)[-1:] = float("nan")
    opt.step()
    after = [t for p in sharded for t in [p.to_local()] + [
        v.to_local() if hasattr(v, "to_local") else v for v in opt.state[p].values()]]
    assert all(torch.equal(a, b) for a, b in zip(after, before)), "skipped step wrote"
    assert opt.grad_norm != opt.grad_norm       # NaN: every rank saw it


def check_refusals(mesh):
    from torch.distributed.tensor import Shard, distribute_tensor
    p = nn.Parameter(distribute_tensor(torch.zeros(8, 4), mesh, [Shard(0)]))
    try:
        ft.Adam([p], state_bits=8, min_8bit_size=1)
    except TypeError as e:
        assert "DTensor" in str(e) and "state_bits" in str(e), e
    else:
        raise AssertionError("8-bit states of a DTensor param were not refused")


def check_fsdp2(mesh, world, rank, offload):
    from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3)).double()
    ref = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3)).double()
    ref.load_state_dict(model.state_dict())
    # pin_memory needs an accelerator; on a CPU-only host the policy keeps plain memory
    kw = {"offload_policy": CPUOffloadPolicy(pin_memory=False)} if offload else {}
    for layer in (model[0], model[2]):
        fully_shard(layer, mesh=mesh, **kw)
    fully_shard(model, mesh=mesh, **kw)
    opt = ft.AdamW(model.parameters(), lr=1e-2)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(7)
    per = 3
    for _ in range(STEPS):
        x = torch.randn(per * world, 8, generator=gen, dtype=torch.float64)
        y = torch.randn(per * world, 3, generator=gen, dtype=torch.float64)
        mine = slice(rank * per, (rank + 1) * per)
        opt.zero_grad()
        nn.functional.mse_loss(model(x[mine]), y[mine]).backward()
        opt.step()
        ref_opt.zero_grad()
        nn.functional.mse_loss(ref(x), y).backward()
        ref_opt.step()
    for (n, p), q in zip(model.named_parameters(), ref.parameters()):
        d = dev(p.full_tensor(), q.detach())
        assert d <= TOL[torch.float64], f"FSDP2 offload={offload} {n}: {d:.2e} from torch.optim"


def main():
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from torch.distributed.device_mesh import init_device_mesh
    mesh = init_device_mesh("cpu", (world,))
    try:
        check_dtensors(mesh, world)
        check_refusals(mesh)
        check_policy(mesh, world, rank)
        for offload in (False, True):
            check_fsdp2(mesh, world, rank, offload)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    print(f"rank {rank}: ok")


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main())
