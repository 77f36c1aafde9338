// kulit's service worker: after the on-device check was chosen, the pages (both languages), their
// texts, the WASM and the model come from the cache, so the check and every link work offline;
// a page it never kept says "needs internet" in the page's own words (/offline). It never sees a
// photo: the check does not upload, and uploads (/predict, /api/) pass straight to the network.
const CACHE = "kulit-device-v1";
const PASS = ["/api/", "/predict", "/healthz", "/docs", "/openapi.json"];

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (e) => e.waitUntil(self.clients.claim()));

const langOf = (url) => (["id", "en"].includes(url.searchParams.get("lang")) ? url.searchParams.get("lang") : "id");

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
      // keep only what was kept before (the page chose the check) or is pinned
      if (resp.ok && (pinned || (await cache.match(req)))) await cache.put(req, resp.clone());
      return resp;
    } catch (err) {
      const hit = await cache.match(req);
      if (hit) return hit;
      if (req.mode === "navigate") {
        const offline = await cache.match(`/offline?lang=${langOf(url)}`);
        if (offline) return offline;
      }
      throw err;
    }
  })());
});
