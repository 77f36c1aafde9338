// kulit on the device: the photo is checked in this browser with onnxruntime-web, never uploaded.
// The model graph does the mask, normalisation, mirror TTA, softmax and gate (kulit.build.webmodel);
// the answer rule below follows kulit/answer.py and runs on /device/config.json (the card's
// thresholds and the app's texts), so no threshold or text is typed here. Without WebAssembly,
// or if anything fails to load, the form posts to the server as before.
const CACHE = "kulit-device-v1";
const ORT = "/device/ort/";

// The answer rule (kulit/answer.py `decide`), same order, same advice keys.
export function decide(rule, probs, gate, qualityIssue) {
  const classes = rule.classes;
  const p = Array.from(probs, Number);
  const k = Math.max(1, Math.min(rule.top_k, classes.length));
  const order = p.map((_, i) => i).sort((a, b) => (p[b] - p[a]) || (a - b)).slice(0, k);
  const top = order.map((i) => [classes[i], p[i]]);
  const [best, conf] = top[0];
  const quality = qualityIssue || null;
  const noAnswer = (status, advice) => ({
    status, label: null, confidence: conf, top, see_doctor: false, melanoma_alert: false,
    advice, quality, urgent: {},
  });
  if (quality) return noAnswer("retake", "retake_" + quality);
  const on = (v) => v !== null && v !== undefined;
  if (gate && on(rule.not_skin_threshold) && gate.not_skin >= rule.not_skin_threshold) {
    return noAnswer("not_skin", "not_skin");
  }
  let status;
  if (gate && on(rule.other_threshold) && gate.other >= rule.other_threshold) status = "none_of_these";
  else if (conf >= rule.threshold) status = "answered";
  else status = "uncertain";
  const urgent = {};
  for (const c of [...rule.urgent_classes].sort()) {
    const i = classes.indexOf(c);
    if (i >= 0 && (c === best || (on(rule.melanoma_cutoff) && p[i] >= rule.melanoma_cutoff))) urgent[c] = p[i];
  }
  const alert = Object.keys(urgent).length > 0;
  const advice = alert ? (rule.urgent_classes.includes(best) ? "melanoma" : "melanoma_possible")
    : { answered: "default", uncertain: "uncertain", none_of_these: "none_of_these" }[status];
  return {
    status, label: status === "answered" ? best : null, confidence: conf, top,
    see_doctor: alert || status !== "answered", melanoma_alert: alert, advice, quality, urgent,
  };
}

// Network first for what may change (config, pages), cache first for versioned binaries.
async function cached(url, { fresh = false } = {}) {
  const cache = await caches.open(CACHE);
  if (!fresh) {
    const hit = await cache.match(url);
    if (hit) return hit;
  }
  try {
    const resp = await fetch(url, { cache: "no-cache" });
    if (resp.ok) await cache.put(url, resp.clone());
    return resp;
  } catch (err) {
    const hit = await cache.match(url);
    if (hit) return hit;
    throw err;
  }
}

let ort, session, config;

async function load() {
  if (!("WebAssembly" in window) || !("caches" in window)) throw new Error("no WebAssembly");
  config = await (await cached("/device/config.json", { fresh: true })).json();
  if (!config.model.url) throw new Error("no browser model on this server");
  ort = await import(ORT + "ort.wasm.min.mjs");
  ort.env.wasm.numThreads = 1; // no cross-origin isolation: no threads
  ort.env.wasm.proxy = false;
  ort.env.wasm.wasmPaths = { mjs: ORT + "ort-wasm-simd-threaded.mjs", wasm: ORT + "ort-wasm-simd-threaded.wasm" };
  const wasm = await cached(ORT + "ort-wasm-simd-threaded.wasm");
  ort.env.wasm.wasmBinary = await wasm.arrayBuffer();
  const model = await (await cached(config.model.url)).arrayBuffer();
  session = await ort.InferenceSession.create(model, { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
  // what the page itself loaded, so the next visit works offline
  const cache = await caches.open(CACHE);
  const own = [location.pathname + location.search, "/",
    ...Array.from(document.querySelectorAll("script[src], link[rel=stylesheet]"), (el) => el.src || el.href),
    ORT + "ort.wasm.min.mjs", ORT + "ort-wasm-simd-threaded.mjs"];
  await Promise.all(own.map(async (u) => { if (!(await cache.match(u))) await cache.add(u).catch(() => {}); }));
  return config;
}

// One centre crop (uint8 RGB, S*S*3) -> probabilities, gate scores and heatmap maps.
export async function runCrop(rgb) {
  const s = config.model.input_size;
  const feeds = { [config.model.input]: new ort.Tensor("uint8", rgb, [1, s, s, 3]) };
  const out = await session.run(feeds);
  const probs = Array.from(out.probs.data);
  const gate = out.gate ? { not_skin: out.gate.data[0], other: out.gate.data[1] } : null;
  return { probs, gate, cam: out.cam || null };
}

// The photo -> its centre square at S px (kulit.serving.preprocess.resize_crop's geometry, canvas resampling).
export async function cropPhoto(blob) {
  const bmp = await createImageBitmap(blob, { imageOrientation: "from-image" });
  const s = config.model.input_size, w = bmp.width, h = bmp.height;
  const scale = s / Math.min(w, h);
  const nw = Math.max(s, Math.round(w * scale)), nh = Math.max(s, Math.round(h * scale));
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = s;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, s, s);
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(bmp, -Math.floor((nw - s) / 2), -Math.floor((nh - s) / 2), nw, nh);
  const rgba = ctx.getImageData(0, 0, s, s).data;
  const rgb = new Uint8Array(s * s * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) { rgb[j] = rgba[i]; rgb[j + 1] = rgba[i + 1]; rgb[j + 2] = rgba[i + 2]; }
  return { rgb, canvas, width: w, height: h };
}

export async function checkPhoto(blob) {
  const crop = await cropPhoto(blob);
  const issue = Math.min(crop.width, crop.height) < config.rule.quality.min_side ? "too_small" : null;
  const out = await runCrop(crop.rgb);
  return { answer: decide(config.rule, out.probs, out.gate, issue), crop, cam: out.cam };
}

// --- the page ---
const lang = document.documentElement.lang || "en";
const tx = (key, kw = {}) => {
  const table = config.texts[lang] || config.texts.en;
  const text = table[key] ?? config.texts.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (m, k) => (k in kw ? kw[k] : m));
};
const pct = (p) => (p > 0 && p < 0.005 ? "<1%" : Math.round(100 * p) + "%");
const name = (c) => config.class_names[lang]?.[c] ?? c;

function el(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const k of kids) e.append(k);
  return e;
}

function heatmap(canvas, cam, cls) {
  const [, , h, w] = cam.dims, plane = h * w, off = cls * plane;
  const m = Array.from(cam.data.slice(off, off + plane), (v) => Math.max(0, v));
  const peak = Math.max(...m);
  const small = new OffscreenCanvas(w, h), sctx = small.getContext("2d");
  const img = sctx.createImageData(w, h);
  m.forEach((v, i) => { const a = peak > 0 ? v / peak : 0; img.data.set([255 * Math.min(1, 2 * a), 200 * a, 40, 150 * a], 4 * i); });
  sctx.putImageData(img, 0, 0);
  const out = el("canvas", { class: "preview", role: "img", "aria-label": tx("heatmap_alt") });
  out.width = out.height = canvas.width;
  const ctx = out.getContext("2d");
  ctx.drawImage(canvas, 0, 0);
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(small, 0, 0, out.width, out.height);
  return out;
}

function render(box, { answer: a, crop, cam }) {
  const n = config.rule.classes.length;
  const verdict = {
    answered: () => tx("verdict_likely", { name: name(a.label), pct: pct(a.confidence) }),
    uncertain: () => tx("verdict_uncertain"), not_skin: () => tx("verdict_not_skin"),
    retake: () => tx("verdict_retake"), none_of_these: () => tx("verdict_none_of_these", { n }),
  }[a.status]();
  box.replaceChildren(el("h2", {}, tx("result_title")),
    el("p", { class: "small device-badge" }, tx("device_badge")),
    el("p", { class: "verdict", "data-status": a.status }, verdict));
  if (a.see_doctor) {
    const title = a.melanoma_alert || a.status === "uncertain" ? "see_doctor_title" : "see_doctor_gentle_title";
    box.append(el("section", { class: "urgent", role: "alert" }, el("h3", {}, tx(title)), el("p", {}, tx("advice_" + a.advice))));
  } else {
    box.append(el("p", { class: "advice", "data-advice": a.advice }, tx("advice_" + a.advice)));
  }
  if (a.status === "answered" || a.status === "uncertain") {
    const list = el("ol", { class: "bars" });
    for (const [c, p] of a.top) {
      const li = el("li", {}, el("span", {}, name(c)), " ", el("strong", {}, pct(p)));
      if (c in a.urgent || config.rule.urgent_classes.includes(c)) li.append(" ", el("span", { class: "badge" }, tx("urgent_badge")));
      list.append(li);
    }
    box.append(el("h3", {}, tx("top_title", { n: a.top.length })), list, el("p", { class: "small" }, tx("pct_note", { n })));
    if (cam) box.append(el("h3", {}, tx("photo_title")), heatmap(crop.canvas, cam, config.rule.classes.indexOf(a.top[0][0])), el("p", { class: "small" }, tx("heatmap_note")));
  }
  box.hidden = false;
  box.dataset.status = a.status;
  box.dataset.advice = a.advice;
  box.focus();
}

const ready = (async () => {
  if ("serviceWorker" in navigator) navigator.serviceWorker.register("/sw.js").catch(() => {});
  const form = document.getElementById("upload");
  const note = document.getElementById("device-note");
  try {
    await load();
  } catch (err) {
    if (note && config) note.textContent = tx("device_unavailable");
    throw err;
  }
  if (note) note.textContent = tx("privacy_device") + " " + tx("device_ready");
  document.documentElement.dataset.device = "ready";
  if (!form) return config;
  const submit = document.getElementById("submit");
  const label = submit.textContent;
  const box = document.getElementById("device-result");
  form.addEventListener("submit", async (e) => {
    if (e.defaultPrevented) return; // kulit.js found no photo or a bad one
    const file = ["image", "camera"].map((id) => document.getElementById(id).files[0]).find(Boolean);
    if (!file) return;
    e.preventDefault();
    submit.textContent = tx("device_running");
    try {
      render(box, await checkPhoto(file));
    } catch (err) {
      HTMLFormElement.prototype.submit.call(form); // the server path (#submit hides form.submit)
    } finally {
      submit.disabled = false;
      submit.textContent = label;
    }
  });
  return config;
})();
ready.catch(() => { document.documentElement.dataset.device = "unavailable"; });

window.kulitDevice = { ready, decide, runCrop, cropPhoto, checkPhoto };
