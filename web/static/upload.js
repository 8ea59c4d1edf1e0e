// Upload picked files (with their folder-relative paths) as one job, in several requests when large.
(function () {
  const form = document.getElementById("upload-form");
  if (!form) return;
  const status = document.getElementById("upload-status");
  const bar = document.getElementById("upload-progress");
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const MAX_FILES_PER_REQUEST = 500;
  const maxBytes = Math.floor((Number(form.dataset.maxUploadBytes) || 512 * 1024 * 1024) * 0.9);

  function pickedFiles() {
    const items = [];
    for (const id of ["folder", "files"]) {
      for (const file of document.getElementById(id).files) {
        items.push({file: file, path: file.webkitRelativePath || file.name});
      }
    }
    return items;
  }

  function batches(items) {
    const out = [];
    let current = [], bytes = 0;
    for (const item of items) {
      if (current.length && (current.length >= MAX_FILES_PER_REQUEST || bytes + item.file.size > maxBytes)) {
        out.push(current); current = []; bytes = 0;
      }
      current.push(item); bytes += item.file.size;
    }
    if (current.length) out.push(current);
    return out;
  }

  async function post(url, items) {
    const data = new FormData();
    for (const item of items || []) {
      data.append("files", item.file, item.file.name);
      data.append("paths", item.path);
    }
    const response = await fetch(url, {method: "POST", body: items ? data : null,
                                       headers: {"X-CSRFToken": csrf}, credentials: "same-origin"});
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.detail || response.statusText);
    return body;
  }

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    const items = pickedFiles();
    if (!items.length) { status.textContent = "Pick a folder or some files first."; return; }
    const parts = batches(items);
    const button = document.getElementById("upload-button");
    button.disabled = true; bar.hidden = false;
    try {
      status.textContent = `Uploading ${items.length} file(s)…`;
      const first = await post("/api/v1/jobs" + (parts.length > 1 ? "?open=1" : ""), parts[0]);
      for (let i = 1; i < parts.length; i++) {
        bar.value = i / parts.length;
        status.textContent = `Uploading part ${i + 1} of ${parts.length}…`;
        await post(`/api/v1/jobs/${first.id}/files`, parts[i]);
      }
      if (parts.length > 1) await post(`/api/v1/jobs/${first.id}/close`, null);
      bar.value = 1;
      window.location.href = `/jobs/${first.id}`;
    } catch (error) {
      status.textContent = "Upload failed: " + error.message;
      status.className = "error";
      button.disabled = false;
    }
  });
})();
