// The dropout masks of p2p_demo/masks.py, for the browser: the same hash, the same bits.
// Keep the two files in step (tests/test_masks.py runs both and compares).
export const MASKS_VERSION = 1;

const mix32 = (x) => {  // lowbias32 (Chris Wellons): every step a 32-bit operation
  x = x >>> 0;
  x = (x ^ (x >>> 16)) >>> 0;
  x = Math.imul(x, 0x7feb352d) >>> 0;
  x = (x ^ (x >>> 15)) >>> 0;
  x = Math.imul(x, 0x846ca68b) >>> 0;
  x = (x ^ (x >>> 16)) >>> 0;
  return x;
};

// seed: a sample's seed (sample_seed(seed, k), < 2**63) as a BigInt; layer: the layer's number.
export function layerKey(seed, layer) {
  const s = BigInt(seed);
  const lo = Number(s & 0xffffffffn) >>> 0, hi = Number((s >> 32n) & 0xffffffffn) >>> 0;
  let k = mix32((layer ^ 0x9e3779b9) >>> 0);
  k = mix32((k ^ hi) >>> 0);
  return mix32((k ^ lo) >>> 0);
}

export function hash32(seed, layer, count) {
  const key = layerKey(seed, layer), out = new Uint32Array(count);
  for (let i = 0; i < count; i++) out[i] = mix32((mix32(i) ^ key) >>> 0);
  return out;
}

// One sample's multiplier for one layer, written into `out` (a Float32Array view of C*h*w).
// run = h*w for a channel-dropout layer (one draw per channel, held over the feature map), else 1.
export function scaledInto(out, seed, layer, p, run = 1) {
  const h = hash32(seed, layer, out.length / run), kept = Math.fround(1 / (1 - p));
  for (let i = 0; i < out.length; i++) out[i] = h[Math.floor(i / run)] * 2 ** -32 >= p ? kept : 0;
  return out;
}

// sample_seed(seed, k): the seed (a BigInt, 63 bits) of sample k of a request seeded with `seed`.
export function sampleSeed(seed, k) {
  const a = mix32((mix32(((Number(BigInt(seed) & 0xffffffffn) >>> 0) ^ 0x243f6a88) >>> 0) ^ k) >>> 0);
  const b = mix32((a ^ 0xb7e15162) >>> 0);
  return (BigInt((b & 0x7fffffff) >>> 0) << 32n) | BigInt(a);
}
