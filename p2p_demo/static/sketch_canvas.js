// The sketch canvas (p2p_demo/canvas.py): black pen on white paper, 256 x 256 pixels.
// Runs as gr.HTML's js_on_load with `element`, `props` and `watch` in scope. On every finished
// stroke (and undo, redo, clear) it sets props.value to the drawing as a PNG data URL, or "" when
// the paper is blank; Gradio sends that string with the change event: no uploads, no round trips.
// A drawing made of strokes only also carries them as vectors (a "p2p-strokes" text chunk in the
// PNG), so the server frames and redraws exactly what the browser renderer does.
// A value set by the server (an example) is painted onto the paper and becomes the undo point.
// When the browser renders (static/p2p_browser.js, loaded from the app's /p2p/js/), strokes stay
// here: nothing is sent to the server until it has to render (another model, an example, an error).
const SIZE = 256, BRUSH = 3, ERASER = 12, HISTORY = 40;
const canvas = element.querySelector('canvas');
const ctx = canvas.getContext('2d', { willReadFrequently: true });
let tool = 'brush', last = null, pointer = null, sent = null;
let strokes = [], raster = false, current = null;  // the drawing as vectors; raster: started from a picture
const undo = [], redo = [];
const listeners = [];  // the browser renderer: (event) => void, event 'move' | 'change'

const blank = () => { ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, SIZE, SIZE); };
const snapshot = () => ({ img: ctx.getImageData(0, 0, SIZE, SIZE), strokes: strokes.slice(), raster });
const restore = (s) => { ctx.putImageData(s.img, 0, 0); strokes = s.strokes; raster = s.raster; };
const isBlank = () => {
  const d = ctx.getImageData(0, 0, SIZE, SIZE).data;
  for (let i = 0; i < d.length; i += 4) if (d[i] < 250 || d[i + 1] < 250 || d[i + 2] < 250) return false;
  return true;
};
const record = () => (raster ? null : { v: 1, size: SIZE, strokes });

// A PNG text chunk (keyword NUL text) inserted after IHDR: the PNG stays a PNG of the same picture.
const CRC = new Uint32Array(256).map((_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
const crc32 = (bytes) => {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
};
const withText = (dataUrl, key, text) => {
  const png = Uint8Array.from(atob(dataUrl.slice(dataUrl.indexOf(',') + 1)), (ch) => ch.charCodeAt(0));
  const body = new TextEncoder().encode(`tEXt${key}\0${text}`);  // JSON of numbers: ASCII, so Latin-1
  const chunk = new Uint8Array(body.length + 8), view = new DataView(chunk.buffer);
  view.setUint32(0, body.length - 4);
  chunk.set(body, 4);
  view.setUint32(body.length + 4, crc32(body));
  const at = 8 + 25;  // the signature, then IHDR (13 bytes of data + length, type, CRC)
  const out = new Uint8Array(png.length + chunk.length);
  out.set(png.subarray(0, at)); out.set(chunk, at); out.set(png.subarray(at), at + chunk.length);
  let bin = '';
  for (let i = 0; i < out.length; i += 0x8000) bin += String.fromCharCode.apply(null, out.subarray(i, i + 0x8000));
  return 'data:image/png;base64,' + btoa(bin);
};
const value = () => {
  if (isBlank()) return '';
  const url = canvas.toDataURL('image/png'), rec = record();
  return rec ? withText(url, 'p2p-strokes', JSON.stringify(rec)) : url;
};

const api = {  // for the browser renderer
  record, isBlank, raster: () => raster,
  local: false,  // true while the browser renders: strokes are not sent
  on: (fn) => listeners.push(fn),
  sendToServer: () => { sent = value(); props.value = sent; },
  forget: () => { sent = ''; props.value = ''; },  // the server need not keep a drawing it will not render
};
const changed = () => {
  if (!api.local) { sent = value(); props.value = sent; }
  listeners.forEach((fn) => fn('change'));
};
const remember = () => { undo.push(snapshot()); if (undo.length > HISTORY) undo.shift(); redo.length = 0; };
const at = (e) => {
  const r = canvas.getBoundingClientRect();
  // Two decimals: the vectors the server gets are exactly the ones drawn here.
  const round = (v) => Math.round(v * 100) / 100;
  return [round((e.clientX - r.left) * SIZE / r.width), round((e.clientY - r.top) * SIZE / r.height)];
};
const line = (a, b) => {
  ctx.lineCap = 'round'; ctx.lineJoin = 'round';
  ctx.strokeStyle = tool === 'brush' ? '#000' : '#fff';
  ctx.lineWidth = tool === 'brush' ? BRUSH : ERASER;
  ctx.beginPath(); ctx.moveTo(a[0], a[1]); ctx.lineTo(b[0], b[1]); ctx.stroke();
};
const setTool = (name) => {
  tool = name;
  element.querySelectorAll('[data-tool]').forEach((b) => {
    b.classList.toggle('p2p-on', b.dataset.tool === name);
    b.setAttribute('aria-pressed', String(b.dataset.tool === name));
  });
};
const act = (name) => {
  if (name === 'undo' && undo.length) { redo.push(snapshot()); restore(undo.pop()); changed(); }
  else if (name === 'redo' && redo.length) { undo.push(snapshot()); restore(redo.pop()); changed(); }
  else if (name === 'clear' && !isBlank()) { remember(); blank(); strokes = []; raster = false; changed(); }
};
const paint = (url) => {  // a value from the server: an example, or "" to clear
  if (url === sent) return;
  sent = url;
  if (!url) { remember(); blank(); strokes = []; raster = false; listeners.forEach((fn) => fn('change')); return; }
  const img = new Image();
  img.onload = () => {
    remember(); blank(); ctx.drawImage(img, 0, 0, SIZE, SIZE); strokes = []; raster = true;
    listeners.forEach((fn) => fn('change'));
  };
  img.src = url;
};

blank();
if (props.value) paint(props.value);
watch('value', () => paint(props.value));

canvas.addEventListener('pointerdown', (e) => {
  if (pointer !== null || e.button > 0) return;
  pointer = e.pointerId; e.preventDefault();
  try { canvas.setPointerCapture(pointer); } catch (err) { /* a pointer already gone: draw without capture */ }
  remember(); last = at(e); line(last, last);
  current = { t: tool === 'brush' ? 'b' : 'e', w: tool === 'brush' ? BRUSH : ERASER, p: [last[0], last[1]] };
  strokes = [...strokes, current];
  listeners.forEach((fn) => fn('move'));
});
canvas.addEventListener('pointermove', (e) => {
  if (e.pointerId !== pointer) return;
  const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [e];
  for (const ev of events.length ? events : [e]) {
    const p = at(ev);
    if (p[0] === last[0] && p[1] === last[1]) continue;
    line(last, p); last = p; current.p.push(p[0], p[1]);
  }
  listeners.forEach((fn) => fn('move'));
});
const finish = (e) => { if (e.pointerId !== pointer) return; pointer = null; current = null; changed(); };
canvas.addEventListener('pointerup', finish);
canvas.addEventListener('pointercancel', finish);
element.querySelectorAll('[data-tool]').forEach((b) => b.addEventListener('click', () => setTool(b.dataset.tool)));
element.querySelectorAll('[data-act]').forEach((b) => b.addEventListener('click', () => act(b.dataset.act)));
canvas.addEventListener('keydown', (e) => {
  const mod = e.ctrlKey || e.metaKey, key = e.key.toLowerCase();
  if (mod && key === 'z') { act(e.shiftKey ? 'redo' : 'undo'); e.preventDefault(); }
  else if (mod && key === 'y') { act('redo'); e.preventDefault(); }
  else if (!mod && key === 'b') setTool('brush');
  else if (!mod && key === 'e') setTool('eraser');
});

// The browser renderer, served by the app itself (p2p_demo/web.py); without it, the server renders.
const root = (window.gradio_config && window.gradio_config.root) || window.location.href;
import(new URL('p2p/js/p2p_browser.js', root.endsWith('/') ? root : root + '/').href)
  .then((m) => m.attach(api))
  .catch((err) => console.warn('p2p: rendering in the browser is off:', err));
