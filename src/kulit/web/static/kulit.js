// kulit: progressive enhancement of the upload form (checks, preview, drag and drop).
// The form works without this file; the server repeats every check.
(function () {
  "use strict";
  var form = document.getElementById("upload");
  if (!form) return;
  var OK_TYPES = ["image/jpeg", "image/png", "image/webp", "image/bmp", "image/x-ms-bmp"];
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
    // An empty type means the browser does not know; the server decides then.
    if (file.type && OK_TYPES.indexOf(file.type) < 0) { showError(form.dataset.errNotImage); return; }
    if (file.size > maxBytes) { showError(form.dataset.errTooLarge); return; }
    if (file.size === 0) { showError(form.dataset.errUnreadable); return; }
    clearError();
    valid = true;
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

  form.addEventListener("submit", function (e) {
    if (!chosen()) { e.preventDefault(); showError(form.dataset.errMissing); return; }
    if (!valid) { e.preventDefault(); return; }
    submit.disabled = true;
    submit.textContent = form.dataset.submitting;
  });
  // Coming back with the Back button restores a usable form.
  window.addEventListener("pageshow", function () {
    submit.disabled = false;
    submit.textContent = submitText;
  });
})();
