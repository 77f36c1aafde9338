// kulit: progressive enhancement (upload checks, preview, drag and drop, shrinking a big photo
// before any size check, the upload with its progress in bytes; the result's print button and
// local time; "needs internet" offline). Every page works without this file; the server
// repeats every check and accepts the original photo.
function kulitResultPage() {
  "use strict";
  var printButton = document.querySelector("[data-print]");
  if (printButton) {
    printButton.hidden = false;
    printButton.addEventListener("click", function () { window.print(); });
  }
  var when = document.getElementById("checked-at");
  if (when && when.getAttribute("datetime") && window.Intl) {
    // the server wrote UTC; the person reads (and prints) their own clock
    when.textContent = new Date(when.getAttribute("datetime")).toLocaleString(
      document.documentElement.lang === "id" ? "id-ID" : "en-GB",
      { year: "numeric", month: "long", day: "numeric", hour: "2-digit", minute: "2-digit",
        timeZoneName: "short" });
  }
  // offline, a form that re-posts the photo (language, How it works) cannot work: say so
  Array.prototype.forEach.call(document.querySelectorAll("form[method=post]"), function (f) {
    if (f.id === "upload") return;
    f.addEventListener("submit", function (e) {
      if (navigator.onLine) return;
      e.preventDefault();
      var box = document.getElementById("offline-note");
      if (!box) {
        box = document.createElement("p");
        box.id = "offline-note";
        box.className = "error";
        box.setAttribute("role", "alert");
        document.getElementById("main").prepend(box);
      }
      box.textContent = document.body.dataset.needsInternet || "";
    });
  });
}
kulitResultPage();
window.addEventListener("kulit:page", kulitResultPage);

(function () {
  "use strict";
  var form = document.getElementById("upload");
  if (!form) return;
  var OK_TYPES = ["image/jpeg", "image/png", "image/webp", "image/bmp", "image/x-ms-bmp",
                  "image/heic", "image/heif"];
  // Every photo over SHRINK_ABOVE that this browser can open is shrunk here first, before any
  // size check and before either check sees it: a 16-20 MB 6000x8000 phone JPEG becomes about
  // 0.3 MB. The server decodes JPEGs in the DCT at no less than DRAFT a side (the card's
  // draft size, 2x the model's input) when the shorter side is twice that or more; the device
  // cannot. So a photo of that size is always shrunk to a shorter side between DRAFT and
  // 2 * DRAFT - 1: both checks then resample the same full pixels, byte for byte.
  var DRAFT = parseInt(form.dataset.draft, 10) || 448;
  var SHRINK_SIDE = 1280, MIN_SHORT = DRAFT, MAX_SHORT = 2 * DRAFT - 1, SHRINK_ABOVE = 300 * 1024;
  var maxBytes = parseInt(form.dataset.maxBytes, 10) || Infinity;
  var errBox = document.getElementById("upload-error");
  var preview = document.getElementById("preview");
  var nameBox = document.getElementById("file-name");
  var drop = document.getElementById("drop");
  var submit = document.getElementById("submit");
  var submitText = submit.textContent;
  var ask = document.getElementById("ask-server");
  var progress = document.getElementById("upload-progress");
  var inputs = [document.getElementById("image"), document.getElementById("camera")].filter(Boolean);
  var valid = false;
  var url = null;

  function showError(msg) {
    errBox.textContent = "";
    var title = document.createElement("strong");
    title.textContent = form.dataset.errorTitle + ": ";
    errBox.appendChild(title);
    errBox.appendChild(document.createTextNode(msg));
    errBox.hidden = false;
    valid = false;
  }

  function clearError() {
    errBox.hidden = true;
    errBox.textContent = "";
  }

  function clearPreview() {
    if (url) URL.revokeObjectURL(url);
    url = null;
    preview.hidden = true;
    preview.removeAttribute("src");
  }

  function reset() {
    submit.disabled = false;
    submit.textContent = submitText;
    if (progress) progress.hidden = true;
    if (ask) ask.hidden = true;
  }

  function check(file) {
    clearPreview();
    reset();
    nameBox.textContent = file ? file.name : "";
    if (!file) { valid = false; return; }
    // the same words as the server's for an empty file
    if (file.size === 0) { showError(form.dataset.errMissing); return; }
    // An empty type means the browser does not know; the server decides then.
    if (file.type && OK_TYPES.indexOf(file.type) < 0) { showError(form.dataset.errNotImage); return; }
    // no size check here: a big photo is shrunk first (on submit)
    clearError();
    valid = true;
    url = URL.createObjectURL(file);
    preview.onload = function () { preview.hidden = false; };
    // a HEIC this browser cannot show is still a photo: the server (or the question) decides
    preview.onerror = function () {
      clearPreview();
      if (!/hei[cf]/i.test(file.type + file.name)) showError(form.dataset.errUnreadable);
    };
    preview.src = url;
  }

  function chosen() {
    for (var i = 0; i < inputs.length; i++) {
      if (inputs[i].files && inputs[i].files.length) return inputs[i].files[0];
    }
    return null;
  }

  inputs.forEach(function (input) {
    input.addEventListener("change", function () {
      // Only one photo is sent: choosing in one input clears the other.
      inputs.forEach(function (other) { if (other !== input) other.value = ""; });
      check(input.files && input.files[0]);
    });
  });

  ["dragenter", "dragover"].forEach(function (type) {
    drop.addEventListener(type, function (e) { e.preventDefault(); drop.classList.add("dragover"); });
  });
  ["dragleave", "dragend", "drop"].forEach(function (type) {
    drop.addEventListener(type, function () { drop.classList.remove("dragover"); });
  });
  drop.addEventListener("drop", function (e) {
    e.preventDefault();
    var files = e.dataTransfer && e.dataTransfer.files;
    if (!files || !files.length) return;
    inputs[0].files = files;
    inputs.slice(1).forEach(function (other) { other.value = ""; });
    check(files[0]);
  });
  // A photo dropped beside the drop zone must not make the browser navigate away to it.
  window.addEventListener("dragover", function (e) { e.preventDefault(); });
  window.addEventListener("drop", function (e) { e.preventDefault(); });

  // -> {blob, decoded}: the photo shrunk (or as it is when small), or decoded=false when this
  // browser cannot open it (HEIC outside Safari).
  function prepare(file) {
    if (!window.createImageBitmap) return Promise.resolve({ blob: file, decoded: false });
    return createImageBitmap(file, { imageOrientation: "from-image" }).then(function (bmp) {
      var w = bmp.width, h = bmp.height;
      var short = Math.min(w, h), mustShrink = short > MAX_SHORT;
      var fit = Math.min(SHRINK_SIDE / Math.max(w, h), MAX_SHORT / short);
      var scale = Math.min(1, Math.max(fit, MIN_SHORT / short));
      if ((file.size <= SHRINK_ABOVE && !mustShrink) || scale >= 1) { bmp.close(); return { blob: file, decoded: true }; }
      var canvas = document.createElement("canvas");
      canvas.width = Math.round(w * scale);
      canvas.height = Math.round(h * scale);
      var ctx = canvas.getContext("2d");
      ctx.imageSmoothingQuality = "high";
      ctx.drawImage(bmp, 0, 0, canvas.width, canvas.height);
      bmp.close();
      return new Promise(function (resolve) { canvas.toBlob(resolve, "image/jpeg", 0.9); })
        .then(function (blob) {
          var small = blob && (blob.size < file.size || mustShrink);
          return { blob: small ? new File([blob], file.name.replace(/\.[^.]*$/, "") + ".jpg",
                                          { type: "image/jpeg" }) : file, decoded: true };
        });
    }, function () { return { blob: file, decoded: false }; });
  }

  window.kulitPrepare = prepare; // the same shrinking for both checks (and for the tests)

  function kb(n) { return Math.max(1, Math.round(n / 1024)); }

  // The server check, with the bytes sent shown; its answer replaces this page.
  function upload(blob) {
    if (blob.size > maxBytes) { reset(); showError(form.dataset.errTooLarge); return; }
    if (!navigator.onLine) { reset(); showError(form.dataset.needsInternet); return; }
    var data = new FormData();
    data.append("image", blob, blob.name || "photo.jpg");
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    var bar = progress && progress.querySelector("progress");
    var text = document.getElementById("upload-progress-text");
    xhr.upload.onprogress = function (e) {
      if (!progress) return;
      progress.hidden = false;
      var total = e.lengthComputable ? e.total : blob.size;
      bar.value = Math.round(100 * e.loaded / total);
      text.textContent = form.dataset.progress.replace("{done}", kb(e.loaded)).replace("{total}", kb(total));
    };
    xhr.onload = function () {
      var doc = new DOMParser().parseFromString(xhr.responseText, "text/html");
      if (xhr.status !== 200 || !doc.getElementById("verdict")) {
        // the server's own words for a refused photo, on this page
        var msg = doc.getElementById("upload-error");
        reset();
        showError(msg && msg.textContent ? msg.textContent.replace(/^[^:]*:\s*/, "") : form.dataset.errUnreadable);
        return;
      }
      // the result page, as a navigation would show it; Back returns to a fresh upload page
      history.pushState({ kulit: "result" }, "", form.action);
      document.replaceChild(document.importNode(doc.documentElement, true), document.documentElement);
      window.dispatchEvent(new Event("kulit:page"));
      var main = document.getElementById("main");
      if (main) main.focus();
      window.scrollTo(0, 0);
    };
    xhr.onerror = function () { reset(); showError(form.dataset.needsInternet); };
    xhr.send(data);
  }

  function askServer(blob) {
    if (!ask) { upload(blob); return; }
    reset();
    ask.hidden = false;
    document.getElementById("ask-send").onclick = function () {
      ask.hidden = true;
      submit.disabled = true;
      submit.textContent = form.dataset.submitting;
      upload(blob);
    };
    document.getElementById("ask-cancel").onclick = function () {
      ask.hidden = true;
      inputs.forEach(function (input) { input.value = ""; });
      check(null);
      inputs[0].focus();
    };
  }

  form.addEventListener("submit", function (e) {
    if (!chosen()) { e.preventDefault(); showError(form.dataset.errMissing); return; }
    if (!valid) { e.preventDefault(); return; }
    e.preventDefault();
    if (submit.disabled) return; // a double tap sends one photo
    submit.disabled = true;
    submit.textContent = form.dataset.shrinking;
    var file = chosen();
    // the check chosen on this device is still loading from its cache: wait, never upload
    var loading = window.kulitDevice && document.documentElement.dataset.device === "loading";
    var device;
    (loading ? window.kulitDevice.ready.catch(function () {}) : Promise.resolve()).then(function () {
      device = window.kulitDevice && window.kulitDevice.active();
      return prepare(file);
    }).then(function (p) {
      submit.textContent = form.dataset.submitting;
      if (device && p.decoded) return window.kulitDevice.checkAndShow(p.blob);
      if (device) { askServer(p.blob); return; } // never sent without asking
      upload(p.blob);
    }).catch(function () {
      if (device) { askServer(file); return; }
      upload(file);
    });
  });
  // Coming back with the Back button restores a usable form.
  window.addEventListener("pageshow", reset);
  window.addEventListener("popstate", function () { location.reload(); });
})();
