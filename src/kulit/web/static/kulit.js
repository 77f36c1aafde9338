// kulit: progressive enhancement (upload checks, preview, drag and drop, shrinking a big photo
// before upload; the result's print button and local time). Every page works without this
// file; the server repeats every check and accepts the original photo.
(function () {
  "use strict";
  var printButton = document.querySelector("[data-print]");
  if (printButton) {
    printButton.hidden = false;
    printButton.addEventListener("click", function () { window.print(); });
  }
  var when = document.getElementById("checked-at");
  if (when && window.Intl) {
    // the server wrote UTC; the person reads (and prints) their own clock
    when.textContent = new Date(when.getAttribute("datetime")).toLocaleString(
      document.documentElement.lang === "id" ? "id-ID" : "en-GB",
      { year: "numeric", month: "long", day: "numeric", hour: "2-digit", minute: "2-digit",
        timeZoneName: "short" });
  }
})();

(function () {
  "use strict";
  var form = document.getElementById("upload");
  if (!form) return;
  var OK_TYPES = ["image/jpeg", "image/png", "image/webp", "image/bmp", "image/x-ms-bmp",
                  "image/heic", "image/heif"];
  // A phone photo (2-6 MB) is shrunk to this longest side before upload: the model sees 224 px
  // and the server decodes JPEGs at about 2x that anyway. Smaller files are sent as they are.
  var SHRINK_SIDE = 1280, SHRINK_ABOVE = 600 * 1024, SHRINK_TYPES = ["image/jpeg", "image/png", "image/webp"];
  var maxBytes = parseInt(form.dataset.maxBytes, 10) || Infinity;
  var errBox = document.getElementById("upload-error");
  var preview = document.getElementById("preview");
  var nameBox = document.getElementById("file-name");
  var drop = document.getElementById("drop");
  var submit = document.getElementById("submit");
  var submitText = submit.textContent;
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

  function check(file) {
    clearPreview();
    nameBox.textContent = file ? file.name : "";
    if (!file) { valid = false; return; }
    // the same words as the server's for an empty file
    if (file.size === 0) { showError(form.dataset.errMissing); return; }
    // An empty type means the browser does not know; the server decides then.
    if (file.type && OK_TYPES.indexOf(file.type) < 0) { showError(form.dataset.errNotImage); return; }
    if (file.size > maxBytes) { showError(form.dataset.errTooLarge); return; }
    clearError();
    valid = true;
    // browsers other than Safari cannot show HEIC; the server can read it
    if (/hei[cf]/.test(file.type)) return;
    url = URL.createObjectURL(file);
    preview.onload = function () { preview.hidden = false; };
    preview.onerror = function () { clearPreview(); showError(form.dataset.errUnreadable); };
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

  function shrink(file) {
    // createImageBitmap applies the EXIF orientation, so the smaller JPEG is upright.
    return createImageBitmap(file).then(function (bmp) {
      var scale = SHRINK_SIDE / Math.max(bmp.width, bmp.height);
      if (scale >= 1) return null;
      var canvas = document.createElement("canvas");
      canvas.width = Math.round(bmp.width * scale);
      canvas.height = Math.round(bmp.height * scale);
      canvas.getContext("2d").drawImage(bmp, 0, 0, canvas.width, canvas.height);
      return new Promise(function (resolve) { canvas.toBlob(resolve, "image/jpeg", 0.9); });
    });
  }

  form.addEventListener("submit", function (e) {
    if (!chosen()) { e.preventDefault(); showError(form.dataset.errMissing); return; }
    if (!valid) { e.preventDefault(); return; }
    submit.disabled = true;
    submit.textContent = form.dataset.submitting;
    var file = chosen();
    // the on-device check (device.js) never uploads; leave the photo to it
    if (document.documentElement.dataset.device === "ready") return;
    if (file.size <= SHRINK_ABOVE || SHRINK_TYPES.indexOf(file.type) < 0 ||
        !window.createImageBitmap || !window.DataTransfer) return;
    e.preventDefault();
    shrink(file).then(function (blob) {
      if (blob && blob.size < file.size) {
        var dt = new DataTransfer();
        dt.items.add(new File([blob], file.name.replace(/\.[^.]*$/, "") + ".jpg", { type: "image/jpeg" }));
        inputs.forEach(function (input) { input.value = ""; });
        inputs[0].files = dt.files;
      }
    }).catch(function () { /* send the original */ }).then(function () {
      // the button named "submit" hides form.submit; call the form's own method
      HTMLFormElement.prototype.submit.call(form);
    });
  });
  // Coming back with the Back button restores a usable form.
  window.addEventListener("pageshow", function () {
    submit.disabled = false;
    submit.textContent = submitText;
  });
})();
