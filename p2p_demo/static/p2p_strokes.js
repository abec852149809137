// Framing and redrawing a drawing's strokes: the twin of the "strokes (vectors)" section of
// p2p_demo/edges.py. Same float64 operations in the same order, so the same pixels
// (tests/test_strokes.py runs both and compares).
// record: {v: 1, size, strokes: [{t: 'b'|'e', w, p: [x0, y0, x1, y1, ...]}]} in canvas pixels.
// style: {size, stroke_width, margin} (the model's LineStyle).

export function strokesBox(record, margin) {
  let xLo = Infinity, yLo = Infinity, xHi = -Infinity, yHi = -Infinity;
  for (const s of record.strokes) {
    if (s.t !== 'b') continue;
    const r = s.w / 2, p = s.p;
    for (let i = 0; i < p.length; i += 2) {
      xLo = Math.min(xLo, p[i] - r); xHi = Math.max(xHi, p[i] + r);
      yLo = Math.min(yLo, p[i + 1] - r); yHi = Math.max(yHi, p[i + 1] + r);
    }
  }
  if (xLo === Infinity) return null;
  const side = Math.max(8.0, Math.max(xHi - xLo, yHi - yLo) / (1.0 - 2.0 * margin));
  const x0 = (xLo + xHi) / 2 - side / 2, y0 = (yLo + yHi) / 2 - side / 2;
  return [x0, y0, x0 + side, y0 + side];
}

function paintSegment(ink, n, ax, ay, bx, by, r, value) {
  const i0 = Math.max(0, Math.floor(Math.min(ax, bx) - r)), i1 = Math.min(n, Math.ceil(Math.max(ax, bx) + r) + 1);
  const j0 = Math.max(0, Math.floor(Math.min(ay, by) - r)), j1 = Math.min(n, Math.ceil(Math.max(ay, by) + r) + 1);
  const dx = bx - ax, dy = by - ay, length2 = dx * dx + dy * dy, r2 = r * r;
  for (let j = j0; j < j1; j++) {
    const py = j + 0.5;
    for (let i = i0; i < i1; i++) {
      const px = i + 0.5;
      let t = 0;
      if (length2 > 0) t = Math.min(Math.max(((px - ax) * dx + (py - ay) * dy) / length2, 0.0), 1.0);
      const ex = px - (ax + t * dx), ey = py - (ay + t * dy);
      if (ex * ex + ey * ey <= r2) ink[j * n + i] = value;
    }
  }
}

// The edge map the model sees: Uint8Array(size * size), 0 ink / 255 paper; null when nothing is drawn.
export function edgeMap(record, style) {
  const box = strokesBox(record, style.margin);
  if (box === null) return null;
  const [x0, y0, x1] = box, n = style.size, k = n / (x1 - x0);
  const ink = new Uint8Array(n * n);
  for (const s of record.strokes) {
    const brush = s.t === 'b', r = brush ? style.stroke_width / 2 : s.w / 2 * k, p = s.p;
    const pts = [];
    for (let i = 0; i < p.length; i += 2) pts.push([(p[i] - x0) * k, (p[i + 1] - y0) * k]);
    const segs = pts.length > 1 ? pts.length - 1 : 1;
    for (let i = 0; i < segs; i++) {
      const a = pts[i], b = pts.length > 1 ? pts[i + 1] : pts[i];
      paintSegment(ink, n, a[0], a[1], b[0], b[1], r, brush ? 1 : 0);
    }
  }
  const out = new Uint8Array(n * n);
  let any = false;
  for (let i = 0; i < out.length; i++) { out[i] = ink[i] ? 0 : 255; any = any || ink[i] === 1; }
  return any ? { image: out, box } : null;
}
