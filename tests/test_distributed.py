"""fastadam.torch inside torch.distributed: processes on loopback (gloo), each a rank
running tests/dist_worker.py, which checks DTensor params of every optimizer against one
process and torch.optim, and FSDP2 training against torch.optim (see its docstring)."""

import os
import socket
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

WORKER = os.path.join(os.path.dirname(__file__), "dist_worker.py")
TIMEOUT = 300       # seconds for every rank to finish


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(world):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK")}
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()),
               WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world), OMP_NUM_THREADS="1",
               FASTADAM_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, WORKER], env={**env, "RANK": str(r),
                                                              "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(world)]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=TIMEOUT)[0])
    finally:
        for p in procs:
            p.kill()
    return [(p.returncode, out) for p, out in zip(procs, outs)]


@pytest.mark.parametrize("world", [2, 4])
def test_sharded_steps_match_one_process_and_torch(world):
    results = launch(world)
    for rank, (code, out) in enumerate(results):
        assert code == 0, f"rank {rank} of {world} failed:\n{out[-4000:]}"
