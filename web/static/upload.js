// Upload page: gather files from dropped folders (every entry, past Chromium's 100 per readEntries
// call), the folder picker, the file picker or a zip, keeping each file's path relative to what was
// dropped or picked so the top folder becomes the study; send them as one job in parts (50 files or
// 16 MB, as the mri-classify client does) with one progress bar, retrying a part that fails for a
// passing reason; list the files the service refused, then open the job page.
(function () {
  const form = document.getElementById("upload-form");
  if (!form) return;
  const el = (id) => document.getElementById(id);
  const csrf = document.querySelector('meta[name="csrf-token"]').content;

  const PART_FILES = 50;
  const PART_BYTES = 16 * 1024 * 1024;
  // Leave room for the multipart framing inside the service's per-request limit.
  const MAX_REQUEST = Math.floor((Number(form.dataset.maxUploadBytes) || 512 * 1024 * 1024) * 0.95);
  const MAX_PART_BYTES = Math.min(PART_BYTES, MAX_REQUEST);
  const RETRIES = 5, BASE_DELAY_MS = 1000, MAX_DELAY_MS = 30000;
  // Worth another try: busy or restarting service or proxy. A request that creates the job is
  // retried only when the service cannot have processed it (429, 503), so no second job is made.
  const RETRY = new Set([429, 502, 503, 504]), RETRY_UNSAFE = new Set([429, 503]);
  // Refusals about one file of a part: split the part to find it, and send the rest (as the client).
  const SPLITTABLE = new Set(["payload_too_large", "unsafe_zip", "nested_zip", "bad_zip", "zip_bomb",
                              "zip_too_large", "zip_too_many_files", "too_many_scans", "bad_request"]);
  // The desktop litter the service skips (web/ingest.py): not worth sending.
  const JUNK_NAMES = new Set([".ds_store", "thumbs.db", "desktop.ini", "ehthumbs.db", ".directory"]);
  const JUNK_DIRS = new Set(["__macosx", ".git", ".svn"]);

  let picked = new Map();  // relative path -> {file, path}
  let skipped = 0;
  let busy = false;
  let openJob = null;  // a job an upload stopped half-way left open: the next try adds to it

  const mb = (bytes) => bytes >= 1024 * 1024 ? `${(bytes / 1048576).toFixed(1)} MB` : `${Math.ceil(bytes / 1024)} KB`;
  const plural = (n, word) => `${n.toLocaleString()} ${word}${n === 1 ? "" : "s"}`;
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function isJunk(path) {
    const parts = path.split("/").filter(Boolean);
    if (!parts.length) return true;
    const name = parts[parts.length - 1].toLowerCase();
    return JUNK_NAMES.has(name) || name.startsWith("._") || parts.slice(0, -1).some((p) => JUNK_DIRS.has(p.toLowerCase()));
  }

  function study(path) {
    const parts = path.split("/");
    return parts.length > 1 ? parts[0] : "";
  }

  // ---------------------------------------------------------------- choosing files

  function add(items) {
    for (const item of items) {
      const path = (item.path || item.file.name).replace(/^\/+/, "");
      if (isJunk(path)) { skipped += 1; continue; }
      picked.set(path, {file: item.file, path: path});
    }
    showSelection();
  }

  function showSelection() {
    const items = [...picked.values()];
    const bytes = items.reduce((sum, item) => sum + item.file.size, 0);
    const studies = new Map();
    for (const item of items) studies.set(study(item.path), (studies.get(study(item.path)) || 0) + 1);
    el("selection").hidden = !items.length && !skipped;
    el("clear-button").hidden = !items.length;
    const zips = items.filter((item) => item.path.toLowerCase().endsWith(".zip")).length;
    el("selection-summary").textContent = items.length
      ? `${plural(items.length, "file")}, ${mb(bytes)}` +
        (zips ? ` (${plural(zips, "zip")}, expanded by the service)` : "") +
        `, in ${plural([...studies.keys()].filter(Boolean).length, "study folder")}` +
        (skipped ? `; ${skipped} system file(s) left out` : "") + "."
      : (skipped ? `${skipped} system file(s) left out; nothing to send.` : "");
    const list = el("selection-studies");
    list.replaceChildren();
    const named = [...studies.entries()].sort((a, b) => a[0] === "" ? 1 : b[0] === "" ? -1 : a[0].localeCompare(b[0]));
    for (const [name, count] of named.slice(0, 12)) {
      const li = document.createElement("li");
      li.textContent = `${name || "files outside a folder"}: ${plural(count, "file")}`;
      list.append(li);
    }
    if (named.length > 12) {
      const li = document.createElement("li");
      li.className = "muted";
      li.textContent = `and ${named.length - 12} more`;
      list.append(li);
    }
  }

  el("folder").addEventListener("change", function () {
    add([...this.files].map((file) => ({file: file, path: file.webkitRelativePath || file.name})));
    this.value = "";
  });
  el("files").addEventListener("change", function () {
    add([...this.files].map((file) => ({file: file, path: file.name})));
    this.value = "";
  });
  el("clear-button").addEventListener("click", function () {
    picked = new Map(); skipped = 0; openJob = null; showSelection(); say("");
    el("upload-button").textContent = "Upload and classify";
    el("refused").hidden = true;
  });

  // Every entry of a directory: readEntries hands them out in batches (Chromium: at most 100)
  // and says it is done with an empty batch.
  function readAll(reader) {
    return new Promise(function (resolve, reject) {
      const all = [];
      (function next() {
        reader.readEntries(function (batch) {
          if (!batch.length) { resolve(all); return; }
          all.push(...batch);
          next();
        }, reject);
      })();
    });
  }

  async function walk(entry, out) {
    if (entry.isFile) {
      const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
      out.push({file: file, path: (entry.fullPath || file.name).replace(/^\/+/, "")});
    } else if (entry.isDirectory) {
      for (const child of await readAll(entry.createReader())) await walk(child, out);
    }
  }

  async function dropped(transfer) {
    // Entries must be taken while the drop event runs: the list is emptied after it.
    const entries = [], loose = [];
    for (const item of transfer.items || []) {
      if (item.kind !== "file") continue;
      const entry = item.webkitGetAsEntry ? item.webkitGetAsEntry() : null;
      if (entry) entries.push(entry); else if (item.getAsFile()) loose.push({file: item.getAsFile()});
    }
    if (!entries.length && !loose.length) for (const file of transfer.files || []) loose.push({file: file});
    say("Reading what was dropped…");
    const out = [];
    try {
      for (const entry of entries) await walk(entry, out);
    } catch (error) {
      say(`Could not read a dropped folder: ${error.message || error}`, "error");
      return;
    }
    add([...out, ...loose]);
    say(out.length + loose.length ? "" : "Nothing to send in what was dropped.");
  }

  const zone = el("drop-zone");
  // A file dropped beside the zone must not make the browser leave the page to show it.
  for (const type of ["dragover", "drop"]) window.addEventListener(type, (event) => event.preventDefault());
  zone.addEventListener("dragover", function (event) {
    event.preventDefault();
    if (event.dataTransfer) event.dataTransfer.dropEffect = "copy";
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", function (event) {
    event.preventDefault();
    zone.classList.remove("over");
    if (!busy && event.dataTransfer) dropped(event.dataTransfer);
  });

  // ---------------------------------------------------------------- sending

  function say(text, cls) {
    el("upload-status").textContent = text;
    el("upload-status").className = cls || "muted";
  }

  class UploadError extends Error {
    constructor(status, code, detail) {
      super(detail || code || `HTTP ${status}`);
      this.status = status; this.code = code; this.detail = detail;
    }
  }

  function post(url, items, onProgress) {
    return new Promise(function (resolve) {
      const request = new XMLHttpRequest();
      request.open("POST", url);
      request.setRequestHeader("X-CSRFToken", csrf);
      request.setRequestHeader("Accept", "application/json");
      request.upload.onprogress = (event) => { if (event.lengthComputable && onProgress) onProgress(event.loaded / event.total); };
      request.onload = function () {
        let body = {};
        try { body = JSON.parse(request.responseText); } catch (error) { body = {}; }
        resolve({status: request.status, body: body, retryAfter: request.getResponseHeader("Retry-After")});
      };
      request.onerror = request.ontimeout = () => resolve({status: 0, body: {}, retryAfter: null});
      let data = null;
      if (items) {
        data = new FormData();
        for (const item of items) {
          data.append("paths", item.path);
          data.append("files", item.file, item.file.name);
        }
      }
      request.send(data);
    });
  }

  async function postWithRetry(url, items, idempotent, onProgress, what) {
    for (let attempt = 0; ; attempt++) {
      const answer = await post(url, items, onProgress);
      if (answer.status >= 200 && answer.status < 300) return answer.body;
      const again = answer.status === 0 ? idempotent : (idempotent ? RETRY : RETRY_UNSAFE).has(answer.status);
      if (!again || attempt >= RETRIES) {
        if (answer.status === 0) throw new UploadError(0, "network", "the service could not be reached");
        throw new UploadError(answer.status, answer.body.error, answer.body.detail);
      }
      const seconds = Number(answer.retryAfter);
      const delay = Number.isFinite(seconds) && answer.retryAfter !== null && answer.retryAfter !== ""
        ? Math.min(seconds * 1000, MAX_DELAY_MS)
        : Math.min(BASE_DELAY_MS * 2 ** attempt, MAX_DELAY_MS) * (0.5 + Math.random() / 2);
      const problem = answer.status ? `the service answered ${answer.status}` : "the connection failed";
      say(`${what}: ${problem}; trying again in ${Math.ceil(delay / 1000)} s (${attempt + 1} of ${RETRIES})`, "notice-text");
      await sleep(delay);
    }
  }

  function parts(items) {
    const out = [];
    let part = [], bytes = 0;
    for (const item of items) {
      if (part.length && (part.length >= PART_FILES || bytes + item.file.size > MAX_PART_BYTES)) {
        out.push(part); part = []; bytes = 0;
      }
      part.push(item); bytes += item.file.size;
    }
    if (part.length) out.push(part);
    return out;
  }

  function progress(state) {
    const done = state.doneBytes + state.currentBytes;
    const fraction = state.totalBytes ? done / state.totalBytes : state.doneFiles / state.totalFiles;
    el("upload-progress").value = Math.min(fraction, 1);
    const seconds = (Date.now() - state.started) / 1000;
    const rate = seconds > 1 ? done / seconds : 0;
    const left = rate > 0 ? (state.totalBytes - done) / rate : null;
    say(`Sent ${state.doneFiles.toLocaleString()} of ${plural(state.totalFiles, "file")} · ${mb(done)} of ${mb(state.totalBytes)}` +
        (rate ? ` · ${mb(rate)}/s` : "") + (left !== null && left >= 1 ? ` · about ${duration(left)} left` : ""));
  }

  function duration(seconds) {
    if (seconds < 90) return `${Math.ceil(seconds)} s`;
    if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
    return `${(seconds / 3600).toFixed(1)} h`;
  }

  async function sendPart(part, state) {
    const bytes = part.reduce((sum, item) => sum + item.file.size, 0);
    const url = state.job ? `/api/v1/jobs/${state.job}/files` : "/api/v1/jobs?open=1";
    state.partNumber += 1;
    try {
      const answer = await postWithRetry(url, part, Boolean(state.job), function (fraction) {
        state.currentBytes = fraction * bytes; progress(state);
      }, `Part ${state.partNumber}`);
      if (!state.job) state.job = answer.id;
      for (const item of part) state.sent.add(item.path);
    } catch (error) {
      state.currentBytes = 0;
      if (!(error instanceof UploadError) || !SPLITTABLE.has(error.code)) throw error;
      if (part.length > 1) {  // find the file it is about; the others go through
        const half = Math.floor(part.length / 2);
        await sendPart(part.slice(0, half), state);
        await sendPart(part.slice(half), state);
        return;
      }
      state.refused.push({path: part[0].path, reason: error.detail || error.code});
    }
    state.currentBytes = 0;
    state.doneBytes += bytes;
    state.doneFiles += part.length;
    progress(state);
  }

  function showRefused(state, next) {
    const box = el("refused");
    box.hidden = !state.refused.length;
    el("refused-title").textContent = `${plural(state.refused.length, "file")} refused by the service:`;
    const list = el("refused-list");
    list.replaceChildren();
    for (const item of state.refused) {
      const li = document.createElement("li"), path = document.createElement("code");
      path.textContent = item.path;
      li.append(path, document.createTextNode(` — ${item.reason}`));
      list.append(li);
    }
    el("refused-next").textContent = next || "";
  }

  function setBusy(value) {
    busy = value;
    for (const control of form.querySelectorAll("button, input")) control.disabled = value;
    zone.classList.toggle("disabled", value);
  }

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    if (busy) return;
    const items = [...picked.values()];
    if (!items.length) { say("Drop or choose a folder, some files or a zip first.", "error"); return; }
    const state = {job: openJob, sent: new Set(), totalFiles: items.length, totalBytes: items.reduce((s, i) => s + i.file.size, 0),
                   doneFiles: 0, doneBytes: 0, currentBytes: 0, partNumber: 0, refused: [], started: Date.now()};
    const fits = [];
    for (const item of items) {
      if (item.file.size > MAX_REQUEST) {
        state.refused.push({path: item.path, reason: `larger than the ${mb(MAX_REQUEST)} one request may carry`});
        state.doneFiles += 1; state.doneBytes += item.file.size;
      } else fits.push(item);
    }
    setBusy(true);
    el("refused").hidden = true;
    el("upload-progress-box").hidden = false;
    progress(state);
    try {
      for (const part of parts(fits)) await sendPart(part, state);
      if (state.job) {
        say("Sent everything; closing the job…");
        try {
          await postWithRetry(`/api/v1/jobs/${state.job}/close`, null, true, null, "Closing the job");
        } catch (error) {
          if (!(error instanceof UploadError) || error.status !== 409) throw error;  // 409: closed already
        }
        // The job page shows what was refused here.
        sessionStorage.setItem(`mri-upload-${state.job}`, JSON.stringify(
          {sent: state.totalFiles - state.refused.length, refused: state.refused}));
        el("upload-progress").value = 1;
        say(`Sent ${plural(state.totalFiles - state.refused.length, "file")}; opening job #${state.job}…`);
        window.location.href = `/jobs/${state.job}`;
        return;
      }
      showRefused(state, "Nothing was accepted, so no job was made.");
      say("");
    } catch (error) {
      // Keep what is left to send; a part sent again is harmless (the service skips a file it holds).
      const refusedPaths = new Set(state.refused.map((item) => item.path));
      picked = new Map(items.filter((i) => !state.sent.has(i.path) && !refusedPaths.has(i.path)).map((i) => [i.path, i]));
      openJob = state.job;
      showSelection();
      setBusy(false);
      el("upload-button").textContent = `Send the remaining ${plural(picked.size, "file")}`;
      say(`Upload stopped: ${error.message}.` + (state.job
        ? ` Job #${state.job} holds the ${plural(state.sent.size, "file")} sent so far and stays open; ` +
          "send the rest to it when the service is back." : ""), "error");
      showRefused(state, "");
      return;
    }
    setBusy(false);
  });
})();
