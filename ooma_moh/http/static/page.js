// The Music on hold page: shows the tenant's music, uploads a file with a progress bar, plays
// it back, deletes it, and follows the status until the change is live. No framework, no build.
"use strict";

(function () {
  const config = JSON.parse(document.getElementById("omh-config").textContent);
  const t = config.texts;
  const api = "/api/v1/tenants/" + encodeURIComponent(config.tenant) + "/moh";
  const $ = (id) => document.getElementById(id);
  const form = $("moh-form"), save = $("save"), file = $("file"), disclaimer = $("disclaimer");
  const fileFields = $("file-fields"), progress = $("progress"), error = $("error"), status = $("status");
  const player = $("player"), listen = $("listen");
  let current = null;   // the last body of GET …/moh
  let busy = false;     // an upload or deletion is under way
  let polling = null;

  function format(text, values) {
    return text.replace(/\{(\w+)\}/g, (_, key) => (key in values ? values[key] : ""));
  }

  function megabytes(bytes) {
    const value = (bytes / 1048576).toFixed(1);
    return (config.lang === "fr" ? value.replace(".", ",") + " Mo" : value + " MB");
  }

  function showError(text) { error.textContent = text || ""; }

  function apiError(status, body) {
    if (status === 0) return t.error_network;
    const code = body && body.error && body.error.code;
    if (status === 401) return t.error_unauthorized;
    if (code && t["error_" + code]) return t["error_" + code];
    const message = (body && body.error && body.error.message) || ("HTTP " + status);
    return format(t.error_other, { message: message });
  }

  function request(method, url, body, onProgress) {
    return new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      xhr.open(method, url);
      xhr.setRequestHeader("X-CSRF-Token", config.csrf);
      xhr.responseType = "text";
      if (onProgress) xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); };
      xhr.onload = () => {
        let parsed = null;
        try { parsed = xhr.responseText ? JSON.parse(xhr.responseText) : null; } catch (e) { parsed = null; }
        resolve({ status: xhr.status, body: parsed });
      };
      xhr.onerror = () => resolve({ status: 0, body: null });
      xhr.ontimeout = () => resolve({ status: 0, body: null });
      xhr.send(body);
    });
  }

  function chosenSetting() {
    const checked = form.querySelector("input[name=setting]:checked");
    return checked ? checked.value : "default";
  }

  function refreshControls() {
    const wantsFile = chosenSetting() === "file";
    fileFields.hidden = !wantsFile;
    const hasFile = current && current.setting === "file";
    let ready;
    if (wantsFile) ready = file.files.length === 1 && file.files[0].size <= config.max_bytes && disclaimer.checked;
    else ready = Boolean(hasFile);
    save.disabled = busy || !ready;
  }

  function render(body) {
    current = body;
    const hasFile = body.setting === "file" && body.file;
    $("current").hidden = !hasFile;
    $("current-none").hidden = Boolean(hasFile);
    if (hasFile) {
      $("current-name").textContent = body.file.name;
      $("current-details").textContent = "(" + megabytes(body.file.size) + ", " +
        Math.round(body.file.duration_ms / 1000) + " s)";
    } else {
      stopPlaying();
    }
    if (!busy) {
      $("setting-" + (hasFile ? "file" : "default")).checked = true;
    }
    const state = body.status.state;
    if (state === "live") status.textContent = hasFile ? t.status_live_file : t.status_live_default;
    else if (state === "error") status.textContent = format(t.status_error, { reason: body.status.reason || "" });
    else status.textContent = t["status_" + state] || state;
    status.dataset.state = state;
    if (!busy && (state === "live" || state === "error")) progress.hidden = true;  // shown until live
    refreshControls();
    if (state === "converting" || state === "publishing") schedulePoll();
  }

  function schedulePoll() {
    if (polling) return;
    polling = setTimeout(async () => {
      polling = null;
      await load();
    }, 1000);
  }

  let latest = 0;  // only the newest GET may render: a slower older answer must not undo it
  async function load() {
    const mine = ++latest;
    const answer = await request("GET", api, null);
    if (mine !== latest) return;
    if (answer.status === 200) render(answer.body);
    else showError(apiError(answer.status, answer.body));
  }

  function stopPlaying() {
    player.pause();
    listen.textContent = t.listen;
  }

  listen.addEventListener("click", () => {
    if (!player.paused) { stopPlaying(); return; }
    const source = api + "/audio?v=" + encodeURIComponent(current.file.sha256);
    if (player.getAttribute("src") !== source) player.setAttribute("src", source);
    player.hidden = false;
    player.controls = true;
    player.play().then(() => { listen.textContent = t.pause; },
                       () => showError(format(t.error_other, { message: "audio" })));
  });
  player.addEventListener("ended", () => { listen.textContent = t.listen; });
  player.addEventListener("pause", () => { listen.textContent = t.listen; });

  async function remove() {
    if (!window.confirm(t.confirm_delete)) return;
    busy = true; refreshControls(); showError("");
    const answer = await request("DELETE", api, null);
    busy = false;
    if (answer.status !== 204) { showError(apiError(answer.status, answer.body) + " " + t.kept); refreshControls(); return; }
    file.value = ""; disclaimer.checked = false; $("file-chosen").textContent = "";
    $("setting-default").checked = true;
    await load();
  }
  $("delete").addEventListener("click", remove);

  async function upload() {
    const chosen = file.files[0];
    if (!chosen) { showError(t.choose_file); return; }
    if (chosen.size > config.max_bytes) { showError(format(t.file_too_large, { size: megabytes(chosen.size) })); return; }
    if (!disclaimer.checked) { showError(t.accept_disclaimer); return; }
    const body = new FormData();
    body.append("disclaimer", "accepted");
    body.append("disclaimer_version", config.disclaimer_version);
    body.append("file", chosen, chosen.name);
    busy = true; refreshControls(); showError("");
    progress.hidden = false; progress.value = 0;
    status.textContent = t.status_converting; status.dataset.state = "uploading";
    const answer = await request("PUT", api, body, (fraction) => { progress.value = Math.round(fraction * 100); });
    busy = false;
    if (answer.status !== 201) {
      progress.hidden = true;
      showError(apiError(answer.status, answer.body));
      await load();
      return;
    }
    file.value = ""; disclaimer.checked = false; $("file-chosen").textContent = "";
    render(answer.body);
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (save.disabled) return;
    if (chosenSetting() === "file") upload(); else remove();
  });
  form.addEventListener("change", (event) => {
    if (event.target === file) {
      const chosen = file.files[0];
      showError("");
      $("file-chosen").textContent = chosen ? chosen.name + " (" + megabytes(chosen.size) + ")" : "";
      if (chosen && chosen.size > config.max_bytes) showError(format(t.file_too_large, { size: megabytes(chosen.size) }));
    }
    refreshControls();
  });

  load();
})();
