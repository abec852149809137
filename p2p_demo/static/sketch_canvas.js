// The sketch canvas (p2p_demo/canvas.py): black pen on white paper, 256 x 256 pixels.
// Runs as gr.HTML's js_on_load with `element`, `props` and `watch` in scope. On every finished
// stroke (and undo, redo, clear) it sets props.value to the drawing as a PNG data URL, or "" when
// the paper is blank; Gradio sends that string with the change event: no uploads, no round trips.
// A value set by the server (an example) is painted onto the paper and becomes the undo point.
const SIZE = 256, BRUSH = 3, ERASER = 12, HISTORY = 40;
const canvas = element.querySelector('canvas');
const ctx = canvas.getContext('2d', { willReadFrequently: true });
let tool = 'brush', last = null, pointer = null, sent = null;
const undo = [], redo = [];

const blank = () => { ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, SIZE, SIZE); };
const snapshot = () => ctx.getImageData(0, 0, SIZE, SIZE);
const isBlank = () => {
  const d = snapshot().data;
  for (let i = 0; i < d.length; i += 4) if (d[i] < 250 || d[i + 1] < 250 || d[i + 2] < 250) return false;
  return true;
};
const send = () => { sent = isBlank() ? '' : canvas.toDataURL('image/png'); props.value = sent; };
const remember = () => { undo.push(snapshot()); if (undo.length > HISTORY) undo.shift(); redo.length = 0; };
const at = (e) => {
  const r = canvas.getBoundingClientRect();
  return [(e.clientX - r.left) * SIZE / r.width, (e.clientY - r.top) * SIZE / r.height];
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
  if (name === 'undo' && undo.length) { redo.push(snapshot()); ctx.putImageData(undo.pop(), 0, 0); send(); }
  else if (name === 'redo' && redo.length) { undo.push(snapshot()); ctx.putImageData(redo.pop(), 0, 0); send(); }
  else if (name === 'clear' && !isBlank()) { remember(); blank(); send(); }
};
const paint = (url) => {  // a value from the server: an example, or "" to clear
  if (url === sent) return;
  sent = url;
  if (!url) { remember(); blank(); return; }
  const img = new Image();
  img.onload = () => { remember(); blank(); ctx.drawImage(img, 0, 0, SIZE, SIZE); };
  img.src = url;
};

blank();
if (props.value) paint(props.value);
watch('value', () => paint(props.value));

canvas.addEventListener('pointerdown', (e) => {
  if (pointer !== null || e.button > 0) return;
  pointer = e.pointerId; canvas.setPointerCapture(pointer); e.preventDefault();
  remember(); last = at(e); line(last, last);
});
canvas.addEventListener('pointermove', (e) => {
  if (e.pointerId !== pointer) return;
  const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [e];
  for (const ev of events.length ? events : [e]) { const p = at(ev); line(last, p); last = p; }
});
const finish = (e) => { if (e.pointerId !== pointer) return; pointer = null; send(); };
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
