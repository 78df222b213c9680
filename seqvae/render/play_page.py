"""The page of ``seqvae play`` (:func:`play_page`): the true simulator beside the model's
prediction, driven by the arrow keys or on-screen buttons. One self-contained HTML document,
its CSS and JavaScript inline: it fetches nothing but the endpoints of the server that
serves it (``/state``, ``/step``, ``/dream``, ``/reset``; see :mod:`seqvae.cli.play`).

Holding a key (or a button) keeps stepping: the page sends one step, shows its answer, and
sends the next while the key is down, so the rate is the server's. Keys: arrows move the
gripper (two at once: diagonally), space holds it still for a step, ``d`` toggles dreaming,
``n`` starts a new episode.
"""
from __future__ import annotations

import html

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>seqvae play: __TITLE__</title>
<style>
body{font-family:system-ui,sans-serif;margin:1em auto;max-width:1100px;padding:0 1em;color:#222}
h1{font-size:1.4em;margin:.2em 0}
.views{display:flex;gap:1.5em;flex-wrap:wrap;align-items:flex-start}
.view{text-align:center}
.view img{width:320px;height:320px;image-rendering:pixelated;border:4px solid #888;display:block;background:#eee}
.view.model img{border-color:#1f77b4}.view.model.dreaming img{border-color:#c0392b}
.view .label{font-weight:600;margin:.3em 0}
.panel{min-width:300px;flex:1}
.pad{display:grid;grid-template-columns:repeat(3,56px);grid-template-rows:repeat(3,56px);gap:4px;margin:.5em 0}
.pad button{font-size:1.4em}
button{cursor:pointer;border:1px solid #888;border-radius:6px;background:#f6f6f6;padding:.3em .6em}
button:active,button.down{background:#dde}
#dream.on{background:#c0392b;color:#fff}
table{border-collapse:collapse;margin:.4em 0}td,th{border:1px solid #ddd;padding:.15em .5em;text-align:right}
.swatch{display:inline-block;width:.9em;height:.9em;border-radius:50%;vertical-align:middle;border:1px solid #555}
#spark{border:1px solid #ccc;background:#fff}
p.what{color:#444;max-width:70em;line-height:1.4}
.mode{font-weight:600}.mode.dreaming{color:#c0392b}
kbd{border:1px solid #aaa;border-radius:3px;padding:0 .3em;background:#f4f4f4}
</style></head><body>
<h1>seqvae play: __TITLE__</h1>
<p class="what">Drive the gripper with the arrow keys (or the buttons); hold a key to keep moving. Left: the true
simulator. Right: what the model (<b>__MODEL__</b>) predicts for the same action — one frame per step, its recurrent
state kept. While it <b>follows</b>, it sees each true frame before predicting the next; in a <b>dream</b>
(<kbd>d</kbd>) it rolls forward on its own predictions from the current frame while the simulator goes on, and the
object error shows how far the two drift apart. The error is the distance between each object's true position and
where a colour tracker finds it in the predicted frame (units beside the figure); the tracker's own error on the true
frame is its floor.</p>
<div class="views">
 <div class="view"><div class="label">true simulator</div><img id="truth" alt="true simulator frame"></div>
 <div class="view model" id="modelview"><div class="label">model: <span id="modelmode">follows the truth</span></div>
  <img id="predicted" alt="predicted frame"></div>
 <div class="panel">
  <div class="pad">
   <span></span><button data-dir="up" title="up (ArrowUp)">&#8593;</button><span></span>
   <button data-dir="left" title="left (ArrowLeft)">&#8592;</button>
   <button data-dir="still" title="hold still (space)">&#183;</button>
   <button data-dir="right" title="right (ArrowRight)">&#8594;</button>
   <span></span><button data-dir="down" title="down (ArrowDown)">&#8595;</button><span></span>
  </div>
  <p><button id="dream" title="d">dream</button> <button id="newep" title="n">new episode</button></p>
  <p>step <b id="step">0</b> &middot; <span class="mode" id="mode">following</span>
   <span id="dreamsteps"></span></p>
  <p>object error: <b id="error">&ndash;</b> <span id="units"></span></p>
  <table id="objects"><tr><th>object</th><th>error</th><th>tracker floor</th></tr></table>
  <canvas id="spark" width="300" height="70" title="object error per step"></canvas>
  <p>model <b id="fps">&ndash;</b> predicted frames/s &middot; page <b id="rate">&ndash;</b> steps/s</p>
 </div>
</div>
<script>
"use strict";
const DIRS = {up: [0, -1], down: [0, 1], left: [-1, 0], right: [1, 0], still: [0, 0]};
const KEYS = {ArrowUp: "up", ArrowDown: "down", ArrowLeft: "left", ArrowRight: "right", " ": "still"};
const held = new Set();
const history = [];
let busy = false, frames = 0, rateStart = performance.now(), modelSeconds = [], pending = false;

function show(s) {
  document.getElementById("truth").src = s.truth;
  document.getElementById("predicted").src = s.predicted;
  document.getElementById("step").textContent = s.step;
  const mode = document.getElementById("mode");
  mode.textContent = s.dreaming ? "dreaming" : "following";
  mode.className = "mode" + (s.dreaming ? " dreaming" : "");
  document.getElementById("modelmode").textContent = s.dreaming ? "dreams (its own frames)" : "follows the truth";
  document.getElementById("modelview").className = "view model" + (s.dreaming ? " dreaming" : "");
  document.getElementById("dream").className = s.dreaming ? "on" : "";
  document.getElementById("dream").textContent = s.dreaming ? "wake up" : "dream";
  document.getElementById("dreamsteps").textContent = s.dreaming ? "(" + s.dream_steps + " steps on its own)" : "";
  const c = s.check || {};
  document.getElementById("error").textContent = (c.error === undefined) ? "\\u2013" : c.error.toFixed(3);
  document.getElementById("units").textContent = c.units ? "(" + c.units + ")" : "";
  const table = document.getElementById("objects");
  while (table.rows.length > 1) table.deleteRow(1);
  for (const o of (c.objects || [])) {
    const row = table.insertRow();
    row.insertCell().innerHTML = '<span class="swatch" style="background:' + o.color + '"></span>';
    row.insertCell().textContent = o.error.toFixed(3);
    row.insertCell().textContent = o.tracker_floor.toFixed(3);
  }
  if (c.error !== undefined) { history.push([c.error, s.dreaming]); if (history.length > 150) history.shift(); }
  spark();
  if (s.model_seconds > 0) { modelSeconds.push(s.model_seconds); if (modelSeconds.length > 30) modelSeconds.shift(); }
  if (modelSeconds.length) {
    const mean = modelSeconds.reduce((a, b) => a + b, 0) / modelSeconds.length;
    document.getElementById("fps").textContent = (1 / mean).toFixed(1);
  }
  document.body.dataset.step = s.step;
}

function spark() {
  const cv = document.getElementById("spark"), g = cv.getContext("2d");
  g.clearRect(0, 0, cv.width, cv.height);
  const top = Math.max(0.2, ...history.map(h => h[0]));
  g.fillStyle = "#888"; g.font = "10px sans-serif"; g.fillText("object error (max " + top.toFixed(2) + ")", 4, 10);
  history.forEach((h, i) => {
    const x = i * cv.width / 150, y = cv.height - 2 - (h[0] / top) * (cv.height - 14);
    g.fillStyle = h[1] ? "#c0392b" : "#1f77b4"; g.fillRect(x, y, 2, cv.height - 2 - y);
  });
}

async function post(path, body) {
  const r = await fetch(path, {method: "POST", headers: {"Content-Type": "application/json"},
                               body: JSON.stringify(body || {})});
  const s = await r.json();
  if (!r.ok) throw new Error(s.error || r.statusText);
  return s;
}

function action() {
  let x = 0, y = 0;
  for (const d of held) { x += DIRS[d][0]; y += DIRS[d][1]; }
  const n = Math.hypot(x, y);
  return n > 0 ? [x / n, y / n] : [0, 0];
}

async function pump() {
  if (busy) return;
  busy = true;
  try {
    while (held.size || pending) {
      pending = false;
      show(await post("/step", {action: action()}));
      frames += 1;
      const now = performance.now();
      if (now - rateStart > 1000) {
        document.getElementById("rate").textContent = (frames * 1000 / (now - rateStart)).toFixed(1);
        frames = 0; rateStart = now;
      }
    }
  } finally { busy = false; }
}

function press(dir) { held.add(dir); pending = true; pump(); }
function release(dir) { held.delete(dir); }

document.addEventListener("keydown", e => {
  const dir = KEYS[e.key];
  if (dir) { e.preventDefault(); if (!held.has(dir)) press(dir); else pending = true; return; }
  if (e.key === "d" || e.key === "D") { e.preventDefault(); toggleDream(); }
  if (e.key === "n" || e.key === "N") { e.preventDefault(); newEpisode(); }
});
document.addEventListener("keyup", e => { const dir = KEYS[e.key]; if (dir) { e.preventDefault(); release(dir); } });
window.addEventListener("blur", () => held.clear());
for (const b of document.querySelectorAll(".pad button")) {
  const dir = b.dataset.dir;
  b.addEventListener("pointerdown", e => { e.preventDefault(); b.classList.add("down"); press(dir); });
  for (const ev of ["pointerup", "pointerleave", "pointercancel"])
    b.addEventListener(ev, () => { b.classList.remove("down"); release(dir); });
}
async function toggleDream() {
  while (busy) await new Promise(r => setTimeout(r, 10));
  const dreaming = document.getElementById("mode").textContent === "dreaming";
  show(await post("/dream", {on: !dreaming}));
}
async function newEpisode() {
  while (busy) await new Promise(r => setTimeout(r, 10));
  history.length = 0;
  show(await post("/reset", {}));
}
document.getElementById("dream").addEventListener("click", toggleDream);
document.getElementById("newep").addEventListener("click", newEpisode);
fetch("/state").then(r => r.json()).then(show);
</script>
</body></html>
"""


def play_page(title: str, model: str) -> str:
    """The HTML of the play page for ``title`` (the world) and ``model`` (its name)."""
    return PAGE.replace("__TITLE__", html.escape(title)).replace("__MODEL__", html.escape(model))
