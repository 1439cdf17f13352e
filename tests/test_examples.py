"""The examples in examples/: they run and produce what they say.

The article's two examples: their "reaching" settings really reach the minimum / the fit,
with fastadam agreeing with the article's own code. The optimizer comparison: its figures
are written and its races end as the README describes. The digits MLP: its backward pass is
the gradient, and it reaches the test accuracy it promises with fastadam and the reference.
The last two need the ``examples`` extra (matplotlib, scikit-learn, tqdm) to run as scripts.
"""

import contextlib
import importlib.util
import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import fastadam
from fastadam import reference

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
# The scripts must import the same fastadam as this test process.
FASTADAM_ROOT = os.path.dirname(os.path.dirname(fastadam.__file__))
NUMBER = r"([-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?)"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}",
                                                  os.path.join(EXAMPLES, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(name, *args, stderr=False):
    """Run examples/<name>.py with ``args``; its stdout (and stderr if asked)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (FASTADAM_ROOT, os.environ.get("PYTHONPATH")) if p))
    # cwd: this folder, not the repository root, whose source tree has no built modules
    proc = subprocess.run([sys.executable, os.path.join(EXAMPLES, f"{name}.py"), *args],
                          capture_output=True, text=True, encoding="utf-8", env=env,
                          cwd=os.path.dirname(os.path.abspath(__file__)), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return (proc.stdout, proc.stderr) if stderr else proc.stdout


@pytest.fixture(scope="module")
def quadratic():
    return _load("minimize_quadratic")


@pytest.fixture(scope="module")
def regression():
    return _load("linear_regression")


# ---------------------------------------------------------------------- the scripts as run

def test_minimize_quadratic_script_reaches_the_minimum():
    out = _run("minimize_quadratic")
    hits = re.findall(r"\[reaches the minimum\].*?: (converged|NOT converged) at step (\d+), "
                      r"θ = " + NUMBER, out)
    assert len(hits) == 2, out
    for status, _step, theta in hits:
        assert status == "converged", out
        assert abs(float(theta)) < 1e-3, out
    # The article's settings, honestly reported: not converged, θ still near 4.04.
    assert "NOT converged after 1000 steps, θ = 4.0447" in out, out


def test_linear_regression_script_reaches_the_fit():
    out = _run("linear_regression")
    hits = re.findall(r"\[reaches the fit\].*?: w = " + NUMBER + ", b = " + NUMBER, out)
    assert len(hits) == 2, out
    for w, b in hits:
        assert abs(float(w) - 2) < 1e-3 and abs(float(b) - 1) < 1e-3, out
    # The article's settings, honestly reported (the article claims w=2.0000 b=1.0000).
    assert "Epoch  100: loss=14.620063 w=0.8879 b=0.8849" in out, out


# ------------------------------------------------------------------- the scripts' functions

def _quiet(fn, *args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()) as out:
        result = fn(*args, **kwargs)
    return result, out.getvalue()


def test_quadratic_article_settings_do_not_converge(quadratic):
    theta, steps, converged = quadratic.minimize_adam_()
    assert (steps, converged) == (1000, False)
    assert 4.0 < theta < 4.1        # about lr per step: 1000 * 0.001 < 1 moved from 5
    theta_article, printed = quadratic.run_article_adam()
    assert printed == []            # the article's code never prints "Converged at step"
    assert theta == pytest.approx(theta_article, rel=1e-12)


@pytest.mark.parametrize("label, lr, max_iters", [
    ("larger lr", 0.1, 1000), ("article's lr, more steps", 0.001, 20000)])
def test_quadratic_reaching_settings(quadratic, label, lr, max_iters):
    assert (label, lr, max_iters) in quadratic.REACHING
    theta, steps, converged = quadratic.minimize_adam_(lr=lr, max_iters=max_iters)
    assert converged and abs(theta) < 1e-3
    # The class and the function run the same kernel: the same bits.
    assert quadratic.minimize_Adam(lr=lr, max_iters=max_iters) == (theta, steps, converged)
    # And the article's code stops at the same step, at the same θ up to rounding.
    theta_article, printed = quadratic.run_article_adam(lr=lr, max_iters=max_iters)
    assert printed == [f"Converged at step {steps}"]
    assert abs(theta - theta_article) < 1e-15


def test_regression_article_settings(regression):
    w, b, loss = _quiet(regression.fit_fastadam, print_every=0)[0]
    (wa, ba), _ = _quiet(regression.article_adam_linear_regression, regression.X, regression.Y)
    assert w == pytest.approx(wa, rel=1e-12) and b == pytest.approx(ba, rel=1e-12)
    assert abs(w - 2) > 0.5 and loss > 1    # not the fit the article prints


@pytest.mark.parametrize("lr, epochs", [(0.1, 1000), (0.01, 10000)])
def test_regression_reaching_settings(regression, lr, epochs):
    assert any(r[1:3] == (lr, epochs) for r in regression.REACHING)
    (w, b, loss), printed = _quiet(regression.fit_fastadam, lr=lr, epochs=epochs,
                                   print_every=0)
    assert printed == ""
    assert abs(w - 2) < 1e-3 and abs(b - 1) < 1e-3 and loss < 1e-6
    (wa, ba), _ = _quiet(regression.article_adam_linear_regression, regression.X,
                         regression.Y, alpha=lr, epochs=epochs)
    assert abs(w - wa) < 1e-12 and abs(b - ba) < 1e-12


# ------------------------------------------------------- compare_optimizers.py: the races

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def compare():
    return _load("compare_optimizers")


@pytest.fixture(scope="module")
def races(compare):
    return compare.run_all()


def _race(races, problem_name, lr):
    for problem, race_lr, _steps, runs in races:
        if problem.name == problem_name and race_lr == lr:
            return runs
    raise AssertionError(f"no race {problem_name} lr={lr}")


def test_compare_races_end_as_described(races):
    # The README's and the figures' captions say these things: check them.
    ravine = _race(races, "ravine", 0.1)
    assert all(r.diverged is None for r in ravine.values())
    for name in ("SGD + momentum", "RMSprop", "Adam"):
        assert ravine[name].loss[-1] < 1e-10, name
    assert ravine["SGD"].loss[-1] > 1e-6        # still crawling along the flat floor
    slow = _race(races, "Rosenbrock", 0.002)
    assert all(r.diverged is None for r in slow.values())
    assert slow["SGD + momentum"].loss[-1] < 1e-20
    assert slow["Adam"].loss[-1] > 1e-2         # about lr per step: far from (1, 1)
    fast = _race(races, "Rosenbrock", 0.01)
    assert fast["SGD"].diverged and fast["SGD"].diverged <= 10
    assert fast["SGD + momentum"].diverged and fast["SGD + momentum"].diverged <= 10
    assert fast["RMSprop"].diverged is None and fast["RMSprop"].loss[-1] > 1e-3
    assert fast["Adam"].diverged is None and fast["Adam"].loss[-1] < 1e-6


def test_compare_paths_match_the_reference(compare, races):
    # Every path the figures draw is the one fastadam.reference computes.
    worst, _ = _quiet(compare.report, races)
    assert worst < 1e-12


def test_compare_adam_state_is_adams(compare, races):
    problem, lr, steps, runs = races[compare.STATE_RACE]
    s = runs["Adam"].state
    assert len(s["t"]) == steps
    # Replay the recorded gradients through the reference: the same m and v.
    p, m, v = np.zeros(1), np.zeros(1), np.zeros(1)
    for t, g in enumerate(s["g"], start=1):
        reference.adam_(p, np.array([g]), m, v, step=t, lr=lr)
        if t in (1, 2, 10, 100, steps):
            assert s["m"][t - 1] == pytest.approx(m[0], rel=1e-12)
            assert s["v"][t - 1] == pytest.approx(v[0], rel=1e-12)
    # Bias correction at step 1 turns m = 0.1·g, v = 0.001·g² into m̂ = g, v̂ = g².
    assert s["m_hat"][0] == pytest.approx(s["g"][0], rel=1e-12)
    assert s["v_hat"][0] == pytest.approx(s["g"][0] ** 2, rel=1e-12)
    assert (s["bc1_factor"][0], s["bc2_factor"][0]) == (pytest.approx(10), pytest.approx(1000))
    assert np.all(np.diff(s["bc2_factor"]) < 0) and s["bc2_factor"][-1] < 1.01


def test_compare_script_writes_pngs(tmp_path):
    pytest.importorskip("matplotlib", reason="compare_optimizers.py needs matplotlib: "
                        "pip install 'fastadam[examples]'")
    out = _run("compare_optimizers", "--out", str(tmp_path), "--steps", "60")
    assert "Adam" in out and "diverged at step" in out, out
    worst = float(re.search(r"max \|Δ\(x, y\)\| = " + NUMBER, out).group(1))
    assert worst < 1e-12, out
    from PIL import Image      # Pillow comes with matplotlib

    for name in ("optimizer_paths.png", "optimizer_loss.png", "adam_state.png"):
        path = tmp_path / name
        assert re.search(rf"wrote \S*{name} \(\d+ KB\)", out), out
        data = path.read_bytes()
        assert data[:8] == PNG_SIGNATURE, name
        assert 10_000 < len(data) < 200_000, (name, len(data))
        with Image.open(path) as im:
            im.verify()              # a complete, uncorrupted PNG
        with Image.open(path) as im:
            assert im.format == "PNG" and im.width > 800 and im.height > 300, im.size


def test_compare_committed_figures_are_pngs():
    # The README embeds these; they must be there and be modest PNGs.
    for name in ("optimizer_paths.png", "optimizer_loss.png", "adam_state.png"):
        data = open(os.path.join(EXAMPLES, "figures", name), "rb").read()
        assert data[:8] == PNG_SIGNATURE and len(data) < 200_000, name


# -------------------------------------------------------------- train_mlp_digits.py

@pytest.fixture(scope="module")
def digits():
    return _load("train_mlp_digits")


def test_digits_backward_is_the_gradient(digits):
    # Central differences in float64 on a small random network and batch.
    rng = np.random.default_rng(3)
    params = {k: v.astype(np.float64) + 0.1 * rng.standard_normal(v.shape)
              for k, v in digits.init_params(n_in=5, hidden=7, n_out=4, seed=1).items()}
    X = rng.standard_normal((6, 5))
    y = rng.integers(0, 4, 6)
    _, grads = digits.loss_and_grads(params, X, y)
    h = 1e-6
    for key, p in params.items():
        num = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + h
            up = digits.loss_and_grads(params, X, y)[0]
            p[i] = old - h
            down = digits.loss_and_grads(params, X, y)[0]
            p[i] = old
            num[i] = (up - down) / (2 * h)
        np.testing.assert_allclose(grads[key], num, rtol=1e-5, atol=1e-8, err_msg=key)


def test_digits_reference_adam_is_adam(digits):
    # The reference twin in the comparison steps like fastadam.Adam (float32 rounding aside).
    rng = np.random.default_rng(0)
    a = digits.init_params(seed=2)
    b = {k: v.copy() for k, v in a.items()}
    fast, ref = fastadam.Adam(a, lr=1e-2), digits.ReferenceAdam(b, lr=1e-2)
    for _ in range(20):
        grads = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in a.items()}
        fast.step(grads)
        ref.step(grads)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-5, err_msg=k)


def test_digits_script_reaches_095():
    pytest.importorskip("sklearn", reason="train_mlp_digits.py needs scikit-learn: "
                        "pip install 'fastadam[examples]'")
    pytest.importorskip("tqdm", reason="train_mlp_digits.py needs tqdm: "
                        "pip install 'fastadam[examples]'")
    out, err = _run("train_mlp_digits", stderr=True)     # the full default run
    last = out.strip().splitlines()[-1]
    m = re.fullmatch(r"test accuracy: (0\.\d{4})", last)
    assert m, out
    assert float(m.group(1)) >= 0.95, out
    both = re.search(r"fastadam\.Adam (0\.\d{4}), fastadam\.reference\.adam_ (0\.\d{4})", out)
    assert both and both.group(1) == both.group(2) == m.group(1), out
    assert re.search(r"fastadam\.Adam is \d+\.\dx faster than fastadam\.reference\.adam_",
                     out), out
    assert len(re.findall(r"^epoch +\d+/15: ", out, re.M)) == 15, out
    # One tqdm bar per epoch on stderr, each run to its end (43 batches of 32 or fewer).
    for epoch in range(1, 16):
        assert re.search(rf"epoch +{epoch}/15: 100%.*43/43", err), err[-2000:]



# -------------------------------------------------------------- train_mlp_digits_bf16.py

def test_digits_bf16_script_master_weights_match_float32_and_stochastic_rounding_helps():
    pytest.importorskip("sklearn", reason="train_mlp_digits_bf16.py needs scikit-learn: "
                        "pip install 'fastadam[examples]'")
    out = _run("train_mlp_digits_bf16")     # the full default run (15 epochs, seconds)
    last = out.strip().splitlines()[-1]
    found = dict(re.findall(r"(float32|bf16 master|bf16 nearest|bf16 stochastic) "
                            r"(0\.\d{4})", last))
    assert len(found) == 4, out
    acc = {k: float(v) for k, v in found.items()}
    loss = {m: float(v) for m, v in re.findall(
        r"^  (float32|bf16 master|bf16 nearest|bf16 stochastic) +train loss (\d\.\d{4})",
        out, re.M)}
    assert acc["float32"] >= 0.95, out
    # the master-weight step is the float32 step on the bfloat16 grads: the same accuracy
    # within half a point
    assert abs(acc["bf16 master"] - acc["float32"]) <= 0.005, out
    # rounding to nearest loses updates smaller than half an ulp; stochastic keeps them
    assert loss["bf16 stochastic"] < loss["bf16 nearest"], out
    assert loss["bf16 stochastic"] <= 1.1 * loss["float32"], out
    assert acc["bf16 stochastic"] >= acc["float32"] - 0.01, out


# -------------------------------------------------------------- train_mlp_digits_8bit.py

@pytest.fixture(scope="module")
def digits_8bit_accuracy():
    pytest.importorskip("sklearn", reason="train_mlp_digits_8bit.py needs scikit-learn: "
                        "pip install 'fastadam[examples]'")
    out = _run("train_mlp_digits_8bit")     # the full default run (15 epochs, seconds)
    last = out.strip().splitlines()[-1]
    acc = {k: float(v) for k, v in re.findall(r"(32-bit|8-bit W1\+W2|8-bit W1) (0\.\d{4})",
                                              last)}
    assert len(acc) == 3, out
    assert re.search(r"^  8-bit W1 .*8-bit states: W1$", out, re.M), out
    assert re.search(r"^  8-bit W1\+W2 .*8-bit states: W1, W2$", out, re.M), out
    return acc, out


def test_digits_8bit_script_w1_within_half_a_point(digits_8bit_accuracy):
    acc, out = digits_8bit_accuracy
    assert acc["32-bit"] >= 0.95, out
    assert acc["8-bit W1"] >= acc["32-bit"] - 0.005, out


@pytest.mark.xfail(strict=True, reason="8-bit exp_avg_sq rounds to code 0 (the value 0) "
                   "where exp_avg stays nonzero: steps of lr*exp_avg/eps in W2 (seed 0)")
def test_digits_8bit_script_both_matrices_within_half_a_point(digits_8bit_accuracy):
    acc, out = digits_8bit_accuracy
    assert acc["8-bit W1+W2"] >= acc["32-bit"] - 0.005, out


# -------------------------------------------------------------- train_torch_8bit.py

def test_train_torch_8bit_example():
    """examples/train_torch_8bit.py with a small budget (8 epochs): fastadam's 8-bit AdamW
    reaches the 32-bit run's test accuracy within 1.5 points (7 of the 450 test digits) and
    its test loss within 0.02; bitsandbytes' 8-bit AdamW the same. Measured at this budget,
    seeds 0-4: both 8-bit runs' accuracy within 0.23 points (1 digit) of the 32-bit run's,
    their loss within 0.002; at 20 epochs within 0.45 points and 0.0064 (docs/torch.md)."""
    # (the torch, compare and examples extras; the default reasons are tests/allowed_skips'
    # "could not import" lines)
    for name in ("torch", "bitsandbytes", "sklearn"):
        pytest.importorskip(name)
    res = json.loads(_run("train_torch_8bit", "--epochs", "8", "--json").strip()
                     .splitlines()[-1])
    f32, f8 = res["fastadam 32-bit"], res["fastadam 8-bit"]
    for kind in ("fastadam 8-bit", "bitsandbytes 8-bit"):
        assert res[kind]["accuracy"] >= f32["accuracy"] - 0.015, res
        assert res[kind]["loss"] <= f32["loss"] + 0.02, res
    assert f8["state_bytes"] < 0.3 * f32["state_bytes"], res


def test_mpi_sharded_optimizer_matches_one_process():
    """examples/mpi_sharded_optimizer.py under mpirun with 2 ranks (the ``mpi`` extra and
    Debian's openmpi-bin): every rank steps its slice, clipped by the whole gradient's norm
    from the summed grad_stats, and ends where one process with one optimizer ends."""
    import shutil
    if importlib.util.find_spec("mpi4py") is None or shutil.which("mpirun") is None:
        pytest.skip("needs mpi4py (the mpi extra) and mpirun (Debian's openmpi-bin)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (FASTADAM_ROOT, os.environ.get("PYTHONPATH")) if p),
        OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
        OMPI_MCA_rmaps_base_oversubscribe="1")
    proc = subprocess.run(["mpirun", "-n", "2", "-x", "PYTHONPATH", sys.executable,
                           os.path.join(EXAMPLES, "mpi_sharded_optimizer.py")],
                          capture_output=True, text=True, env=env, timeout=300,
                          cwd=os.path.dirname(os.path.abspath(__file__)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ranks: 2" in proc.stdout, proc.stdout
    dev = float(re.search(r"max \|w - one process\|: " + NUMBER, proc.stdout).group(1))
    assert dev <= 1e-12, proc.stdout
    loss = float(re.search(r"final loss: " + NUMBER, proc.stdout).group(1))
    assert loss < 0.06, proc.stdout
