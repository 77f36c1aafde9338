// kulit on the device: the photo is checked in this browser with onnxruntime-web, never uploaded.
// The model graph does the mask, normalisation, mirror TTA, softmax, gate and the photo-quality
// measures (kulit.build.webmodel, webquality); the answer rule below follows
// kulit/serving/answer.py and runs on /device/config.json (the card's thresholds, the quality
// limits and the app's texts), so no threshold or text is typed here. The result is shown on
// /device/result: the server's result.html with every block, filled here (one page, both modes).
// The check is offered with its download size and runs only once chosen; without HTTPS (or
// localhost), WebAssembly or the model, the form posts to the server as before.
const CACHE = "kulit-device-v1";
const ORT = "/device/ort/";
const RESULT_KEY = "kulit-device-result";
const CHOICE_KEY = "kulit-device"; // "on" | "off": the person's choice, kept on this device
// the server's crop, byte for byte (same version as this file, so the cache never mixes them)
const RESAMPLE = new URL(`./resample.js${new URL(import.meta.url).search}`, import.meta.url).href;
const { resizeCrop } = await import(RESAMPLE);
const SLOW = ["slow-2g", "2g", "3g"];

// The photo-quality rule (kulit/serving/quality.py `check_quality`), same order, the card's limits.
export function qualityIssue(lim, width, height, q) {
  if (Math.min(width, height) < lim.min_side) return "too_small";
  if (!q) return null; // a model whose graph does not measure: the size check only
  const [sharp, bright, dark, light] = q;
  if (bright < lim.min_brightness || dark > lim.max_clipped) return "too_dark";
  if (bright > lim.max_brightness || light > lim.max_clipped) return "too_bright";
  if (sharp < lim.min_sharpness) return "too_blurred";
  return null;
}

// The answer rule (kulit/serving/answer.py `decide`: shortlist and urgency), same
// order, same statuses, advice keys and urgency; rule.shortlist holds the card's cut-offs.
export function decide(rule, probs, gate, qualityIssue) {
  const classes = rule.classes;
  const p = Array.from(probs, Number);
  const byP = p.map((_, i) => i).sort((a, b) => (p[b] - p[a]) || (a - b));
  const order = byP.slice(0, Math.max(1, Math.min(rule.top_k, classes.length)));
  const top = order.map((i) => [classes[i], p[i]]);
  const [best, conf] = top[0];
  const quality = qualityIssue || null;
  const level = rule.shortlist ? rule.shortlist.level : null;
  const noAnswer = (status, advice) => ({
    status, label: null, confidence: conf, top, see_doctor: false, melanoma_alert: false,
    advice, quality, urgent: {}, shortlist: [], shortlist_level: level, urgency: "none",
  });
  if (quality) return noAnswer("retake", "retake_" + quality);
  const on = (v) => v !== null && v !== undefined;
  if (gate && on(rule.not_skin_threshold) && gate.not_skin >= rule.not_skin_threshold) {
    return noAnswer("not_skin", "not_skin");
  }
  let status, named;
  if (gate && on(rule.other_threshold) && gate.other >= rule.other_threshold) {
    status = "none_of_these"; named = [];
  } else if (!rule.shortlist) {
    [status, named] = conf >= rule.threshold ? ["answered", [byP[0]]] : ["uncertain", []];
  } else {  // kulit.serving.shortlist.ShortlistRule.members
    const cut = rule.shortlist.cutoffs;
    named = byP.filter((i) => p[i] >= cut[i]);
    if (!named.length || named[0] !== byP[0]) named = [byP[0], ...named.filter((i) => i !== byP[0])];
    if (named.length === 1 && p[byP[0]] < rule.threshold && p.length > 1) named.push(byP[1]);
    status = named.length === 1 ? "answered" : named.length <= rule.max_named ? "shortlist" : "uncertain";
  }
  const shortlist = named.map((i) => [classes[i], p[i]]);
  const onList = new Set(shortlist.map(([c]) => c));
  const urgent = {};
  for (const c of [...rule.urgent_classes].sort()) {
    const i = classes.indexOf(c);
    if (i >= 0 && (onList.has(c) || c === best || (on(rule.melanoma_cutoff) && p[i] >= rule.melanoma_cutoff))) urgent[c] = p[i];
  }
  let urgency, advice;
  if (Object.keys(urgent).length) {
    urgency = "urgent";
    advice = rule.urgent_classes.some((c) => onList.has(c)) || rule.urgent_classes.includes(best) ? "melanoma" : "melanoma_possible";
  } else if (rule.soon_classes.some((c) => onList.has(c))) {
    urgency = "soon"; advice = "soon";
  } else {
    urgency = "routine";
    advice = { answered: "default", shortlist: "shortlist", uncertain: "uncertain", none_of_these: "none_of_these" }[status];
  }
  return {
    status, label: status === "answered" ? best : null, confidence: conf, top,
    see_doctor: urgency === "urgent" || urgency === "soon" || status === "uncertain" || status === "none_of_these",
    melanoma_alert: urgency === "urgent", advice, quality, urgent, shortlist, shortlist_level: level, urgency,
  };
}
const namesClasses = (a) => ["answered", "shortlist", "uncertain"].includes(a.status);

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

// A binary from the cache, or downloaded once with progress (bytes as decoded) and kept.
async function download(url, onBytes) {
  const cache = await caches.open(CACHE);
  const hit = await cache.match(url);
  if (hit) { const buf = await hit.arrayBuffer(); onBytes(buf.byteLength); return buf; }
  const resp = await fetch(url);
  if (!resp.ok || !resp.body) throw new Error(`${url}: ${resp.status}`);
  const reader = resp.body.getReader();
  const parts = [];
  let n = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
    n += value.byteLength;
    onBytes(n);
  }
  const buf = await new Blob(parts).arrayBuffer();
  await cache.put(url, new Response(buf, { headers: { "content-type": resp.headers.get("content-type") || "application/octet-stream" } }));
  return buf;
}

let ort, session, config;

async function loadConfig() {
  if (!config) config = await (await cached("/device/config.json", { fresh: true })).json();
  return config;
}

const secure = () => window.isSecureContext && "serviceWorker" in navigator;
const capable = () => "WebAssembly" in window && "caches" in window && secure();

async function isDownloaded(cfg) {
  const cache = await caches.open(CACHE);
  return Boolean(cfg.model.url && (await cache.match(cfg.model.url))
    && (await cache.match(ORT + "ort-wasm-simd-threaded.wasm")));
}

// The model and onnxruntime-web: each file fetched once (then from the cache, also offline).
async function load(onProgress = () => {}) {
  const cfg = await loadConfig();
  if (!cfg.model.url) throw new Error("no browser model on this server");
  const sizes = [cfg.model.size || 1, 11e6];
  const got = [0, 0];
  const report = () => onProgress(Math.min(1, (got[0] + got[1]) / (sizes[0] + sizes[1])));
  const [model, wasm] = await Promise.all([
    download(cfg.model.url, (n) => { got[0] = n; report(); }),
    download(ORT + "ort-wasm-simd-threaded.wasm", (n) => { got[1] = n; sizes[1] = Math.max(sizes[1], n); report(); }),
  ]);
  ort = await import(ORT + "ort.wasm.min.mjs"); // through the service worker: kept for offline
  ort.env.wasm.numThreads = 1; // no cross-origin isolation: no threads
  ort.env.wasm.proxy = false;
  ort.env.wasm.wasmPaths = { mjs: ORT + "ort-wasm-simd-threaded.mjs", wasm: ORT + "ort-wasm-simd-threaded.wasm" };
  ort.env.wasm.wasmBinary = wasm;
  session = await ort.InferenceSession.create(model, { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
  onProgress(1);
  keepPagesOffline(cfg).catch(() => {});
  return cfg;
}

// Every page a link can reach, in both languages, so offline navigation works (or says why).
async function keepPagesOffline(cfg) {
  const cache = await caches.open(CACHE);
  const pages = ["/"];
  for (const l of cfg.langs || ["id", "en"]) {
    for (const path of ["/", "/about", "/explain", "/device/result", "/offline"]) pages.push(`${path}?lang=${l}`);
  }
  const assets = Array.from(document.querySelectorAll("script[src], link[rel=stylesheet]"), (el) => el.src || el.href);
  const ortFiles = [ORT + "ort.wasm.min.mjs", ORT + "ort-wasm-simd-threaded.mjs", RESAMPLE];
  const kept = await Promise.all([...pages, ...assets, ...ortFiles].map(async (u) => {
    if (await cache.match(u)) return true;
    return cache.add(u).then(() => true, () => false);
  }));
  // "ready": every page and file is kept, so going offline now still works
  document.documentElement.dataset.offline = kept.every(Boolean) ? "ready" : "partial";
}

// One centre crop (uint8 RGB, S*S*3) -> probabilities, gate scores, quality measures, heatmap maps.
export async function runCrop(rgb) {
  const s = config.model.input_size;
  const feeds = { [config.model.input]: new ort.Tensor("uint8", rgb, [1, s, s, 3]) };
  const out = await session.run(feeds);
  const probs = Array.from(out.probs.data);
  const gate = out.gate ? { not_skin: out.gate.data[0], other: out.gate.data[1] } : null;
  const quality = out.quality ? Array.from(out.quality.data) : null;
  return { probs, gate, quality, cam: out.cam || null };
}

// The photo -> its centre square at S px, the very bytes the server's crop has: decoded as
// Pillow decodes (EXIF orientation, no colour management, transparency on the card's
// background), then resampled by resample.js (kulit.serving.preprocess.resize_crop's
// geometry and filter), not by the canvas.
export async function cropPhoto(blob) {
  const bmp = await createImageBitmap(blob, { imageOrientation: "from-image", colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const m = config.model, s = m.input_size, w = bmp.width, h = bmp.height;
  const full = document.createElement("canvas");
  full.width = w; full.height = h;
  const fctx = full.getContext("2d", { willReadFrequently: true });
  fctx.fillStyle = `rgb(${m.background.join(",")})`;
  fctx.fillRect(0, 0, w, h);
  fctx.drawImage(bmp, 0, 0);
  bmp.close();
  const rgb = resizeCrop(fctx.getImageData(0, 0, w, h).data, w, h, s, m.crop_pct, m.interpolation);
  full.width = full.height = 0; // let the full-size pixels go
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = s;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(s, s);
  for (let i = 0, j = 0; j < rgb.length; i += 4, j += 3) { img.data[i] = rgb[j]; img.data[i + 1] = rgb[j + 1]; img.data[i + 2] = rgb[j + 2]; img.data[i + 3] = 255; }
  ctx.putImageData(img, 0, 0);
  return { rgb, canvas, width: w, height: h };
}

export async function checkPhoto(blob) {
  const crop = await cropPhoto(blob);
  const out = await runCrop(crop.rgb);
  const issue = qualityIssue(config.rule.quality, crop.width, crop.height, out.quality);
  return { answer: decide(config.rule, out.probs, out.gate, issue), crop, cam: out.cam, quality: out.quality };
}

function heatmapUri(canvas, cam, cls) {
  const [, , h, w] = cam.dims, plane = h * w, off = cls * plane;
  const m = Array.from(cam.data.slice(off, off + plane), (v) => Math.max(0, v));
  const peak = Math.max(...m);
  const small = document.createElement("canvas");
  small.width = w; small.height = h;
  const sctx = small.getContext("2d");
  const img = sctx.createImageData(w, h);
  m.forEach((v, i) => { const a = peak > 0 ? v / peak : 0; img.data.set([255 * Math.min(1, 2 * a), 200 * a, 40, 150 * a], 4 * i); });
  sctx.putImageData(img, 0, 0);
  const out = document.createElement("canvas");
  out.width = out.height = canvas.width;
  const ctx = out.getContext("2d");
  ctx.drawImage(canvas, 0, 0);
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(small, 0, 0, out.width, out.height);
  return out.toDataURL("image/jpeg", 0.9);
}

// Check on the device, keep the answer in this tab only, show it on the result page.
async function checkAndShow(blob) {
  const r = await checkPhoto(blob);
  const a = r.answer;
  const stored = {
    answer: a, quality: r.quality,
    photo: r.crop.canvas.toDataURL("image/jpeg", 0.9),
    heatmap: r.cam && namesClasses(a) ? heatmapUri(r.crop.canvas, r.cam, config.rule.classes.indexOf(a.top[0][0])) : null,
    checked_at: new Date().toISOString(),
  };
  sessionStorage.setItem(RESULT_KEY, JSON.stringify(stored));
  location.assign(`/device/result?lang=${lang}`);
}

// --- texts ---
const lang = document.documentElement.lang || "en";
const tx = (key, kw = {}) => {
  const table = config.texts[lang] || config.texts.en;
  const text = table[key] ?? config.texts.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (m, k) => (k in kw ? kw[k] : m));
};
// kulit.serving.i18n.fmt_pct
const pct = (p) => (p > 0 && p < 0.005 ? "<1%" : Math.round(100 * p) + "%");
const name = (c) => config.class_names[lang]?.[c] ?? c;
const mb = (bytes) => (bytes / 1e6).toFixed(1);
const $ = (sel) => document.querySelector(sel);

// --- the result page: kulit.web.rendering.result_context, filled from the answer ---
function fillResult(stored) {
  const a = stored.answer, n = config.rule.classes.length;
  const names = namesClasses(a);
  const topName = name(a.top[0][0]);
  const verdict = $("#verdict");
  const orList = (cs) => cs.length < 2 ? cs.join("") : cs.slice(0, -1).join(", ") + " " + tx("list_or") + " " + cs[cs.length - 1];
  verdict.textContent = a.status === "answered" ? tx("verdict_likely", { name: topName, pct: pct(a.confidence) })
    : a.status === "shortlist" ? tx("verdict_shortlist", { names: orList(a.shortlist.map(([c]) => name(c))) })
      : a.status === "none_of_these" ? tx("verdict_none_of_these", { n }) : tx("verdict_" + a.status);
  verdict.dataset.status = a.status;
  verdict.classList.toggle("unsure", a.status !== "answered");
  $("#uncertain-why").hidden = a.status !== "uncertain";
  const guidance = a.status === "not_skin" || a.status === "retake";
  $("#guidance").hidden = !guidance;
  if (guidance) $("#guidance-text").textContent = tx("advice_" + a.advice);
  // rendering.doctor_box
  const box = $("#doctor-box");
  box.hidden = !a.see_doctor;
  if (a.see_doctor) {
    // by urgency, as rendering.doctor_box: red urgent, amber soon, else the gentle note
    const soonNames = a.shortlist.filter(([c]) => config.rule.soon_classes.includes(c)).map(([c]) => name(c));
    const text = a.urgency === "urgent" ? (a.advice === "melanoma" ? tx("see_doctor_melanoma")
      : tx("see_doctor_melanoma_possible", { pct: pct(Math.max(...Object.values(a.urgent))) }))
      : a.urgency === "soon" ? tx("see_doctor_soon", { names: orList(soonNames) })
        : tx("see_doctor_" + a.advice, { name: topName });
    const kind = a.urgency === "urgent" ? "urgent" : a.urgency === "soon" ? "soon" : "doctor-note";
    box.className = kind;
    box.setAttribute("role", kind === "doctor-note" ? "note" : "alert");
    box.querySelector("h2").textContent = tx(kind === "urgent" ? "see_doctor_title" : kind === "soon" ? "see_doctor_soon_title" : "see_doctor_gentle_title");
    box.querySelector("p").textContent = text;
  }
  // the ranking: the server's rows and condition cards for the top classes, in order
  const bars = $("#bars"), conds = $("#conditions");
  bars.hidden = conds.hidden = !names;
  if (names) {
    const list = bars.querySelector("ol");
    // rendering.result_context's rows: a list of two or more, else the model's ranking
    const listed = a.shortlist.length && (a.status === "shortlist" || a.status === "uncertain") ? a.shortlist : a.top;
    const shown = new Set(listed.map(([c]) => c));
    for (const li of list.querySelectorAll("li")) li.hidden = !shown.has(li.dataset.class);
    for (const d of conds.querySelectorAll("details")) d.hidden = !shown.has(d.dataset.class);
    listed.forEach(([c, p], i) => {
      const urgent = a.melanoma_alert && c in a.urgent;
      const li = list.querySelector(`li[data-class="${c}"]`);
      list.append(li);
      li.classList.toggle("urgent-row", urgent);
      li.querySelector(".bar-pct").textContent = pct(p);
      li.querySelector(".fill").style.width = `${(100 * p).toFixed(1)}%`;
      li.querySelector(".badge")?.remove();
      if (urgent) {
        const badge = document.createElement("span");
        badge.className = "badge";
        badge.textContent = tx("urgent_badge");
        li.querySelector(".bar-name").append(" ", badge);
      }
      const d = conds.querySelector(`details[data-class="${c}"]`);
      conds.append(d);
      d.querySelector(".cond-pct").textContent = pct(p);
      d.open = (i === 0 && a.status === "answered") || urgent;
    });
    bars.querySelector("h2").textContent = tx("top_title", { n: listed.length });
  }
  // rendering.result_context's guarantee and look-alike pairs (_shortlist.html)
  const sl = $("#shortlist");
  if (sl) {
    const onList = new Set(a.shortlist.map(([c]) => c));
    const pairs = a.status === "answered" || a.status === "shortlist";
    let anyPair = false;
    for (const li of sl.querySelectorAll("li[data-covers]")) {
      li.hidden = !(pairs && li.dataset.covers.split("/").every((c) => onList.has(c)));
      anyPair = anyPair || !li.hidden;
    }
    for (const el of sl.querySelectorAll("#pairs-title, ul.pairs")) el.hidden = !anyPair;
    const g = $("#guarantee");
    if (g) g.hidden = a.shortlist.length === 0;
    sl.hidden = !(anyPair || (g && !g.hidden));
  }
  $("#print-advice").textContent = tx("advice_" + a.advice);
  $("#print-note").hidden = guidance;
  $(".photo .base").src = stored.photo;
  const overlay = $(".photo .overlay");
  const heat = Boolean(stored.heatmap && names);
  for (const el of [overlay, $("#show-heatmap"), $(".hm-label"), $("#heatmap-note")]) if (el) el.hidden = !heat;
  if (heat) overlay.src = stored.heatmap;
  else overlay.removeAttribute("src");
  const when = $("#checked-at");
  when.setAttribute("datetime", stored.checked_at);
  when.textContent = new Date(stored.checked_at).toLocaleString(lang === "id" ? "id-ID" : "en-GB",
    { year: "numeric", month: "long", day: "numeric", hour: "2-digit", minute: "2-digit", timeZoneName: "short" });
  document.documentElement.dataset.device = "result";
}

// --- the upload page: offer the check, download it when asked, run it when chosen ---
function show(el, on = true) { if (el) el.hidden = !on; }

function setMode(active) {
  show($("#privacy-server"), !active);
  show($("#privacy-device"), active);
  document.documentElement.dataset.device = active ? "ready" : "off";
}

async function startUploadPage() {
  const offer = $("#device-offer");
  if (!offer) return;
  if (!("WebAssembly" in window)) return;
  const cfg = await loadConfig().catch(() => null);
  if (!cfg || !cfg.model.url) return;
  const note = $("#device-note");
  if (!secure()) { // plain HTTP on a LAN name: say why instead of failing silently
    show(offer);
    $("#device-offer-text").textContent = tx("device_insecure");
    show($("#device-download"), false);
    document.documentElement.dataset.device = "insecure";
    return;
  }
  const use = $("#device-use");
  use.checked = localStorage.getItem(CHOICE_KEY) !== "off";
  const ready = async () => {
    show($("#device-download"), false);
    show($("#device-offer-text"), false);
    show($("#device-metered"), false);
    show($("#device-use-label"));
    note.textContent = tx("device_ready");
    setMode(use.checked);
  };
  use.addEventListener("change", () => {
    localStorage.setItem(CHOICE_KEY, use.checked ? "on" : "off");
    setMode(use.checked);
  });
  show(offer);
  if (await isDownloaded(cfg)) { // chosen before: from the cache, no download
    if (use.checked) document.documentElement.dataset.device = "loading"; // kulit.js waits
    await load();
    await ready();
    return;
  }
  const size = mb(cfg.download_bytes || cfg.model.size_gz || cfg.model.size);
  $("#device-offer-text").textContent = tx("device_offer", { mb: size });
  const conn = navigator.connection;
  if (conn && (conn.saveData || SLOW.includes(conn.effectiveType))) {
    const m = $("#device-metered");
    m.textContent = tx("device_offer_metered", { mb: size });
    show(m);
  }
  const button = $("#device-download");
  button.textContent = tx("device_download", { mb: size });
  button.addEventListener("click", async () => {
    button.disabled = true;
    const bar = $("#device-progress progress"), text = $("#device-progress-text");
    show($("#device-progress"));
    const total = cfg.download_bytes || 0;
    try {
      await load((f) => {
        bar.value = Math.round(100 * f);
        text.textContent = tx("device_progress", { done: mb(f * total), total: mb(total) });
      });
      localStorage.setItem(CHOICE_KEY, "on");
      use.checked = true;
      show($("#device-progress"), false);
      await ready();
    } catch (err) {
      button.disabled = false;
      show($("#device-progress"), false);
      note.textContent = navigator.onLine ? tx("device_unavailable") : tx("device_offline_fail");
    }
  });
}

const ready = (async () => {
  if (secure()) navigator.serviceWorker.register("/sw.js").catch(() => {});
  if (location.pathname === "/device/result") {
    await loadConfig();
    const stored = JSON.parse(sessionStorage.getItem(RESULT_KEY) || "null");
    if (!stored) { location.replace(`/?lang=${lang}`); return config; }
    fillResult(stored);
    return config;
  }
  await startUploadPage();
  return config;
})();
ready.catch(() => { document.documentElement.dataset.device = "unavailable"; });

// kulit.js asks: is the on-device check in use? If so it hands the (shrunk) photo over.
const active = () => Boolean(session) && document.documentElement.dataset.device === "ready";
window.kulitDevice = { ready, active, checkAndShow, decide, qualityIssue, runCrop, cropPhoto, checkPhoto, load, loadConfig };
