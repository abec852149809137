// Rendering in the visitor's browser: ONNX Runtime Web runs the model's ONNX file (both served by
// the app, p2p_demo/web.py) on the canvas' strokes, with the server's framing (p2p_strokes.js) and
// dropout masks (p2p_masks.js), so a seed gives the server's picture. While the pen moves, the
// newest drawing is rendered whenever the previous frame is done (frames never queue); at pen-up
// and when an option changes, all samples. Anything the browser cannot do goes to the server.
// URL options: ?render=server (always the server), ?threads=N, ?ep=wasm|webgpu, ?proxy=1 (run in a worker).
import { sampleSeed, scaledInto } from './p2p_masks.js';
import { edgeMap } from './p2p_strokes.js';

const ROOT = new URL('../../', import.meta.url);  // this file is <root>/p2p/js/p2p_browser.js
const url = (path) => new URL(path, ROOT).href;
const query = new URLSearchParams(window.location.search);
const POLL_MS = 200;
const LISTING_FETCHING_MS = 2000, LISTING_MS = 30000;  // how often to ask whether the runtime is ready

const $ = (sel) => document.querySelector(sel);
const state = {
  mode: 'starting', why: '', ep: null, threads: 1, listing: null, sessions: new Map(),
  frames: [],  // {kind, samples, ms (model), t0, t1} of every frame, for tests and the benchmark
  last: null,  // {output: ImageData, edges: Uint8Array, samples: [ImageData], key}
  error: null,
};
window.p2pBrowser = state;
state.idle = () => !busy && !pending;

let ort = null;
async function runtime() {
  if (ort) return ort;
  const base = url(state.listing.runtime.base);
  let webgpu = false;
  if (query.get('ep') !== 'wasm' && navigator.gpu) {
    try { webgpu = !!(await navigator.gpu.requestAdapter()); } catch (e) { webgpu = false; }
  }
  if (query.get('ep') === 'webgpu' && !webgpu) throw new Error('WebGPU is not available in this browser');
  ort = await import(base + (webgpu ? 'ort.webgpu.min.mjs' : 'ort.wasm.min.mjs'));
  state.ep = webgpu ? 'webgpu' : 'wasm';
  const cores = navigator.hardwareConcurrency || 1;
  // Threads need SharedArrayBuffer, which needs a cross-origin isolated page (COOP/COEP headers).
  // On an idle 2-core machine two WASM threads beat one (31 against 43 ms a frame, 23.8 against 19.1 frames/s,
  // the page still taking every pointer move; python -m bench.browser); one thread won only while another
  // job kept both cores busy. Capped at 4: more threads were never measured.
  state.threads = Number(query.get('threads')) || (window.crossOriginIsolated ? Math.min(4, cores) : 1);
  ort.env.wasm.wasmPaths = base;
  ort.env.wasm.numThreads = state.threads;
  ort.env.wasm.proxy = query.get('proxy') === '1';  // the model in a worker: the page never waits for it
  return ort;
}

async function session(id) {
  if (state.sessions.has(id)) return state.sessions.get(id);
  const promise = (async () => {
    const res = await fetch(url(`p2p/model/${id}.json`));
    const manifest = await res.json();
    if (!res.ok) throw Object.assign(new Error(manifest.error || `HTTP ${res.status}`), { server: true });
    const rt = await runtime();
    const bytes = new Uint8Array(await (await fetch(url(manifest.onnx))).arrayBuffer());
    const providers = state.ep === 'webgpu' ? ['webgpu', 'wasm'] : ['wasm'];
    const s = await rt.InferenceSession.create(bytes, { executionProviders: providers, graphOptimizationLevel: 'all' });
    return { manifest, session: s };
  })();
  state.sessions.set(id, promise);
  promise.catch(() => state.sessions.delete(id));
  return promise;
}

// ------------------------------------------------------------------ the controls, read from the page
function options() {
  const label = $('#model input') ? $('#model input').value : '';
  const model = (state.listing.models.find((m) => m.label === label) || {}).id;
  const num = (sel, dflt) => { const el = $(sel); const v = el ? Number(el.value) : NaN; return Number.isFinite(v) ? v : dflt; };
  const n = Math.min(8, Math.max(1, Math.round(num('#samples input[type=number]', 3))));
  const seed = Math.max(0, Math.round(num('#seed input', 0))) >>> 0;
  const det = $('#deterministic input[type=checkbox]');
  return { model, n, seed, deterministic: !!(det && det.checked) };
}

// ------------------------------------------------------------------ the model run
function inputTensor(rt, edges, manifest) {
  const size = manifest.style.size, m = manifest.multiple, side = Math.ceil(size / m) * m, c = manifest.in_channels;
  const x = new Float32Array(c * side * side);
  for (let j = 0; j < side; j++) {
    const sj = Math.min(j, size - 1);  // replicate padding, as image.pad_to_multiple
    for (let i = 0; i < side; i++) {
      const v = edges[sj * size + Math.min(i, size - 1)] / 127.5 - 1.0;
      for (let k = 0; k < c; k++) x[(k * side + j) * side + i] = v;
    }
  }
  return { x: new rt.Tensor('float32', x, [1, c, side, side]), side };
}

function maskTensors(rt, manifest, side, ks, seed, sampled) {
  const plan = manifest.plan, feeds = {};
  plan.inputs.forEach((name, i) => {
    const [sh, sw] = plan.strides[i], c = plan.channels[i], h = side / sh, w = side / sw, per = c * h * w;
    const run = plan.channel[i] ? h * w : 1, data = new Float32Array(ks.length * per);
    if (!sampled) data.fill(1);
    else ks.forEach((k, b) => scaledInto(data.subarray(b * per, (b + 1) * per), sampleSeed(seed, k), plan.layers[i],
                                         plan.probs[i], run));
    feeds[name] = new rt.Tensor('float32', data, [ks.length, c, h, w]);
  });
  return feeds;
}

function toImages(y, size) {  // (B, C, side, side) in [-1, 1] -> ImageData per sample, cropped to size
  const [b, c, side] = y.dims, data = y.data, out = [];
  for (let s = 0; s < b; s++) {
    const img = new ImageData(size, size);
    for (let j = 0; j < size; j++) for (let i = 0; i < size; i++) {
      const o = (j * size + i) * 4;
      for (let k = 0; k < 3; k++) {
        const v = data[((s * c + (c === 1 ? 0 : k)) * side + j) * side + i];
        img.data[o + k] = Math.round((Math.min(1, Math.max(-1, v)) + 1) * 127.5);
      }
      img.data[o + 3] = 255;
    }
    out.push(img);
  }
  return out;
}

async function run(entry, edges, ks, seed, sampled) {
  const rt = await runtime(), { manifest, session: s } = entry;
  const { x, side } = inputTensor(rt, edges, manifest);
  const batch = ks.length;
  const feeds = { x: batch === 1 ? x : new rt.Tensor('float32', repeat(x.data, batch), [batch, ...x.dims.slice(1)]),
                  ...maskTensors(rt, manifest, side, ks, seed, sampled) };
  const t0 = performance.now();
  const result = await s.run(feeds);
  const ms = performance.now() - t0;
  return { images: toImages(result.y, manifest.style.size), ms };
}

function repeat(data, times) {
  const out = new Float32Array(data.length * times);
  for (let i = 0; i < times; i++) out.set(data, i * data.length);
  return out;
}

// ------------------------------------------------------------------ what the visitor sees
function paintTo(el, img) {
  if (!el) return;
  el.width = img.width; el.height = img.height;
  el.getContext('2d').putImageData(img, 0, 0);
}
function edgesImage(edges, size) {
  const img = new ImageData(size, size), d = img.data;
  for (let i = 0, o = 0; i < edges.length; i++, o += 4) { d[o] = d[o + 1] = d[o + 2] = edges[i]; d[o + 3] = 255; }
  return img;
}
function setStatus(text) { const el = $('#p2p-status'); if (el) el.textContent = text; }
function showSamples(images) {
  const box = $('#p2p-samples');
  if (!box) return;
  while (box.children.length > images.length) box.lastChild.remove();
  while (box.children.length < images.length) box.appendChild(document.createElement('canvas'));
  images.forEach((img, i) => paintTo(box.children[i], img));
}
function clearOutputs(message) {
  const out = $('#p2p-output');
  if (out) out.getContext('2d').clearRect(0, 0, out.width, out.height);
  const ed = $('#p2p-edges');
  if (ed) ed.getContext('2d').clearRect(0, 0, ed.width, ed.height);
  showSamples([]);
  setStatus(message);
  state.last = null;
}
function where(ms) {
  const ep = state.ep === 'webgpu' ? 'WebGPU' : `WASM, ${state.threads} thread${state.threads > 1 ? 's' : ''}`;
  return `in your browser, ${ep}, ${Math.round(ms)} ms`;
}

// ------------------------------------------------------------------ frames: newest state, never queued
let busy = false, pending = null;  // pending: 'live' | 'final' | null
const rank = { live: 1, final: 2 };
function request(kind) {
  if (state.mode !== 'browser') return;
  if (busy) { if (!pending || rank[kind] > rank[pending]) pending = kind; return; }
  busy = true;
  frame(kind).catch(fail).finally(() => {
    busy = false;
    const next = pending; pending = null;
    if (next) request(next);
  });
}

let canvasApi = null, lastLive = null;  // lastLive: the drawing and picture of the last frame
async function frame(kind) {
  const opts = options(), entry = await session(opts.model), m = entry.manifest;
  const rec = canvasApi.record();
  if (!rec) { await switchMode(); return; }
  const t0 = performance.now();
  const edges = edgeMap(rec, m.style);
  if (!edges) { clearOutputs('✏️ Draw on the canvas: a picture appears as you draw.'); return; }
  const sampled = m.sampling && !opts.deterministic;
  // The drawing as of this frame: strokes only grow at the end (a new stroke, undo or clear makes a new
  // list), so the list, the last stroke's length and the options name it. At pen-up the last live frame
  // usually drew exactly this: its picture is sample 1, and only the other samples are left to run.
  const tail = rec.strokes.length ? rec.strokes[rec.strokes.length - 1].p.length : 0;
  const same = (f) => f && f.strokes === rec.strokes && f.tail === tail && f.opts === JSON.stringify(opts) && f.model === opts.model;
  const first = same(lastLive) ? { images: [lastLive.image], ms: lastLive.ms, reused: true }
    : await run(entry, edges.image, [0], opts.seed, sampled);
  lastLive = { strokes: rec.strokes, tail, opts: JSON.stringify(opts), model: opts.model, image: first.images[0], ms: first.ms };
  const size = m.style.size;
  paintTo($('#p2p-output'), first.images[0]);
  paintTo($('#p2p-edges'), edgesImage(edges.image, size));
  const tFirst = performance.now();  // the output is on screen
  let ms = first.ms, samples = [first.images[0]];
  const how = sampled ? `seed ${opts.seed}` : (opts.deterministic ? 'deterministic' : 'deterministic (this model is meant to run with dropout off)');
  if (kind === 'final' && opts.n > 1) {
    setStatus(`${m.name} · sample 1 of ${opts.n}, ${how} · ${where(ms)}`);
    if (sampled) {
      const rest = await run(entry, edges.image, Array.from({ length: opts.n - 1 }, (_, i) => i + 1), opts.seed, true);
      ms += rest.ms; samples = samples.concat(rest.images);
    } else samples = Array(opts.n).fill(first.images[0]);
  }
  if (kind === 'final') showSamples(samples);
  const count = kind === 'final' ? opts.n : 1;
  setStatus(`${m.name} · ${sampled ? `${count} sample${count > 1 ? 's' : ''}, ` : ''}${how} · ${where(ms)}`);
  state.last = { output: first.images[0], edges: edges.image, samples, key: JSON.stringify(opts), kind };
  state.frames.push({ kind, samples: samples.length, ms, first_ms: first.ms, reused: !!first.reused, t0, tFirst, t1: performance.now() });
  if (state.frames.length > 2000) state.frames.splice(0, 1000);
}

function fail(err) {
  console.warn('p2p: the browser could not render; the server renders instead:', err);
  state.error = String(err && err.message || err);
  state.why = err && err.server ? err.message : `the browser could not render (${state.error})`;
  const model = state.listing && options().model;
  if (model) state.failed = { ...(state.failed || {}), [model]: state.why };  // this model stays on the server
  setMode('server');
}

// ------------------------------------------------------------------ browser or server
function showBrowserViews(on) {  // Gradio scopes app CSS to "... .contain <rule>": mark what .contain holds
  document.querySelectorAll('.gradio-container .contain > *').forEach((el) => el.classList.toggle('p2p-browser', on));
  document.body.classList.toggle('p2p-browser', on);
}

function showNote() {
  const note = $('#sketch .p2p-note');
  if (note) note.textContent = state.mode === 'server' && state.why ? `Rendering on the server: ${state.why}.` : '';
}

function setMode(mode) {
  const before = state.mode;
  state.mode = mode;
  showNote();
  showBrowserViews(mode === 'browser');
  if (mode === 'browser') {
    if (state.readyAt === undefined) state.readyAt = performance.now();  // for tests and the benchmark
    canvasApi.local = true;
    if (before !== 'browser') canvasApi.forget();
  } else {
    canvasApi.local = false;
    if (before === 'browser' && mode === 'server') canvasApi.sendToServer();
  }
}

function wanted() {  // null when the browser can render now, else why not
  if (query.get('render') === 'server') return 'asked for with ?render=server';
  if (typeof WebAssembly !== 'object') return 'this browser has no WebAssembly';
  if (!state.listing.runtime.available) return state.listing.runtime.why;
  const opts = options(), model = state.listing.models.find((mm) => mm.id === opts.model);
  if (!model) return 'unknown model';
  if (!model.browser) return model.why;
  if (state.failed && state.failed[opts.model]) return state.failed[opts.model];
  if (canvasApi.raster()) return 'drawings started from an example render on the server';
  return null;
}

let lastKey = null;
async function switchMode() {
  const sketch = $('#sketch canvas');
  if (!sketch || sketch.offsetParent === null) {  // the photo tab: the server's, untouched
    showBrowserViews(false);
    state.mode = state.mode === 'browser' ? 'hidden' : state.mode;
    if (canvasApi) canvasApi.local = false;
    lastKey = null;
    return;
  }
  const why = wanted();
  if (why) {
    const changed = why !== state.why;
    state.why = why;
    if (state.mode !== 'server') setMode('server');
    else if (changed) showNote();
    return;
  }
  const opts = options();
  try {
    await session(opts.model);
  } catch (err) {
    fail(err.server ? err : new Error(`the model did not load (${err.message})`));
    return;
  }
  if (state.mode !== 'browser') { setMode('browser'); lastKey = null; }
  const key = JSON.stringify(opts);
  if (key !== lastKey) { lastKey = key; request('final'); }
}

export async function attach(api) {
  canvasApi = api;
  state.canvas = api;
  api.on((event) => {
    if (state.mode !== 'browser') { if (event === 'change') switchMode(); return; }
    if (canvasApi.raster()) { switchMode(); return; }
    request(event === 'move' ? 'live' : 'final');
  });
  try {
    state.listing = await listing();
  } catch (err) {
    state.mode = 'server'; state.why = 'the app serves no browser renderer';
    return;
  }
  let polling = false, listed = performance.now();
  setInterval(async () => {
    if (polling) return;
    polling = true;
    try {
      // While the server fetches the runtime (it does at start), ask again until it is ready: the page
      // then switches to the browser by itself, no reload.
      const rt = state.listing.runtime;
      if (!rt.available && performance.now() - listed > (rt.state === 'fetching' ? LISTING_FETCHING_MS : LISTING_MS)) {
        listed = performance.now();
        try { state.listing = await listing(); } catch (err) { /* the server is busy or gone: ask later */ }
      }
      await switchMode();
    } finally { polling = false; }
  }, POLL_MS);
}

async function listing() {
  const res = await fetch(url('p2p/models.json'), { cache: 'no-store' });
  if (!res.ok) throw new Error(`HTTP ${res.status}`);
  return res.json();
}
