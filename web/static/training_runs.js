// Training-runs page: follow queued and running runs through the JSON API (stage, progress, message,
// log tail), reload when one finishes or a new one appears, and queue a run from the form.
(function () {
  const box = document.getElementById("runs");
  if (!box) return;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const form = document.getElementById("queue-form");
  const notice = document.getElementById("runs-notice");
  const ACTIVE = ["queued", "running"];
  const LIST_EVERY_MS = 15000;
  let formTouched = false, lastSeen = "", idle = 0, lastListAt = 0;

  function knownIds() {
    return new Set(Array.from(box.querySelectorAll("article.run")).map((a) => Number(a.id.slice(4))));
  }

  // Reloading shows the finished run's decision as the server renders it; a half-filled form is
  // not thrown away, the page says so instead.
  function refresh(why) {
    if (formTouched) {
      notice.hidden = false;
      notice.querySelector("span").textContent = why;
      return;
    }
    location.reload();
  }

  function lastMessage(log) {
    const lines = (log || "").split("\n").filter((l) => l.trim());
    if (!lines.length) return "";
    const match = /^\d\d:\d\d:\d\d \[[^\]]*\] (.*)$/.exec(lines[lines.length - 1]);
    return match ? match[1] : lines[lines.length - 1];
  }

  function show(card, run) {
    const field = (name) => card.querySelector(`[data-field="${name}"]`);
    field("status").textContent = run.status;
    field("status").className = "status " + run.status;
    field("stage").textContent = run.stage || card.dataset.waiting;  // as the server rendered it
    field("percent").textContent = Math.floor(run.progress * 100) + "%";
    field("progress").value = run.progress;
    field("message").textContent = lastMessage(run.log);
    const log = field("log");
    const lines = (run.log || "").split("\n").filter((l) => l.trim());
    const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.textContent = lines.slice(-20).join("\n");
    if (atEnd) log.scrollTop = log.scrollHeight;  // follow the log unless the reader scrolled up
  }

  async function getJson(url) {
    const response = await fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}});
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.detail || response.statusText);
    return body;
  }

  async function poll() {
    const cards = Array.from(box.querySelectorAll("article.run")).filter((a) => ACTIVE.includes(a.dataset.status));
    let seen = "";
    try {
      for (const card of cards) {
        const run = await getJson(card.dataset.url);
        seen += JSON.stringify([run.status, run.stage, run.progress, run.log.length]);
        if (!ACTIVE.includes(run.status)) { refresh(`Run #${run.id} has ${run.status}.`); return; }
        show(card, run);
      }
      if (Date.now() - lastListAt > LIST_EVERY_MS) {
        lastListAt = Date.now();
        const ids = knownIds();
        const added = (await getJson(box.dataset.listUrl)).training_runs.filter((r) => !ids.has(r.id));
        if (added.length) { refresh(`Run #${added[0].id} was queued.`); return; }
      }
    } catch (error) {
      notice.hidden = false;
      notice.querySelector("span").textContent = "Cannot read the training runs: " + error.message + " (retrying)";
      setTimeout(poll, 5000);
      return;
    }
    // Like the job page: every 2 s while something changes, up to 10 s while nothing does,
    // and only the list (every 15 s) when no run is queued or running.
    idle = seen && seen === lastSeen ? idle + 1 : 0;
    lastSeen = seen;
    setTimeout(poll, cards.length ? Math.min(2000 * Math.pow(1.5, idle), 10000) : LIST_EVERY_MS);
  }

  function params() {
    const out = {};
    for (const input of form.querySelectorAll("[data-kind]")) {
      const kind = input.dataset.kind;
      if (kind === "bool") { if (input.checked) out[input.name] = true; continue; }
      const value = input.value.trim();
      if (value === "") continue;
      out[input.name] = kind === "int" ? parseInt(value, 10) : kind === "float" ? Number(value) : value;
    }
    return out;
  }

  if (form) {
    const status = document.getElementById("queue-status");
    form.addEventListener("input", () => { formTouched = true; });
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      const button = document.getElementById("queue-button");
      button.disabled = true;
      status.className = "muted";
      status.textContent = "Queueing…";
      try {
        const response = await fetch(form.dataset.url, {
          method: "POST", credentials: "same-origin",
          headers: {"X-CSRFToken": csrf, "Content-Type": "application/json", "Accept": "application/json"},
          body: JSON.stringify({params: params()})});
        const body = await response.json().catch(() => ({}));
        if (!response.ok) throw new Error(body.detail || response.statusText);
        formTouched = false;
        location.hash = "run-" + body.id;
        location.reload();
      } catch (error) {
        status.className = "error";
        status.textContent = "Not queued: " + error.message;
        button.disabled = false;
      }
    });
  }

  lastListAt = Date.now();
  setTimeout(poll, 1000);
})();
