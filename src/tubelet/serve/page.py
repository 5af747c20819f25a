"""The page `tubelet serve` answers at ``/``: one self-contained HTML file (inline CSS and
JavaScript, nothing fetched from elsewhere, so it works without internet).

A person drops or picks a video; it plays in a ``<video>`` element from an object URL (it never
leaves the browser but for the upload), its top labels are drawn as bars per head, and with
"attention map" ticked the frames the model saw are shown in a strip with the map over each
(decoded from the response's ``explain`` field, see :mod:`.encoding`). A captioner's answer,
``caption``, is shown instead of the bars. Element ids (``file``, ``result`` with ``data-state``,
``top``, ``attention``, ``caption``, ``error``) are what the browser test reads.
"""

PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tubelet</title>
<style>
  :root { --accent: #2563eb; --muted: #6b7280; --line: #e5e7eb; }
  * { box-sizing: border-box; }
  body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #111827;
         background: #f9fafb; }
  header { padding: 14px 24px; background: #111827; color: #f9fafb; display: flex; gap: 16px;
           align-items: baseline; }
  header h1 { font-size: 18px; margin: 0; }
  header span { color: #9ca3af; font-size: 13px; }
  main { display: grid; grid-template-columns: minmax(280px, 1fr) minmax(280px, 1fr); gap: 24px;
         padding: 20px 24px; max-width: 1100px; }
  #drop { border: 2px dashed #9ca3af; border-radius: 10px; padding: 18px; text-align: center;
          background: #fff; cursor: pointer; }
  #drop.over { border-color: var(--accent); background: #eff6ff; }
  #drop p { margin: 4px 0; color: var(--muted); }
  video { width: 100%; max-height: 300px; background: #000; border-radius: 8px; margin-top: 12px; }
  .options { margin-top: 8px; color: var(--muted); font-size: 14px; }
  #status { color: var(--muted); min-height: 1.4em; }
  #error { color: #b91c1c; white-space: pre-wrap; }
  #caption { font-size: 17px; font-style: italic; margin: 0 0 10px; }
  .head h3 { margin: 12px 0 4px; font-size: 14px; text-transform: uppercase; color: var(--muted); }
  .row { display: grid; grid-template-columns: 13em 1fr 4em; gap: 8px; align-items: center; margin: 5px 0; }
  .row .label { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  .row:first-child .label { font-weight: 600; }
  .bar { background: var(--line); border-radius: 4px; height: 14px; overflow: hidden; }
  .bar span { display: block; height: 100%; background: var(--accent); }
  .score { text-align: right; font-variant-numeric: tabular-nums; color: var(--muted); }
  #attention { display: flex; flex-wrap: wrap; gap: 4px; margin-top: 8px; }
  #attention canvas { height: 56px; border-radius: 3px; }
  h2 { font-size: 15px; margin: 18px 0 4px; }
  .hidden { display: none; }
</style>
</head>
<body>
<header><h1>tubelet</h1><span id="model">loading the model&hellip;</span></header>
<main>
  <section>
    <div id="drop" tabindex="0">
      <strong>Drop a video here</strong>
      <p>or <label><u>choose a file</u><input id="file" type="file" accept="video/*" class="hidden"></label></p>
    </div>
    <div class="options"><label><input id="explain" type="checkbox"> attention map</label></div>
    <video id="player" controls muted loop playsinline class="hidden"></video>
  </section>
  <section id="result" data-state="idle">
    <div id="status">Pick a video to classify it.</div>
    <div id="error"></div>
    <p id="caption" class="hidden"></p>
    <div id="top"></div>
    <div id="map-section" class="hidden">
      <h2>Attention map</h2>
      <div id="map-note" class="score" style="text-align:left"></div>
      <div id="attention"></div>
    </div>
  </section>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let objectUrl = null;

fetch("v1/model").then((r) => r.json()).then((m) => {
  const what = m.caption ? "captioner" : m.heads.map((h) => h.classes.length).join(" + ") + " classes";
  $("model").textContent = `${m.name} (${m.architecture}, ${what}, ${m.preprocessing.frames} frames of ` +
    `${m.preprocessing.size.join("x")})`;
  const box = $("explain");
  box.disabled = !m.explain;
  box.checked = m.explain;
  if (!m.explain) box.parentElement.title = "this server's tubelet has no attention maps";
}).catch(() => { $("model").textContent = "the model's description could not be read"; });

function setState(state, text) {
  $("result").dataset.state = state;
  $("status").textContent = text;
}

function bars(top) {
  // one head: [{label, score}, ...]; several: {head: [...], ..., action: [...]}
  const heads = Array.isArray(top) ? [[null, top]] : Object.entries(top);
  const out = $("top");
  out.replaceChildren();
  for (const [name, entries] of heads) {
    const head = document.createElement("div");
    head.className = "head";
    if (name) { const h = document.createElement("h3"); h.textContent = name; head.append(h); }
    const rows = document.createElement("div");
    for (const t of entries) {
      const row = document.createElement("div");
      row.className = "row";
      const label = document.createElement("div");
      label.className = "label";
      label.textContent = label.title = t.label;
      const bar = document.createElement("div");
      bar.className = "bar";
      const fill = document.createElement("span");
      fill.style.width = `${(100 * t.score).toFixed(1)}%`;
      bar.append(fill);
      const score = document.createElement("div");
      score.className = "score";
      score.textContent = `${(100 * t.score).toFixed(1)}%`;
      row.append(label, bar, score);
      rows.append(row);
    }
    head.append(rows);
    out.append(head);
  }
}

function heatColour(v) {  // 0..1 (the video's least to most attended cell) -> clear .. red .. yellow
  const r = Math.min(255, 510 * v), g = Math.max(0, Math.min(255, 510 * (v - 0.5))), b = Math.max(0, 255 * (0.5 - v));
  return [r, g, b, Math.round(190 * v)];
}

function drawMap(explain) {
  const [T, h, w] = explain.map.shape;
  const bytes = Uint8Array.from(atob(explain.map.data), (c) => c.charCodeAt(0));
  const lo = bytes.reduce((a, b) => Math.min(a, b), 255), hi = bytes.reduce((a, b) => Math.max(a, b), 0);
  const strip = $("attention");
  strip.replaceChildren();
  $("map-note").textContent = `${T} frames the model saw (${explain.width}x${explain.height}), the map's ` +
    `${w}x${h} cells over each; share of each frame: ` +
    explain.frame_mass.map((m) => (100 * m).toFixed(0) + "%").join(" ");
  explain.images.forEach((src, t) => {
    const canvas = document.createElement("canvas");
    canvas.className = "map-frame";
    canvas.dataset.frame = t;
    strip.append(canvas);
    const img = new Image();
    img.onload = () => {
      const scale = Math.max(1, Math.round(96 / img.height));
      canvas.width = img.width * scale;
      canvas.height = img.height * scale;
      const ctx = canvas.getContext("2d");
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
      const cells = document.createElement("canvas");
      cells.width = w; cells.height = h;
      const data = cells.getContext("2d").createImageData(w, h);
      for (let i = 0; i < h * w; i++) {
        data.data.set(heatColour((bytes[t * h * w + i] - lo) / Math.max(1, hi - lo)), 4 * i);
      }
      cells.getContext("2d").putImageData(data, 0, 0);
      ctx.imageSmoothingEnabled = true;
      ctx.drawImage(cells, 0, 0, canvas.width, canvas.height);
    };
    img.src = src;
  });
  $("map-section").classList.remove("hidden");
}

async function classify(file) {
  if (objectUrl) URL.revokeObjectURL(objectUrl);
  objectUrl = URL.createObjectURL(file);
  const player = $("player");
  player.src = objectUrl;
  player.classList.remove("hidden");
  player.play().catch(() => {});
  $("error").textContent = "";
  $("top").replaceChildren();
  $("map-section").classList.add("hidden");
  $("caption").classList.add("hidden");
  setState("busy", `classifying ${file.name}…`);
  const form = new FormData();
  form.append("video", file, file.name);
  const explain = $("explain").checked;
  if (explain) form.append("explain", "1");
  try {
    const response = await fetch("v1/classify", { method: "POST", body: form });
    const body = await response.json();
    if (!response.ok) throw new Error(`${response.status}: ${body.error}`);
    if (body.caption) { $("caption").textContent = body.caption; $("caption").classList.remove("hidden"); }
    if (body.top) bars(body.top);
    if (body.explain) drawMap(body.explain);
    setState("done", `${file.name}: ${body.model} in ${body.seconds.toFixed(2)} s`);
  } catch (e) {
    $("error").textContent = e.message;
    setState("error", `${file.name} was not classified`);
  }
}

$("file").addEventListener("change", (e) => { if (e.target.files.length) classify(e.target.files[0]); });
const drop = $("drop");
drop.addEventListener("click", (e) => { if (e.target === drop) $("file").click(); });
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files.length) classify(e.dataTransfer.files[0]);
});
</script>
</body>
</html>
"""
