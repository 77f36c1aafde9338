// The server's crop, pixel for pixel: kulit.serving.preprocess.resize_crop, i.e. Pillow's
// Image.resize(size, BILINEAR or BICUBIC, box=...) on 8-bit RGB (its Resample.c: separable
// filter, support widened by the scale, coefficients in 22-bit fixed point, a horizontal pass
// rounded to 8 bits, then a vertical one). A browser canvas resamples differently, and a few
// levels of difference were enough to change one answer in twelve between the two checks.
// tests/test_resample_js.py runs this file in node against Pillow itself.

const PRECISION_BITS = 22;
const ONE = 2 ** PRECISION_BITS;
const HALF = 2 ** (PRECISION_BITS - 1);

const FILTERS = {
  bilinear: { support: 1, f: (x) => { x = Math.abs(x); return x < 1 ? 1 - x : 0; } },
  bicubic: {
    support: 2,
    f: (x) => {
      const a = -0.5;
      x = Math.abs(x);
      if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
      if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
      return 0;
    },
  },
};

// Pillow's precompute_coeffs + normalize_coeffs_8bpc: per output pixel, the first input pixel,
// the count, and integer weights. in0/in1 are C floats there, hence Math.fround.
function coefficients(inSize, in0, in1, outSize, filter) {
  in0 = Math.fround(in0);
  in1 = Math.fround(in1);
  const scale = Math.fround(in1 - in0) / outSize;
  const filterscale = Math.max(1, scale);
  const support = filter.support * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const ss = 1 / filterscale;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Float64Array(outSize * ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = in0 + (xx + 0.5) * scale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    const w = new Float64Array(xmax);
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      w[x] = filter.f((x + xmin - center + 0.5) * ss);
      ww += w[x];
    }
    for (let x = 0; x < xmax; x++) {
      const k = ww !== 0 ? w[x] / ww : w[x];
      kk[xx * ksize + x] = k < 0 ? Math.trunc(-0.5 + k * ONE) : Math.trunc(0.5 + k * ONE);
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { bounds, kk, ksize };
}

// Python's round(): halves to even (round(2.5) == 2), where Math.round goes up
const pyRound = (x) => {
  const f = Math.floor(x);
  if (x - f !== 0.5) return Math.round(x);
  return f % 2 === 0 ? f : f + 1;
};

const clip8 = (v) => (v >= ONE * 256 ? 255 : v <= 0 ? 0 : Math.floor(v / ONE));

// One 1-D pass over `lines` lines: dst[line][o] = sum of src[line][first + k] * weight, in
// 22-bit fixed point, rounded and clipped to 8 bits (Pillow's ImagingResample*_8bpc).
// at(line, i) and put(line, o) give the index of a pixel's first channel.
function pass(coef, shift, lines, at, put, src, dst) {
  const n = coef.bounds.length / 2;
  for (let line = 0; line < lines; line++) {
    for (let o = 0; o < n; o++) {
      const first = coef.bounds[o * 2] + shift, count = coef.bounds[o * 2 + 1], k0 = o * coef.ksize;
      let r = HALF, g = HALF, b = HALF;
      for (let i = 0; i < count; i++) {
        const k = coef.kk[k0 + i], p = at(line, first + i);
        r += src[p] * k; g += src[p + 1] * k; b += src[p + 2] * k;
      }
      const q = put(line, o);
      dst[q] = clip8(r); dst[q + 1] = clip8(g); dst[q + 2] = clip8(b);
    }
  }
}

// Pillow 13 runs the vertical pass first when it shrinks the height by more than twice what
// the horizontal pass shrinks the width (found by measurement; tests/test_resample_js.py
// holds this file to the installed Pillow, so a change there fails the test).
const verticalFirst = (w, h, ow, oh) => oh < h && h - oh > 2 * (w - ow);

// src: RGBA bytes (w x h; alpha ignored: composite first); box: [x0, y0, x1, y1] in src
// pixels. -> RGB bytes, size x size.
export function resizeBox(src, w, h, box, size, interpolation) {
  const filter = FILTERS[interpolation];
  if (!filter) throw new Error(`interpolation ${interpolation}`);
  const H = coefficients(w, box[0], box[2], size, filter);
  const V = coefficients(h, box[1], box[3], size, filter);
  const out = new Uint8Array(size * size * 3);
  const span = (c) => [c.bounds[0], c.bounds[size * 2 - 2] + c.bounds[size * 2 - 1] - c.bounds[0]];
  if (verticalFirst(w, h, size, size)) {
    const [c0, cols] = span(H); // only the columns the horizontal pass reads
    const tmp = new Uint8Array(cols * size * 3); // size rows of `cols` pixels
    pass(V, 0, cols, (x, y) => (y * w + c0 + x) * 4, (x, yy) => (yy * cols + x) * 3, src, tmp);
    pass(H, -c0, size, (y, x) => (y * cols + x) * 3, (y, xx) => (y * size + xx) * 3, tmp, out);
  } else {
    const [r0, rows] = span(V); // only the rows the vertical pass reads
    const tmp = new Uint8Array(rows * size * 3); // `rows` rows of size pixels
    pass(H, 0, rows, (y, x) => ((r0 + y) * w + x) * 4, (y, xx) => (y * size + xx) * 3, src, tmp);
    pass(V, -r0, size, (x, y) => (y * size + x) * 3, (x, yy) => (yy * size + x) * 3, tmp, out);
  }
  return out;
}

// resize_crop's geometry: the shorter side to round(size / cropPct), the centre square of
// `size`; only that square is resampled. -> RGB bytes, size x size.
export function resizeCrop(src, w, h, size, cropPct, interpolation) {
  const short = Math.max(1, pyRound(size / cropPct));
  const scale = short / Math.min(w, h);
  const nw = Math.max(short, pyRound(w * scale)), nh = Math.max(short, pyRound(h * scale));
  const left = Math.floor((nw - size) / 2), top = Math.floor((nh - size) / 2);
  if (nw === w && nh === h) {
    const out = new Uint8Array(size * size * 3);
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const p = ((top + y) * w + left + x) * 4, o = (y * size + x) * 3;
        out[o] = src[p]; out[o + 1] = src[p + 1]; out[o + 2] = src[p + 2];
      }
    }
    return out;
  }
  const sx = w / nw, sy = h / nh;
  const box = [left * sx, top * sy, (left + size) * sx, (top + size) * sy];
  return resizeBox(src, w, h, box, size, interpolation);
}
