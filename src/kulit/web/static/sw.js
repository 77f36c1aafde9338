// kulit's service worker: after one visit the page, its texts, the WASM and the model come from
// the cache, so the on-device check works offline. It never sees a photo: the check does not
// upload, and uploads (/predict, /api/) pass straight through to the network.
const CACHE = "kulit-device-v1";
const PASS = ["/api/", "/predict", "/explain", "/healthz", "/docs", "/openapi.json"];

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (e) => e.waitUntil(self.clients.claim()));

self.addEventListener("fetch", (e) => {
  const req = e.request;
  const url = new URL(req.url);
  if (req.method !== "GET" || url.origin !== location.origin) return;
  if (PASS.some((p) => url.pathname.startsWith(p))) return;
  // versioned or pinned files: cache first; pages and config: network first, cache offline
  const pinned = url.pathname.startsWith("/static/") || url.pathname.startsWith("/device/ort/")
    || url.pathname.startsWith("/device/model-web");
  e.respondWith((async () => {
    const cache = await caches.open(CACHE);
    if (pinned) {
      const hit = await cache.match(req);
      if (hit) return hit;
    }
    try {
      const resp = await fetch(req);
      if (resp.ok) await cache.put(req, resp.clone());
      return resp;
    } catch (err) {
      const hit = (await cache.match(req)) || (req.mode === "navigate" && (await cache.match("/")));
      if (hit) return hit;
      throw err;
    }
  })());
});
