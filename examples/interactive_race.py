"""The optimizer race as an interactive page: SGD, SGD + momentum, RMSprop and Adam
=================================================================================

The article's interactive comparison, as one self-contained HTML file: pick the landscape
(the ravine, Rosenbrock's valley, a saddle), the learning rate, the start point and Adam's
betas, and watch the four optimizers race from the same start with the same learning rate
on the 3D landscape and its contour map, with their loss curves and Adam's internal state
for x: m and v as the optimizer holds them, m̂ = m/(1-β1^t), v̂ = v/(1-β2^t) and the
bias-correction factors 1/(1-β1^t), 1/(1-β2^t) falling to 1. A step slider (and a play
button) replays the race.

Every trajectory is computed when the page is generated, with fastadam's optimizer classes
(``fastadam.SGD``, ``fastadam.RMSprop``, ``fastadam.Adam`` on 2-element float64 arrays),
for every combination of the controls; the page only looks them up. It needs no server and
no network: plotly's JavaScript is inlined (about 5 MB of the file).

Run from the repository root:  python examples/interactive_race.py [--out FILE.html]
Needs plotly (pip install "fastadam[docs]").

.. raw:: html

   <p>The page this script makes, generated when this site was built
   (<a href="../interactive/optimizer_race.html">open it on its own</a>):</p>
   <iframe src="../interactive/optimizer_race.html" title="The interactive optimizer race"
           style="width: 100%; height: 1250px; border: 1px solid #ccc;"></iframe>
"""

# The gallery's thumbnail (the script is not run by the gallery: the docs build makes the
# page once and embeds it): a screenshot of the page in headless chromium.
# sphinx_gallery_thumbnail_path = "_static/race-thumbnail.png"

import argparse
import base64
import itertools
import json
import os
import sys

import numpy as np

try:
    import fastadam
except ImportError:  # run from a source checkout without installing: use the repo's copy
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import fastadam

HERE = os.path.dirname(os.path.abspath(__file__))
MOMENTUM = 0.9
DIVERGED = 1e3          # a run whose |x| or |y| passes this has left the picture for good
FULL_STEPS = 120        # paths keep every one of their first steps, then a sample
TAIL_POINTS = 80
GRID = 70               # the surface's grid, per side

NAMES = ("SGD", "SGD + momentum", "RMSprop", "Adam")
COLORS = ("#d62728", "#ff7f0e", "#2ca02c", "#1f77b4")
LRS = (0.001, 0.003, 0.01, 0.03, 0.1)
BETA1S = (0.5, 0.9, 0.99)
BETA2S = (0.9, 0.999, 0.9999)
DEFAULTS = dict(landscape=0, lr=4, start=0, beta1=1, beta2=1)


# ---- the landscapes -----------------------------------------------------------------------
class Ravine:
    """f(x, y) = 0.1·x² + 9·y²: a flat floor and steep walls."""
    name = "ravine"
    formula = "f(x, y) = 0.1·x² + 9·y²"
    starts = ((-4.5, 1.5), (-4.0, -1.8), (1.0, 1.9))
    minimum = (0.0, 0.0)
    fmin = 0.0
    xlim, ylim = (-5.0, 1.5), (-2.0, 2.0)
    steps = 300

    @staticmethod
    def loss(x, y):
        return 0.1 * x * x + 9.0 * y * y

    @staticmethod
    def grad(x, y):
        return np.array([0.2 * x, 18.0 * y])


class Rosenbrock:
    """f(x, y) = (1-x)² + 100·(y-x²)²: a curved valley with its minimum at (1, 1)."""
    name = "Rosenbrock"
    formula = "f(x, y) = (1-x)² + 100·(y-x²)²"
    starts = ((-1.2, 1.0), (-1.5, 2.5), (1.8, 0.5))
    minimum = (1.0, 1.0)
    fmin = 0.0
    xlim, ylim = (-2.0, 2.0), (-1.0, 3.0)
    steps = 1500

    @staticmethod
    def loss(x, y):
        return (1 - x) ** 2 + 100 * (y - x * x) ** 2

    @staticmethod
    def grad(x, y):
        return np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])


class Saddle:
    """f(x, y) = x² - y² + y⁴/2: a saddle at (0, 0), minima at (0, ±1)."""
    name = "saddle"
    formula = "f(x, y) = x² − y² + y⁴/2"
    starts = ((-1.8, 0.001), (1.5, -0.05), (-1.0, 1.6))
    minimum = (0.0, 1.0)       # and (0, -1)
    fmin = -0.5
    xlim, ylim = (-2.0, 2.0), (-1.8, 1.8)
    steps = 300

    @staticmethod
    def loss(x, y):
        return x * x - y * y + 0.5 * y ** 4

    @staticmethod
    def grad(x, y):
        return np.array([2 * x, -2 * y + 2 * y ** 3])


LANDSCAPES = (Ravine, Rosenbrock, Saddle)


# ---- the races ----------------------------------------------------------------------------
def make_optimizer(name, p, lr, betas):
    """fastadam's optimizer ``name`` (one of NAMES) over the one param ``p``."""
    if name == "SGD":
        return fastadam.SGD([p], lr=lr)
    if name == "SGD + momentum":
        return fastadam.SGD([p], lr=lr, momentum=MOMENTUM)
    if name == "RMSprop":
        return fastadam.RMSprop([p], lr=lr)
    return fastadam.Adam([p], lr=lr, betas=betas)


def kept_steps(steps):
    """The step numbers a page keeps (0 = the start): all of the first FULL_STEPS, then
    TAIL_POINTS spread over the rest."""
    head = np.arange(min(steps, FULL_STEPS) + 1)
    tail = np.linspace(FULL_STEPS, steps, TAIL_POINTS).round().astype(int)
    return np.unique(np.concatenate([head, tail[tail <= steps]]))


def race(landscape, name, lr, start, betas=(0.9, 0.999)):
    """One optimizer's race: its path (steps + 1 rows of x, y; fewer if it diverged), the
    step at which it diverged (or None) and, for Adam, m and v of x after every step, read
    from the optimizer's state."""
    p = np.array(start, dtype=np.float64)
    opt = make_optimizer(name, p, lr, betas)
    path = [p.copy()]
    m, v = [0.0], [0.0]
    diverged = None
    for _ in range(landscape.steps):
        opt.step([landscape.grad(*p)])
        if not np.all(np.abs(p) < DIVERGED):    # also catches inf and NaN
            diverged = opt.step_count
            break
        path.append(p.copy())
        if name == "Adam":
            m.append(float(opt.state[0]["exp_avg"][0]))
            v.append(float(opt.state[0]["exp_avg_sq"][0]))
    return np.array(path), diverged, np.array(m), np.array(v)


def _b64(a):
    """A float32 array as base64 (the page decodes it into a Float32Array)."""
    return base64.b64encode(np.ascontiguousarray(a, dtype="<f4").tobytes()).decode("ascii")


def _keep(path, loss, kept):
    keep = kept[kept < len(path)]
    return keep, path[keep], loss[keep]


def compute(landscapes=LANDSCAPES, lrs=LRS, beta1s=BETA1S, beta2s=BETA2S):
    """Every race for every combination of the controls, as the page's data."""
    data = {"names": NAMES, "colors": COLORS, "lrs": lrs, "beta1s": beta1s, "beta2s": beta2s,
            "landscapes": [], "races": {}}
    for li, land in enumerate(landscapes):
        xs = np.linspace(*land.xlim, GRID)
        ys = np.linspace(*land.ylim, GRID)
        X, Y = np.meshgrid(xs, ys)
        data["landscapes"].append({
            "name": land.name, "formula": land.formula, "starts": land.starts,
            "minimum": land.minimum, "fmin": land.fmin, "xlim": land.xlim, "ylim": land.ylim,
            "steps": land.steps, "x": _b64(xs), "y": _b64(ys),
            "z": _b64(land.loss(X, Y) - land.fmin), "t": kept_steps(land.steps).tolist(),
        })
        kept = kept_steps(land.steps)
        for (ri, lr), (si, start) in itertools.product(enumerate(lrs), enumerate(land.starts)):
            for name in NAMES:
                combos = (itertools.product(range(len(beta1s)), range(len(beta2s)))
                          if name == "Adam" else [(None, None)])
                for b1, b2 in combos:
                    betas = (beta1s[b1], beta2s[b2]) if name == "Adam" else (0.9, 0.999)
                    path, diverged, m, v = race(land, name, lr, start, betas)
                    loss = land.loss(path[:, 0], path[:, 1]) - land.fmin
                    keep, kp, kl = _keep(path, loss, kept)
                    # log10 of the loss: float32 would flush losses below 1e-38 to 0
                    entry = {"n": len(keep), "x": _b64(kp[:, 0]), "y": _b64(kp[:, 1]),
                             "log10_loss": _b64(np.log10(np.maximum(kl, 1e-300))),
                             "diverged": diverged,
                             "final": float(loss[-1])}
                    if name == "Adam":
                        entry["m"], entry["v"] = _b64(m[keep]), _b64(v[keep])
                    key = f"{li}/{ri}/{si}/{NAMES.index(name)}" + (
                        f"/{b1}/{b2}" if name == "Adam" else "")
                    data["races"][key] = entry
    return data


# ---- the page -----------------------------------------------------------------------------
def figure():
    """The plotly figure the page draws into: its traces in a fixed order (the page's
    script fills them from the data), with the default controls' races drawn by that
    script on load."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=2, cols=4, row_heights=[0.58, 0.42], horizontal_spacing=0.06,
        vertical_spacing=0.1,
        specs=[[{"type": "scene", "colspan": 2}, None, {"type": "xy", "colspan": 2}, None],
               [{"type": "xy"}] * 4],
        subplot_titles=("Optimization landscape (3D): log10(1 + loss − min)",
                        "Contours and paths", "Loss − min (log scale)",
                        "Adam: m and m̂ = m/(1−β1^t), x", "Adam: v and v̂ = v/(1−β2^t), x",
                        "Bias-correction factors"))
    fig.add_trace(go.Surface(name="landscape", colorscale="Greys", opacity=0.75,
                             showscale=False, showlegend=False, hoverinfo="skip"),
                  row=1, col=1)
    for name, color in zip(NAMES, COLORS):
        fig.add_trace(go.Scatter3d(name=name, legendgroup=name, showlegend=False,
                                   mode="lines", line=dict(color=color, width=5)),
                      row=1, col=1)
    fig.add_trace(go.Scatter3d(name="now", mode="markers", showlegend=False,
                               marker=dict(size=5, color=list(COLORS))), row=1, col=1)
    fig.add_trace(go.Contour(name="contours", colorscale="Greys", showscale=False,
                             showlegend=False,
                             contours=dict(coloring="heatmap"), opacity=0.6,
                             hoverinfo="skip", ncontours=24), row=1, col=3)
    for name, color in zip(NAMES, COLORS):
        fig.add_trace(go.Scatter(name=name, legendgroup=name, mode="lines",
                                 line=dict(color=color, width=2)), row=1, col=3)
    fig.add_trace(go.Scatter(name="now", mode="markers", showlegend=False,
                             marker=dict(size=9, color=list(COLORS),
                                         line=dict(color="black", width=1))), row=1, col=3)
    fig.add_trace(go.Scatter(name="start / minimum", mode="markers", showlegend=False,
                             marker=dict(size=[10, 14], color="black",
                                         symbol=["circle", "star"])), row=1, col=3)
    for name, color in zip(NAMES, COLORS):
        fig.add_trace(go.Scatter(name=name, legendgroup=name, showlegend=False,
                                 mode="lines", line=dict(color=color, width=1.6)),
                      row=2, col=1)
    state = (("m (exp_avg)", "#1f77b4", None, 2), ("m̂", "#9467bd", "dash", 2),
             ("v (exp_avg_sq)", "#1f77b4", None, 3), ("v̂", "#9467bd", "dash", 3),
             ("1/(1−β1^t)", "#ff7f0e", None, 4), ("1/(1−β2^t)", "#2ca02c", None, 4))
    for label, color, dash, col in state:
        fig.add_trace(go.Scatter(name=label, mode="lines", showlegend=False,
                                 line=dict(color=color, dash=dash, width=1.6)),
                      row=2, col=col)
    for col in (1, 3, 4):
        fig.update_yaxes(type="log", exponentformat="power", row=2, col=col)
    for col in (1, 2, 3, 4):
        fig.update_xaxes(type="log", title_text="step t", row=2, col=col)
    fig.update_xaxes(title_text="x", row=1, col=3)
    fig.update_yaxes(title_text="y", row=1, col=3)
    fig.update_layout(
        height=860, margin=dict(l=40, r=20, t=70, b=70), template="plotly_white",
        legend=dict(orientation="h", x=0.5, xanchor="center", y=-0.07, yanchor="top"),
        scene=dict(xaxis_title="x", yaxis_title="y", zaxis_title="log10(1+f−min)",
                   camera=dict(eye=dict(x=-1.4, y=-1.6, z=1.1))),
        uirevision="race")
    return fig


TRACE_INDEX = dict(surface=0, path3d=1, now3d=5, contour=6, path2d=7, now2d=11, marks=12,
                   loss=13, m=17, m_hat=18, v=19, v_hat=20, bc1=21, bc2=22)

CONTROLS = """
<div id="controls">
  <label>Landscape <select id="landscape"></select></label>
  <label>Start <select id="start"></select></label>
  <label>Learning rate α = <b id="lr-value"></b>
    <input id="lr" type="range" min="0" step="1"></label>
  <label>β1 = <b id="beta1-value"></b> <input id="beta1" type="range" min="0" step="1"></label>
  <label>β2 = <b id="beta2-value"></b> <input id="beta2" type="range" min="0" step="1"></label>
  <label>Step t = <b id="step-value"></b> <input id="step" type="range" min="0" step="1">
    <button id="play" type="button">play</button></label>
</div>
<table id="readout"><thead><tr><th>optimizer</th><th>loss − min at t</th>
  <th>after the last step</th></tr></thead><tbody></tbody></table>
"""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 12px 18px; color: #222; }
h1 { font-size: 1.3em; margin: 0 0 4px 0; }
p.note { margin: 2px 0 8px 0; font-size: 0.92em; color: #444; max-width: 70em; }
#controls { display: flex; flex-wrap: wrap; gap: 6px 22px; align-items: center;
            padding: 8px 10px; background: #f4f4f4; border-radius: 6px; font-size: 0.92em; }
#controls input[type=range] { width: 9em; vertical-align: middle; }
#readout { border-collapse: collapse; font-size: 0.88em; margin: 8px 0 0 0; }
#readout td, #readout th { padding: 1px 12px 1px 0; text-align: left; }
#readout td.num { font-variant-numeric: tabular-nums; }
"""

SCRIPT = r"""
(function () {
  const D = JSON.parse(document.getElementById("race-data").textContent);
  const I = %(index)s;
  const gd = document.getElementById("race");
  const el = id => document.getElementById(id);
  const cache = {};
  function f32(s) {            // base64 little-endian float32 -> Array
    if (cache[s]) return cache[s];
    const bin = atob(s), bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return (cache[s] = Array.from(new Float32Array(bytes.buffer)));
  }
  function fill(select, labels, value) {
    select.innerHTML = "";
    labels.forEach((text, i) => select.add(new Option(text, i)));
    select.value = value;
  }
  const fmt = v => (v <= 1e-299 ? "0" : Math.abs(v) >= 1e-3 && Math.abs(v) < 1e4
                    ? v.toPrecision(4) : v.toExponential(2));
  fill(el("landscape"), D.landscapes.map(l => l.name + ":  " + l.formula),
       %(landscape)d);
  [["lr", D.lrs, %(lr)d], ["beta1", D.beta1s, %(beta1)d],
   ["beta2", D.beta2s, %(beta2)d]].forEach(([id, values, v]) => {
    el(id).max = values.length - 1; el(id).value = v; });
  function starts() {
    const L = D.landscapes[+el("landscape").value];
    fill(el("start"), L.starts.map(s => "(" + s[0] + ", " + s[1] + ")"),
         Math.min(+el("start").value || 0, L.starts.length - 1));
  }
  starts();
  el("start").value = %(start)d;
  let lastLand = -1;

  const loss = r => r._loss;
  function races() {
    const li = +el("landscape").value, ri = +el("lr").value, si = +el("start").value;
    const b1 = +el("beta1").value, b2 = +el("beta2").value;
    const L = D.landscapes[li];
    return D.names.map((name, k) => {
      const r = D.races[[li, ri, si, k].join("/") +
                        (name === "Adam" ? "/" + b1 + "/" + b2 : "")];
      if (!r._loss) r._loss = f32(r.log10_loss).map(v => Math.pow(10, v));
      return Object.assign({t: L.t.slice(0, r.n)}, r);
    });
  }
  const logz = v => Math.log10(1 + Math.max(v, 0));

  function draw(resetStep) {
    const li = +el("landscape").value, L = D.landscapes[li];
    const b1v = D.beta1s[+el("beta1").value], b2v = D.beta2s[+el("beta2").value];
    el("lr-value").textContent = D.lrs[+el("lr").value];
    el("beta1-value").textContent = b1v;
    el("beta2-value").textContent = b2v;
    const R = races();
    el("step").max = L.steps;
    if (resetStep) el("step").value = L.steps;
    const T = +el("step").value;
    el("step-value").textContent = T;
    const upto = r => { let n = 0; while (n < r.t.length && r.t[n] <= T) n++; return n; };
    const x = [], y = [], z = [], idx = [];
    const nowx = [], nowy = [], nowz = [];
    const rows = [];
    R.forEach((r, k) => {
      const n = upto(r), px = f32(r.x).slice(0, n), py = f32(r.y).slice(0, n);
      const pl = loss(r).slice(0, n);
      x.push(px); y.push(py); z.push(pl.map(logz));
      nowx.push(px[n - 1]); nowy.push(py[n - 1]); nowz.push(logz(pl[n - 1]));
      const gone = r.diverged && T >= r.diverged;
      rows.push("<tr><td style='color:" + D.colors[k] + "'>&#9632; " + D.names[k] +
                "</td><td class=num>" + (gone ? "diverged at step " + r.diverged
                                          : fmt(pl[n - 1])) + "</td><td class=num>" +
                (r.diverged ? "diverged at step " + r.diverged
                            : fmt(r.final) + " (t = " + L.steps + ")") + "</td></tr>");
    });
    document.querySelector("#readout tbody").innerHTML = rows.join("");
    const lossT = R.map(r => r.t.slice(1, upto(r)));
    const lossY = R.map(r => loss(r).slice(1, upto(r)).map(v => Math.max(v, 1e-20)));
    const A = R[3], na = upto(A), t = A.t.slice(1, na);
    const m = f32(A.m).slice(1, na), v = f32(A.v).slice(1, na);
    const bc1 = t.map(s => 1 / (1 - Math.pow(b1v, s)));
    const bc2 = t.map(s => 1 / (1 - Math.pow(b2v, s)));
    const gx = f32(L.x), gy = f32(L.y), gz = f32(L.z), G = gx.length, zz = [], lz = [];
    for (let i = 0; i < G; i++) {
      zz.push(gz.slice(i * G, (i + 1) * G));
      lz.push(zz[i].map(logz));
    }
    const upd = [
      [I.surface, {x: [gx], y: [gy], z: [lz]}],
      [I.contour, {x: [gx], y: [gy], z: [lz]}],
      [I.now3d, {x: [nowx], y: [nowy], z: [nowz]}],
      [I.now2d, {x: [nowx], y: [nowy]}],
      [I.marks, {x: [[L.starts[+el("start").value][0], L.minimum[0]]],
                 y: [[L.starts[+el("start").value][1], L.minimum[1]]]}],
      [I.m, {x: [t], y: [m]}], [I.m_hat, {x: [t], y: [m.map((a, i) => a * bc1[i])]}],
      [I.v, {x: [t], y: [v]}], [I.v_hat, {x: [t], y: [v.map((a, i) => a * bc2[i])]}],
      [I.bc1, {x: [t], y: [bc1]}], [I.bc2, {x: [t], y: [bc2]}],
    ];
    for (let k = 0; k < 4; k++) {
      upd.push([I.path3d + k, {x: [x[k]], y: [y[k]], z: [z[k]]}]);
      upd.push([I.path2d + k, {x: [x[k]], y: [y[k]]}]);
      upd.push([I.loss + k, {x: [lossT[k]], y: [lossY[k]]}]);
    }
    upd.forEach(([i, u]) => Object.keys(u).forEach(key => { gd.data[i][key] = u[key][0]; }));
    const layout = gd.layout;
    if (lastLand !== li) {
      layout.xaxis = Object.assign(layout.xaxis || {}, {range: L.xlim, autorange: false});
      layout.yaxis = Object.assign(layout.yaxis || {}, {range: L.ylim, autorange: false});
      // the 3D box is the landscape's: a diverging path leaves it instead of stretching it
      const zmax = Math.max(...lz.map(row => Math.max(...row)));
      const sc = layout.scene;
      sc.xaxis = Object.assign(sc.xaxis || {}, {range: L.xlim, autorange: false});
      sc.yaxis = Object.assign(sc.yaxis || {}, {range: L.ylim, autorange: false});
      sc.zaxis = Object.assign(sc.zaxis || {}, {range: [0, 1.05 * zmax], autorange: false});
      lastLand = li;
    }
    layout.title = {text: L.name + ": " + L.formula + ", α = " + D.lrs[+el("lr").value] +
                    ", β = (" + b1v + ", " + b2v + "), t ≤ " + T, x: 0.5, font: {size: 14}};
    layout.datarevision = (layout.datarevision || 0) + 1;
    // window.raceDraws counts finished drawings (the browser test waits on it)
    return Plotly.react(gd, gd.data, layout).then(() => {
      window.raceDraws = (window.raceDraws || 0) + 1; });
  }
  ["landscape"].forEach(id => el(id).addEventListener("change", () => { starts(); draw(true); }));
  ["start", "lr", "beta1", "beta2"].forEach(id => {
    el(id).addEventListener("change", () => draw(true));
    el(id).addEventListener("input", () => draw(true));
  });
  el("step").addEventListener("input", () => draw(false));
  let timer = null;
  el("play").addEventListener("click", () => {
    if (timer) { clearInterval(timer); timer = null; el("play").textContent = "play"; return; }
    const max = +el("step").max, stride = Math.max(1, Math.round(max / 120));
    if (+el("step").value >= max) el("step").value = 0;
    el("play").textContent = "pause";
    timer = setInterval(() => {
      const next = Math.min(max, +el("step").value + stride);
      el("step").value = next; draw(false);
      if (next >= max) { clearInterval(timer); timer = null; el("play").textContent = "play"; }
    }, 60);
  });
  draw(true).then(() => { window.raceReady = true; });
})();
"""


def page(data, title="Four optimizers, one landscape: an interactive race"):
    """The whole HTML page: controls, the figure (plotly's JavaScript inlined), the data."""
    import plotly.io as pio

    div = pio.to_html(figure(), include_plotlyjs=True, full_html=False, div_id="race",
                      config={"displaylogo": False, "responsive": True})
    land = data["landscapes"]
    note = (f"SGD (plain), SGD + momentum {MOMENTUM}, RMSprop (alpha 0.99) and Adam start at "
            "the same point with the same learning rate α. Every trajectory was computed "
            f"with fastadam {fastadam.__version__}'s optimizer classes when this page was "
            f"generated ({len(data['races'])} races: {len(land)} landscapes × "
            f"{len(data['lrs'])} learning rates × 3 starts, Adam also × "
            f"{len(data['beta1s'])} β1 × {len(data['beta2s'])} β2); a run that leaves "
            f"|x|, |y| < {DIVERGED:g} is marked diverged. Adam's m and v are read from "
            "fastadam.Adam's state (exp_avg, exp_avg_sq) after every step.")
    script = SCRIPT % dict(index=json.dumps(TRACE_INDEX), **DEFAULTS)
    blob = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return (f"<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
            f"<title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            f"<h1>{title}</h1>\n<p class='note'>{note}</p>\n{CONTROLS}\n{div}\n"
            f"<script type='application/json' id='race-data'>{blob}</script>\n"
            f"<script>{script}</script>\n</body>\n</html>\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(HERE, "figures", "optimizer_race.html"),
                        help="the HTML file to write (default: "
                             "examples/figures/optimizer_race.html)")
    args = parser.parse_args(argv)
    data = compute()
    html = page(data)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(html)
    print(f"{len(data['races'])} races computed with fastadam {fastadam.__version__} "
          f"(SIMD path {fastadam.get_simd_path()!r}); wrote {args.out} "
          f"({os.path.getsize(args.out) / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
