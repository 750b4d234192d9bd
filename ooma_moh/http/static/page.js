// The Music on hold page: shows the tenant's music and what callers hear; sends a chosen file, or a
// message recorded with the microphone, to be analysed as a draft (nothing changes for callers yet)
// and shows its warnings, its waveform with the silence trimmed, and plays it in phone or HD
// quality; puts background music under it (a new draft); saves the draft, restores the previous
// music, deletes; follows the status until the change is live. Below: the last 30 days' holds (a
// chart drawn here, a sentence, a table for screen readers) and "call my phone" (a test call placed
// to one of the tenant's phones and followed until it ends). No framework, no build.
"use strict";

(function () {
  const config = JSON.parse(document.getElementById("omh-config").textContent);
  const t = config.texts;
  const api = "/api/v1/tenants/" + encodeURIComponent(config.tenant) + "/moh";
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const form = $("moh-form"), save = $("save"), file = $("file"), disclaimer = $("disclaimer");
  const fileFields = $("file-fields"), progress = $("progress"), error = $("error"), status = $("status");
  const draftStatus = $("draft-status"), restore = $("restore");
  let current = null;   // the last body of GET …/moh
  let busy = false;     // a save, restore or deletion is under way
  let polling = null;
  let wanted = null;    // the file the admin chose last (null: none, or one refused in the browser)
  let sending = null;   // the file being sent for analysis
  let draft = null;     // the analysed draft: {id, file, body, mixed}
  let mixing = null;    // the draft whose voice is being put over music
  let recorder = null;  // the recording under way (see startRecording)
  const recordings = new WeakSet();  // the files that are recordings made in this page
  const waveforms = new Map();  // waveform URL (one per file version) -> promise of its JSON, null if it failed

  function format(text, values) {
    return text.replace(/\{(\w+)\}/g, (_, key) => (key in values ? values[key] : ""));
  }

  function decimal(value, digits) {
    const text = value.toFixed(digits);
    return config.lang === "fr" ? text.replace(".", ",") : text;
  }

  function megabytes(bytes) {
    return decimal(bytes / 1048576, 1) + (config.lang === "fr" ? " Mo" : " MB");
  }

  function duration(ms) {
    const total = Math.round(ms / 1000);
    if (total < 60) return total + " s";
    const minutes = Math.floor(total / 60), seconds = total % 60;
    return minutes + " min" + (seconds ? " " + String(seconds).padStart(2, "0") + " s" : "");
  }

  function when(iso) {
    const date = new Date(iso);
    if (isNaN(date.getTime())) return iso;
    return date.toLocaleString(config.lang === "fr" ? "fr-FR" : "en-GB", { dateStyle: "medium", timeStyle: "short" });
  }

  function element(tag, className, text) {
    const made = document.createElement(tag);
    if (className) made.className = className;
    if (text !== undefined) made.textContent = text;
    return made;
  }

  function svg(tag, attributes) {
    const made = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes)) made.setAttribute(name, String(value));
    return made;
  }

  function showError(text) { error.textContent = text || ""; }

  function apiError(status, body, recorded) {
    if (status === 0) return t.error_network;
    const code = body && body.error && body.error.code;
    if (status === 401) return t.error_unauthorized;
    if (recorded && code === "silent") return t.error_silent_recording;  // the microphone heard nothing
    if (code && t["error_" + code]) return t["error_" + code];
    const message = (body && body.error && body.error.message) || ("HTTP " + status);
    return format(t.error_other, { message: message });
  }

  function request(method, url, body, onProgress, headers) {
    return new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      xhr.open(method, url);
      xhr.setRequestHeader("X-CSRF-Token", config.csrf);
      for (const [name, value] of Object.entries(headers || {})) xhr.setRequestHeader(name, value);
      xhr.responseType = "text";
      if (onProgress) xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); };
      xhr.onload = () => {
        let parsed = null;
        try { parsed = xhr.responseText ? JSON.parse(xhr.responseText) : null; } catch (e) { parsed = null; }
        resolve({ status: xhr.status, body: parsed, header: (name) => xhr.getResponseHeader(name) });
      };
      xhr.onerror = () => resolve({ status: 0, body: null, header: () => null });
      xhr.ontimeout = () => resolve({ status: 0, body: null, header: () => null });
      xhr.send(body);
    });
  }

  function draftUrl(id) { return api + "/drafts/" + encodeURIComponent(id); }

  // ---- listening: one player per file, each with its quality choice -------------------------

  const players = [];

  function makePlayer(button, player, label, qualityName, sourceFor) {
    const me = {};
    const radios = Array.from(document.querySelectorAll("input[name=" + qualityName + "]"));
    const quality = () => (radios.find((radio) => radio.checked) || radios[0]).value;
    me.stop = () => { player.pause(); button.textContent = label; };
    me.forget = () => { me.stop(); player.removeAttribute("src"); player.hidden = true; };
    function play() {
      const source = sourceFor(quality());
      if (!source) return;
      if (player.getAttribute("src") !== source) player.setAttribute("src", source);
      for (const other of players) if (other !== me) other.stop();
      player.hidden = false;
      player.controls = true;
      player.play().then(() => { button.textContent = t.pause; }, (e) => {
        if (e && e.name === "AbortError") return;  // another quality was asked for meanwhile
        showError(format(t.error_other, { message: "audio" }));
      });
    }
    button.addEventListener("click", () => { if (!player.paused) me.stop(); else play(); });
    for (const radio of radios) {
      radio.addEventListener("change", () => {  // switch quality where the admin is listening
        if (!player.getAttribute("src")) return;
        const at = player.currentTime, playing = !player.paused;
        const source = sourceFor(quality());
        if (!source) return;
        player.setAttribute("src", source);
        if (playing) {
          player.addEventListener("loadedmetadata", () => { player.currentTime = at; }, { once: true });
          play();
        }
      });
    }
    player.addEventListener("ended", () => { button.textContent = label; });
    player.addEventListener("pause", () => { button.textContent = label; });
    players.push(me);
    return me;
  }

  const currentPlayer = makePlayer($("listen"), $("player"), t.listen, "current-quality", (quality) =>
    current && current.file
      ? api + "/audio?quality=" + quality + "&v=" + encodeURIComponent(current.file.sha256) : null);
  const draftPlayer = makePlayer($("draft-listen"), $("draft-player"), t.listen_draft, "draft-quality", (quality) =>
    draft ? draftUrl(draft.id) + "/audio?quality=" + quality : null);

  // ---- the analysis: warnings, waveform with the trimmed silence, key figures ----------------

  function waveform(url) {
    if (!waveforms.has(url)) {
      waveforms.set(url, request("GET", url, null).then((answer) => (answer.status === 200 ? answer.body : null)));
    }
    return waveforms.get(url);
  }

  function drawWave(figure, prefix, analysis, wave) {
    const trimmed = (analysis && analysis.silence_trimmed_ms) || {};
    const start = Math.max(0, trimmed.start || 0), end = Math.max(0, trimmed.end || 0);
    const sound = Math.max(1, wave.duration_ms);
    const total = start + sound + end;
    const W = 1000, H = 120, mid = H / 2;
    const x0 = (W * start) / total, x1 = (W * (start + sound)) / total;
    const labels = [];
    if (start > 0) labels.push(["trim-start", format(t.trimmed_start, { seconds: decimal(start / 1000, 1) })]);
    if (end > 0) labels.push(["trim-end", format(t.trimmed_end, { seconds: decimal(end / 1000, 1) })]);
    const alt = [format(t.wave_alt, { duration: duration(sound) })].concat(labels.map((l) => l[1] + ".")).join(" ");
    const drawing = svg("svg", {
      viewBox: "0 0 " + W + " " + H, preserveAspectRatio: "none", class: "waveform", role: "img",
      "aria-label": alt,
    });
    const hatch = prefix + "-hatch";
    const pattern = svg("pattern", {
      id: hatch, width: 10, height: 10, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)",
    });
    pattern.append(svg("rect", { class: "hatch-ground", width: 10, height: 10 }));
    pattern.append(svg("line", { class: "hatch-line", x1: 0, y1: 0, x2: 0, y2: 10 }));
    const defs = svg("defs", {});
    defs.append(pattern);
    drawing.append(defs);
    if (start > 0) drawing.append(svg("rect", { class: "silence silence-start", x: 0, y: 0, width: x0, height: H, fill: "url(#" + hatch + ")" }));
    if (end > 0) drawing.append(svg("rect", { class: "silence silence-end", x: x1, y: 0, width: W - x1, height: H, fill: "url(#" + hatch + ")" }));
    drawing.append(svg("line", { class: "axis", x1: 0, y1: mid, x2: W, y2: mid }));
    const peaks = wave.peaks || [];
    if (peaks.length) {
      const step = (x1 - x0) / peaks.length, top = [], bottom = [];
      peaks.forEach(([low, high], i) => {
        const x = (x0 + (i + 0.5) * step).toFixed(1);
        const hi = Math.max(high, low + 0.01);  // a flat stretch still shows as a thin line
        top.push(x + " " + (mid - hi * mid).toFixed(1));
        bottom.push(x + " " + (mid - low * mid).toFixed(1));
      });
      drawing.append(svg("path", { class: "peaks", d: "M" + top.join("L") + "L" + bottom.reverse().join("L") + "Z" }));
    }
    const caption = element("figcaption");
    for (const [className, text] of labels) caption.append(element("span", "trim " + className, text));
    figure.replaceChildren(drawing, caption);
  }

  function renderAnalysis(container, prefix, analysis, waveUrl, key) {
    if (container.dataset.key === key) return;  // already shown for this file
    container.dataset.key = key;
    container.replaceChildren();
    if (analysis) {
      const warnings = analysis.warnings || [];
      if (warnings.length) {
        const list = element("ul", "warnings");
        list.setAttribute("aria-label", t.warnings_label);
        for (const code of warnings) {
          const item = element("li", "", t["warning_" + code] || code);
          item.dataset.code = code;
          list.append(item);
        }
        container.append(list);
      } else {
        container.append(element("p", "no-warnings", t.no_warnings));
      }
    }
    const figure = element("figure", "wave");
    container.append(figure);
    if (analysis) {
      const details = element("details", "figures");
      details.append(element("summary", "", t.figures));
      const facts = element("ul");
      facts.append(element("li", "", format(t.figure_duration, { duration: duration(analysis.duration_ms) })));
      if (typeof analysis.loudness_lufs_in === "number" && typeof analysis.loudness_lufs_out === "number") {
        facts.append(element("li", "", format(t.figure_loudness, {
          before: decimal(analysis.loudness_lufs_in, 1), after: decimal(analysis.loudness_lufs_out, 1),
        })));
      }
      if (analysis.loop_seam === "crossfaded") facts.append(element("li", "", t.figure_loop));
      details.append(facts);
      container.append(details);
    }
    waveform(waveUrl).then((wave) => {
      if (wave && container.dataset.key === key) drawWave(figure, prefix, analysis, wave);
    });
  }

  function clearAnalysis(container) {
    delete container.dataset.key;
    container.replaceChildren();
  }

  // ---- the page's state -------------------------------------------------------------------

  function chosenSetting() {
    const checked = form.querySelector("input[name=setting]:checked");
    return checked ? checked.value : "default";
  }

  function refreshControls() {
    const wantsFile = chosenSetting() === "file";
    fileFields.hidden = !wantsFile;
    const hasFile = current && current.setting === "file";
    const hasPrevious = Boolean(current && current.previous);
    $("disclaimer-box").hidden = !(wantsFile || hasPrevious);
    let ready;
    if (wantsFile) {
      ready = Boolean(draft && draft.file === wanted && !sending && !mixing && !recorder && disclaimer.checked);
    } else {
      ready = Boolean(hasFile);
    }
    save.disabled = busy || !ready;
    recordButton.hidden = !canRecord || Boolean(recorder && recorder.media);
    recordButton.disabled = busy || Boolean(recorder);  // while the browser asks for the microphone
    recordButton.textContent = wanted && recordings.has(wanted) ? t.record_again : t.record;
    $("record-hint").hidden = !canRecord;
    recorderPanel.hidden = !(recorder && recorder.media);
    const mix = $("mix");
    mix.hidden = !(draft && !draft.mixed && draft.file === wanted);
    $("mix-add").disabled = busy || Boolean(sending || mixing || recorder);
    $("bed-current-choice").hidden = !hasFile;
    if (!hasFile && $("bed-current").checked) $("bed-default").checked = true;
    restore.disabled = busy || !hasPrevious || !disclaimer.checked;
    $("restore-hint").hidden = disclaimer.checked;
  }

  function render(body) {
    current = body;
    const hasFile = body.setting === "file" && body.file;
    $("current").hidden = !hasFile;
    $("current-none").hidden = Boolean(hasFile);
    if (hasFile) {
      $("current-name").textContent = body.file.name;
      $("current-details").textContent = "(" + megabytes(body.file.size) + ", " + duration(body.file.duration_ms) + ")";
      renderAnalysis($("current-analysis"), "current", body.analysis,
        api + "/waveform?v=" + encodeURIComponent(body.file.sha256), body.file.sha256);
    } else {
      currentPlayer.forget();
      clearAnalysis($("current-analysis"));
    }
    const previous = body.previous;
    $("previous").hidden = !previous;
    if (previous) {
      $("previous-text").textContent = format(t.previous, {
        name: previous.original_name,
        details: megabytes(previous.size) + ", " + duration(previous.duration_ms),
        date: when(previous.uploaded_at),
      });
    }
    if (!busy) {
      $("setting-" + (hasFile ? "file" : "default")).checked = true;
    }
    const state = body.status.state;
    if (state === "live") status.textContent = hasFile ? t.status_live_file : t.status_live_default;
    else if (state === "error") status.textContent = format(t.status_error, { reason: body.status.reason || "" });
    else status.textContent = t["status_" + state] || state;
    status.dataset.state = state;
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

  // ---- recording a message with the microphone: it becomes a draft like a chosen file --------

  const canRecord = Boolean(navigator.mediaDevices && navigator.mediaDevices.getUserMedia && window.MediaRecorder);
  const MAX_RECORDING_MS = 5 * 60 * 1000;  // it stops by itself; the size is checked before sending
  const recordButton = $("record"), recorderPanel = $("recorder"), stopButton = $("record-stop");
  const timer = $("record-time"), meter = $("record-level");
  // what MediaRecorder can write, best first, and the file name's extension the server sniffs anyway
  const RECORDING_TYPES = [["audio/webm;codecs=opus", "webm"], ["audio/ogg;codecs=opus", "ogg"], ["audio/webm", "webm"],
    ["audio/mp4", "m4a"]];

  function clock(ms) {
    const seconds = Math.floor(ms / 1000);
    return Math.floor(seconds / 60) + ":" + String(seconds % 60).padStart(2, "0");
  }

  function micError(e) {
    const name = e && e.name;
    if (name === "NotAllowedError" || name === "SecurityError") return t.mic_denied;
    if (name === "NotFoundError" || name === "OverconstrainedError") return t.mic_missing;
    if (name === "NotReadableError" || name === "AbortError") return t.mic_busy;
    return format(t.error_other, { message: name || "microphone" });
  }

  function level(analyser, samples) {
    analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const x of samples) sum += x * x;
    const db = 20 * Math.log10(Math.sqrt(sum / samples.length) + 1e-9);
    return Math.max(0, Math.min(1, (db + 60) / 60));  // -60 dBFS .. 0 dBFS
  }

  async function startRecording() {
    if (recorder || busy) return;
    showError("");
    const Context = window.AudioContext || window.webkitAudioContext;
    const audio = Context ? new Context() : null;  // made in the click, so it may run
    const session = { stream: null, audio: audio, media: null, chunks: [], started: 0, ticker: null, discard: false };
    recorder = session;
    draftStatus.textContent = t.record_waiting;
    refreshControls();
    let stream;
    try {
      // what the microphone hears, unprocessed: the server evens the loudness out itself
      stream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
      });
    } catch (e) {
      if (audio) audio.close().catch(() => {});
      if (recorder === session) recorder = null;
      if (draftStatus.textContent === t.record_waiting) draftStatus.textContent = "";
      refreshControls();
      if (!session.discard) { showError(micError(e)); recordButton.focus(); }
      return;
    }
    session.stream = stream;
    if (session.discard) { finishRecording(session); return; }  // given up while the browser asked
    const [type, extension] = RECORDING_TYPES.find(([candidate]) => MediaRecorder.isTypeSupported(candidate))
      || ["", "webm"];
    session.extension = extension;
    try {
      session.media = new MediaRecorder(stream, type ? { mimeType: type, audioBitsPerSecond: 64000 } : {});
    } catch (e) {
      finishRecording(session);
      showError(micError(e));
      return;
    }
    session.media.addEventListener("dataavailable", (event) => { if (event.data && event.data.size) session.chunks.push(event.data); });
    session.media.addEventListener("stop", () => finishRecording(session));
    let analyser = null, samples = null;
    if (audio) {
      analyser = audio.createAnalyser();
      analyser.fftSize = 2048;
      audio.createMediaStreamSource(stream).connect(analyser);
      samples = new Float32Array(analyser.fftSize);
      audio.resume().catch(() => {});
    }
    session.media.start(1000);
    session.started = performance.now();
    draftStatus.textContent = "";
    timer.textContent = clock(0);
    meter.value = 0;
    refreshControls();
    stopButton.focus();
    session.ticker = setInterval(() => {
      const elapsed = performance.now() - session.started;
      timer.textContent = clock(elapsed);
      if (analyser) meter.value = level(analyser, samples);
      if (elapsed >= MAX_RECORDING_MS) stopRecording(false);
    }, 100);
  }

  function stopRecording(discard) {
    const session = recorder;
    if (!session) return;
    if (discard) session.discard = true;
    if (!session.media) return;  // the browser is still asking for the microphone: given up when it answers
    clearInterval(session.ticker);
    session.elapsed = performance.now() - session.started;
    if (session.media.state !== "inactive") session.media.stop();  // its last data, then "stop"
    else finishRecording(session);
  }

  function finishRecording(session) {
    if (session.finished) return;
    session.finished = true;
    clearInterval(session.ticker);
    if (session.stream) for (const track of session.stream.getTracks()) track.stop();
    if (session.audio) session.audio.close().catch(() => {});
    if (recorder === session) recorder = null;
    meter.value = 0;
    refreshControls();
    if (session.discard || !session.media) return;
    recordButton.focus();
    const blob = new Blob(session.chunks, { type: session.media.mimeType || "audio/webm" });
    const size = megabytes(blob.size);
    if (blob.size > config.max_bytes) {  // as for a chosen file: refused here, nothing sent
      showError(format(t.recording_too_large, { size: size }));
      wanted = null;
      forgetDraft(true);
      refreshControls();
      return;
    }
    const made = new File([blob], "message." + session.extension, { type: blob.type });
    recordings.add(made);
    file.value = "";
    $("file-chosen").textContent = format(t.recorded, { duration: duration(session.elapsed) });
    wanted = made;
    analyse();
    refreshControls();
  }

  recordButton.addEventListener("click", startRecording);
  stopButton.addEventListener("click", () => stopRecording(false));

  // ---- drafts: a chosen file is analysed at once; saving commits it --------------------------

  function renderDraft() {
    $("draft").hidden = !draft;
    $("draft").dataset.draft = draft ? draft.id : "";
    if (!draft) {
      draftPlayer.forget();
      clearAnalysis($("draft-analysis"));
      return;
    }
    const body = draft.body;
    $("draft-name").textContent = body.original_name;
    $("draft-details").textContent = "(" + megabytes(body.size) + ", " + duration(body.duration_ms) + ")";
    renderAnalysis($("draft-analysis"), "draft", body.analysis, draftUrl(draft.id) + "/waveform", draft.id);
  }

  function forgetDraft(discard) {
    if (draft && discard) request("DELETE", draftUrl(draft.id), null);  // frees one of the tenant's drafts
    draft = null;
    if (!sending) draftStatus.textContent = "";
    renderDraft();
  }

  function forgetChoice() {
    wanted = null;
    file.value = "";
    $("file-chosen").textContent = "";
  }

  async function analyse() {
    if (sending || mixing || !wanted || (draft && draft.file === wanted)) return;
    const chosen = wanted;
    sending = chosen;
    forgetDraft(true);
    progress.hidden = false;
    progress.value = 0;
    draftStatus.textContent = t.draft_sending;
    refreshControls();
    const body = new FormData();
    body.append("file", chosen, chosen.name);
    const answer = await request("POST", api + "/drafts", body, (fraction) => {
      progress.value = Math.round(fraction * 100);
    });
    sending = null;
    progress.hidden = true;
    draftStatus.textContent = "";
    if (chosen !== wanted) {  // another file was chosen meanwhile: only that one counts
      if (answer.status === 201) request("DELETE", draftUrl(answer.body.draft), null);
      if (wanted) { analyse(); return; }
    } else if (answer.status === 201) {
      draft = { id: answer.body.draft, file: chosen, body: answer.body };
      renderDraft();
      draftStatus.textContent = t.draft_ready;
    } else {
      showError(apiError(answer.status, answer.body, recordings.has(chosen)));
    }
    refreshControls();
  }

  // ---- background music under a draft (a recorded message): a new draft replaces it ----------

  async function addMusic() {
    if (!draft || draft.mixed || sending || mixing || recorder || busy) return;
    const voice = draft;
    const bed = (form.querySelector("input[name=bed]:checked") || $("bed-default")).value;
    mixing = voice;
    showError("");
    draftStatus.textContent = t.mix_sending;
    refreshControls();
    const answer = await request("POST", draftUrl(voice.id) + "/mix", JSON.stringify({ bed: bed, bed_level_db: -18 }),
      null, { "Content-Type": "application/json" });
    mixing = null;
    draftStatus.textContent = "";
    if (draft !== voice || wanted !== voice.file) {  // another file or recording meanwhile: only that one counts
      if (answer.status === 201) request("DELETE", draftUrl(answer.body.draft), null);
      analyse();
    } else if (answer.status === 201) {
      request("DELETE", draftUrl(voice.id), null);  // the voice alone will not be saved: free it
      draftPlayer.forget();
      draft = { id: answer.body.draft, file: voice.file, body: answer.body, mixed: true };
      renderDraft();
      draftStatus.textContent = t.mix_ready;
      refreshControls();
      $("draft-listen").focus();  // the mix controls are gone: go on with listening to the result
    } else {
      showError(apiError(answer.status, answer.body));
      if (answer.status === 404 && answer.body && answer.body.error && answer.body.error.code === "no_draft") {
        forgetDraft(false);  // expired: record or choose it again
        forgetChoice();
      }
    }
    refreshControls();
  }
  $("mix-add").addEventListener("click", addMusic);

  async function saveDraft() {
    if (!draft) { showError(t.choose_file); return; }
    if (!disclaimer.checked) { showError(t.accept_disclaimer); return; }
    const body = new FormData();
    body.append("draft", draft.id);
    body.append("disclaimer", "accepted");
    body.append("disclaimer_version", config.disclaimer_version);
    busy = true; refreshControls(); showError("");
    status.textContent = t.status_publishing; status.dataset.state = "saving";
    const answer = await request("PUT", api, body);
    busy = false;
    if (answer.status !== 201) {
      showError(apiError(answer.status, answer.body));
      if (answer.status === 404) { forgetDraft(false); forgetChoice(); }  // expired: choose it again
      await load();
      return;
    }
    forgetDraft(false);  // saved: the server has no draft left to discard
    forgetChoice();
    disclaimer.checked = false;
    render(answer.body);
  }

  async function restorePrevious() {
    if (!disclaimer.checked) { showError(t.accept_disclaimer); return; }
    const body = new FormData();
    body.append("disclaimer", "accepted");
    body.append("disclaimer_version", config.disclaimer_version);
    busy = true; refreshControls(); showError("");
    status.textContent = t.status_publishing; status.dataset.state = "restoring";
    const answer = await request("POST", api + "/restore", body);
    busy = false;
    if (answer.status !== 201) {
      showError(apiError(answer.status, answer.body));
      await load();
      return;
    }
    disclaimer.checked = false;
    currentPlayer.forget();
    render(answer.body);
  }
  restore.addEventListener("click", restorePrevious);

  async function remove() {
    if (!window.confirm(t.confirm_delete)) return;
    busy = true; refreshControls(); showError("");
    const answer = await request("DELETE", api, null);
    busy = false;
    if (answer.status !== 204) { showError(apiError(answer.status, answer.body) + " " + t.kept); refreshControls(); return; }
    forgetChoice();
    forgetDraft(true);
    disclaimer.checked = false;
    $("setting-default").checked = true;
    await load();
  }
  $("delete").addEventListener("click", remove);

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (save.disabled) return;
    if (chosenSetting() === "file") saveDraft(); else remove();
  });
  form.addEventListener("change", (event) => {
    if (recorder && (event.target === file || chosenSetting() !== "file")) stopRecording(true);  // given up
    if (event.target === file) {
      const chosen = file.files[0] || null;
      showError("");
      $("file-chosen").textContent = chosen ? chosen.name + " (" + megabytes(chosen.size) + ")" : "";
      if (chosen && chosen.size > config.max_bytes) {
        showError(format(t.file_too_large, { size: megabytes(chosen.size) }));
        wanted = null;
        forgetDraft(true);
      } else {
        wanted = chosen;
        if (chosen) analyse(); else forgetDraft(true);
      }
    }
    refreshControls();
  });

  // leaving the page: its draft will never be saved, free it now rather than in an hour
  window.addEventListener("pagehide", () => {
    stopRecording(true);
    if (!draft) return;
    fetch(draftUrl(draft.id), {
      method: "DELETE", headers: { "X-CSRF-Token": config.csrf }, keepalive: true, credentials: "same-origin",
    }).catch(() => {});
    draft = null;
  });
  window.addEventListener("pageshow", (event) => {
    if (event.persisted) { forgetChoice(); renderDraft(); refreshControls(); }
  });

  // ---- hold statistics: the last 30 days as a chart, one sentence and a table ---------------

  const STATS_DAYS = 30;
  const locale = config.lang === "fr" ? "fr-FR" : "en-GB";

  function count(n) { return n.toLocaleString(locale); }

  function dayLabel(iso) {  // the API's days are UTC days
    return new Date(iso + "T00:00:00Z").toLocaleDateString(locale, { day: "numeric", month: "short", timeZone: "UTC" });
  }

  function holdsSentence(total, days) {
    if (!total.holds) return format(t.holds_none, { days: days });
    return [
      total.holds === 1 ? format(t.holds_count_one, { days: days })
        : format(t.holds_count, { count: count(total.holds), days: days }),
      format(t.holds_median, { wait: duration(total.median_s * 1000) }),
      format(t.holds_hung_up, { percent: count(Math.round((100 * total.hung_up) / total.holds)) }),
    ].join(" · ");
  }

  function drawHolds(days) {
    const W = 600, H = 170, left = 40, right = 48, top = 14, bottom = 24;
    const height = H - top - bottom, step = (W - left - right) / days.length, base = top + height;
    const most = Math.max(1, ...days.map((day) => day.holds));
    const longest = Math.max(1, ...days.map((day) => day.median_s));
    const drawing = svg("svg", {
      viewBox: "0 0 " + W + " " + H, class: "holds-drawing", role: "img",
      "aria-label": format(t.chart_alt, { days: days.length }),
    });
    drawing.append(svg("line", { class: "axis", x1: left, y1: base, x2: W - right, y2: base }));
    const label = (x, y, anchor, className, text) => {
      const made = svg("text", { x: x, y: y, "text-anchor": anchor, class: className });
      made.textContent = text;
      drawing.append(made);
    };
    label(left - 6, top + 4, "end", "scale scale-holds", count(most));
    label(left - 6, base, "end", "scale scale-holds", "0");
    label(W - right + 6, top + 4, "start", "scale scale-median", duration(longest * 1000));
    label(left, H - 6, "start", "scale", dayLabel(days[0].date));
    label(W - right, H - 6, "end", "scale", dayLabel(days[days.length - 1].date));
    let line = "", previous = false;
    days.forEach((day, i) => {
      const tall = (height * day.holds) / most;
      drawing.append(svg("rect", {
        class: "hold-bar", x: (left + i * step + step * 0.15).toFixed(1), y: (base - tall).toFixed(1),
        width: (step * 0.7).toFixed(1), height: tall.toFixed(1), "data-date": day.date, "data-holds": day.holds,
      }));
      if (!day.holds) { previous = false; return; }  // no hold, no wait: the line breaks there
      const x = (left + (i + 0.5) * step).toFixed(1), y = (base - (height * day.median_s) / longest).toFixed(1);
      line += (previous ? "L" : "M") + x + " " + y;
      previous = true;
      drawing.append(svg("circle", {
        class: "median-dot", cx: x, cy: y, r: 3.5, "data-date": day.date, "data-median": day.median_s,
      }));
    });
    if (line) drawing.insertBefore(svg("path", { class: "median-line", d: line }), drawing.querySelector("circle"));
    $("holds-drawing").replaceChildren(drawing);
    $("holds-table").tBodies[0].replaceChildren(...days.map((day) => {
      const row = element("tr");
      row.append(element("th", "", dayLabel(day.date)), element("td", "", count(day.holds)),
        element("td", "", day.holds ? duration(day.median_s * 1000) : "–"));
      row.firstChild.scope = "row";
      return row;
    }));
  }

  async function loadHolds() {
    const answer = await request("GET", api + "/stats?days=" + STATS_DAYS, null);
    if (answer.status !== 200 || !answer.body) return;  // the page works without its statistics
    const { days, total } = answer.body;
    $("holds-sentence").textContent = holdsSentence(total, days.length);
    $("holds-chart").hidden = !total.holds;
    if (total.holds) drawHolds(days);
    $("holds").hidden = false;
  }

  // ---- "call my phone": a test call to one of the tenant's phones, followed until it ends ----

  const callButton = $("call"), callStatus = $("call-status"), phones = $("call-endpoint");
  const CALL_STATES = { ringing: t.call_ringing, playing: t.call_playing, ended: t.call_ended };
  const CALL_FAILURES = {
    busy: t.call_busy, "no answer": t.call_no_answer, unreachable: t.call_unreachable, "ARI down": t.call_ari_down,
  };
  let calling = null;  // the test call being followed: {id, timer}

  function showCall(state, text) {
    callStatus.dataset.state = state;
    callStatus.textContent = text;
  }

  function callDone() {
    if (calling) clearTimeout(calling.timer);
    calling = null;
    callButton.removeAttribute("aria-disabled");  // never disabled: the keyboard's focus stays on it
  }

  function followCall(call) {
    call.timer = setTimeout(async () => {
      const answer = await request("GET", api + "/test-call/" + encodeURIComponent(call.id), null);
      if (calling !== call) return;
      if (answer.status === 200 && answer.body) {
        const { state, reason } = answer.body;
        showCall(state, state === "failed" ? CALL_FAILURES[reason] || t.call_failed : CALL_STATES[state] || state);
        if (state === "ended" || state === "failed") { callDone(); return; }
      } else if (answer.status !== 0) {  // not the network: the server cannot say any more
        showCall("failed", apiError(answer.status, answer.body));
        callDone();
        return;
      }
      followCall(call);
    }, 1000);
  }

  async function placeCall() {
    if (calling || !phones.value) return;
    const call = { id: null, timer: null };
    calling = call;
    callButton.setAttribute("aria-disabled", "true");
    showCall("placing", t.call_placing);
    const answer = await request("POST", api + "/test-call", JSON.stringify({ endpoint: phones.value }), null,
      { "Content-Type": "application/json" });
    if (calling !== call) return;
    if (answer.status === 202 && answer.body && answer.body.call) {
      call.id = answer.body.call;
      showCall("ringing", t.call_ringing);
      followCall(call);
      return;
    }
    callDone();
    if (answer.status === 429) {  // one at a time, 5 an hour: say when it can be tried again
      const seconds = parseInt(answer.header("Retry-After") || "", 10);
      showCall("refused", format(t.call_too_soon, { wait: duration(1000 * Math.max(1, seconds || 60)) }));
    } else if (answer.status === 404) {
      showCall("refused", t.call_unknown_endpoint);
    } else if (answer.status === 503) {
      showCall("refused", t.call_ari_down);
    } else {
      showCall("refused", apiError(answer.status, answer.body));
    }
  }
  callButton.addEventListener("click", placeCall);

  async function loadPhones() {
    const answer = await request("GET", "/api/v1/tenants/" + encodeURIComponent(config.tenant) + "/endpoints", null);
    const names = answer.status === 200 && answer.body && Array.isArray(answer.body.endpoints)
      ? answer.body.endpoints : [];
    phones.replaceChildren(...names.map((name) => {
      const option = element("option", "", name);
      option.value = name;
      return option;
    }));
    $("test-call").hidden = !names.length;  // no phone of the tenant's own: nothing to call
  }
  window.addEventListener("pagehide", callDone);

  load();
  loadHolds();
  loadPhones();
})();
