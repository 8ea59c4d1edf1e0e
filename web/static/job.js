// Job page: follow the job's status (counts, rate, time left) until it is done; show a summary per
// study (class mix, disagreements, scans needing review, failures), failed scans grouped by reason, and a sortable,
// filterable table of the scans with a thumbnail each, linked to the scan's page.
(function () {
  const box = document.getElementById("job");
  const names = JSON.parse(box.dataset.modelNames || "[]");
  const el = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const ROWS_STEP = 200;  // rows drawn at a time; "Show more" adds as many again
  const LIVE_RESULTS_MAX = 2000;  // above this many scans the table is read once, at the end
  const LIVE_RESULTS_EVERY_MS = 5000;

  let scans = [], studies = [];
  // label -> colour class, from web/formatting.py class_colour (fixed per name, the same on every page)
  const colours = JSON.parse(box.dataset.classColours || "{}");
  let sortKey = "id", sortDir = 1, shown = ROWS_STEP;

  const plural = (n, word) => `${n.toLocaleString()} ${word}${n === 1 ? "" : "s"}`;

  function node(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  // A class first seen after the page loaded (a new model's) is grey until a reload names its colour.
  const colourOf = (label) => colours[label] || "c7";

  function disagrees(scan) {
    const ens = scan.ensemble;
    return scan.status === "classified" && ens && ens.agreement !== null && ens.agreement !== undefined &&
      ens.agreement < Object.keys(scan.predictions || {}).length;
  }

  function needsReview(scan) {
    return scan.status === "classified" && !!(scan.ensemble && scan.ensemble.needs_review);
  }

  const SHOWN = {all: () => true, failed: (s) => s.status === "failed", disagree: disagrees, review: needsReview};

  // ------------------------------------------------------------------ studies

  // The class mix as one SVG bar: widths are attributes, which the CSP allows (style attributes it does not).
  function mixBar(study) {
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 100 10");
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("class", "mix");
    svg.setAttribute("aria-hidden", "true");
    let x = 0;
    const parts = Object.entries(study.labels).map(([label, n]) => [colourOf(label), n]);
    parts.push(["failed", study.failed], ["pending", study.pending]);
    for (const [cls, n] of parts) {
      if (!n) continue;
      const width = 100 * n / study.scans;
      const rect = document.createElementNS(SVG, "rect");
      rect.setAttribute("x", x.toFixed(3));
      rect.setAttribute("width", width.toFixed(3));
      rect.setAttribute("height", "10");
      rect.setAttribute("class", cls);
      svg.append(rect);
      x += width;
    }
    return svg;
  }

  function legend(study) {
    const list = node("ul", null, "legend");
    const entries = Object.entries(study.labels).sort((a, b) => b[1] - a[1]);
    for (const [label, n] of entries) {
      const li = node("li");
      li.append(node("span", null, `swatch ${colourOf(label)}`), document.createTextNode(`${label} ${n}`));
      list.append(li);
    }
    if (study.failed) { const li = node("li"); li.append(node("span", null, "swatch failed"), document.createTextNode(`failed ${study.failed}`)); list.append(li); }
    if (study.pending) { const li = node("li"); li.append(node("span", null, "swatch pending"), document.createTextNode(`waiting ${study.pending}`)); list.append(li); }
    return list;
  }

  function filterButton(text, study, show, cls) {
    const button = node("button", text, "link-button" + (cls ? " " + cls : ""));
    button.type = "button";
    button.addEventListener("click", function () {
      el("study-filter").value = study;
      el("show").value = show;
      shown = ROWS_STEP;
      renderTable();
      el("scans-heading").scrollIntoView({block: "start"});
    });
    return button;
  }

  function renderStudies() {
    const list = el("studies");
    list.replaceChildren();
    el("studies-empty").hidden = studies.length > 0;
    for (const study of studies) {
      const li = node("li", null, "study card");
      li.dataset.study = study.study;
      const head = node("div", null, "study-head");
      const title = node("h3");
      title.append(filterButton(study.study || "Files outside a folder", study.study, "all", "study-name"));
      head.append(title, node("span", `${plural(study.scans, "scan")}`, "muted"));
      li.append(head, mixBar(study), legend(study));
      const facts = node("p", null, "study-facts");
      if (study.disagree) facts.append(filterButton(`Models disagree on ${plural(study.disagree, "scan")}`, study.study, "disagree", "disagree"));
      else if (study.classified) facts.append(node("span", "all models agree on every scan", "muted"));
      if (study.needs_review) {
        if (facts.childNodes.length) facts.append(document.createTextNode(" · "));
        facts.append(filterButton(`${plural(study.needs_review, "scan")} to review`, study.study, "review", "review-count"));
      }
      if (study.failed) {
        if (facts.childNodes.length) facts.append(document.createTextNode(" · "));
        facts.append(filterButton(`${study.failed} failed`, study.study, "failed", "failed-count"));
      }
      if (facts.childNodes.length) li.append(facts);
      list.append(li);
    }
    const select = el("study-filter"), current = select.value;
    select.replaceChildren(new Option("every study", ""));
    for (const study of studies) select.append(new Option(study.study || "files outside a folder", study.study));
    select.value = studies.some((s) => s.study === current) ? current : "";
  }

  // ------------------------------------------------------------------ failures, grouped by reason

  function renderFailures() {
    const groups = new Map();
    for (const scan of scans) {
      if (scan.status !== "failed") continue;
      const reason = scan.error || "no reason given";
      if (!groups.has(reason)) groups.set(reason, []);
      groups.get(reason).push(scan);
    }
    el("failures-section").hidden = groups.size === 0;
    const root = el("failures");
    root.replaceChildren();
    for (const [reason, group] of [...groups.entries()].sort((a, b) => b[1].length - a[1].length)) {
      const details = node("details", null, "failure card");
      if (groups.size <= 3) details.open = true;
      const summary = node("summary");
      summary.append(node("strong", plural(group.length, "scan")), document.createTextNode(": "), node("span", reason, "reason"));
      const list = node("ul", null, "failed-scans");
      for (const scan of group.slice(0, 100)) {
        const li = node("li"), link = node("a", scan.path + (scan.frame ? ` [${scan.frame}]` : ""));
        link.href = `/scans/${scan.id}`;
        li.append(link);
        list.append(li);
      }
      if (group.length > 100) list.append(node("li", `and ${group.length - 100} more`, "muted"));
      details.append(summary, list);
      root.append(details);
    }
  }

  // ------------------------------------------------------------------ the scan table

  const sortValue = {
    id: (s) => s.id,
    path: (s) => s.path,
    study: (s) => s.study || "",
    label: (s) => (s.ensemble ? s.ensemble.label : null),
    confidence: (s) => (s.ensemble ? s.ensemble.confidence : null),
    agreement: (s) => (s.ensemble && s.ensemble.agreement !== null ? s.ensemble.agreement : null),
    status: (s) => s.status,
  };
  const collator = new Intl.Collator(undefined, {numeric: true, sensitivity: "base"});

  function compare(a, b) {
    const va = sortValue[sortKey](a), vb = sortValue[sortKey](b);
    if (va === null || va === undefined) return vb === null || vb === undefined ? a.id - b.id : 1;  // missing last
    if (vb === null || vb === undefined) return -1;
    const order = typeof va === "number" ? va - vb : collator.compare(va, vb);
    return order ? order * sortDir : a.id - b.id;
  }

  function agreementCell(scan) {
    const td = node("td", null, "col-agree"), ens = scan.ensemble;
    if (!ens || ens.agreement === null || ens.agreement === undefined) return td;
    const n = Object.keys(scan.predictions || {}).length || names.length;
    const badge = node("span", `${ens.agreement}/${n}`, "agree-badge " + (ens.agreement === n ? "all" : "split"));
    const dissent = Object.entries(scan.predictions || {}).filter(([, p]) => p.label !== ens.label)
      .map(([name, p]) => `${name}: ${p.label}`);
    badge.title = `${ens.agreement} of ${n} models agree` + (dissent.length ? ` (${dissent.join(", ")})` : "");
    td.append(badge);
    return td;
  }

  function row(scan) {
    const tr = node("tr", null, scan.status === "failed" ? "failed-row" : "");
    tr.dataset.scan = scan.id;
    const thumb = node("td", null, "col-thumb");
    if (scan.status === "classified") {
      const img = node("img", null, "thumb");
      img.src = `/scans/${scan.id}/image?size=96`;
      img.alt = "";
      img.width = 48; img.height = 48;
      img.loading = "lazy";
      img.addEventListener("error", () => img.classList.add("missing"));
      thumb.append(img);
    }
    const pathCell = node("td", null, "col-path"), link = node("a", scan.path + (scan.frame ? ` [${scan.frame}]` : ""));
    link.href = `/scans/${scan.id}`;
    pathCell.append(link);
    const ens = scan.ensemble || {};
    const label = node("td", null, "col-label");
    if (ens.label) label.append(node("span", ens.label, `label swatch-text ${colourOf(ens.label)}`));
    const status = node("td", null, "col-status");
    const badge = node("span", scan.status + (scan.reused ? " (reused)" : ""), "status " + scan.status);
    status.append(badge);
    if (needsReview(scan)) {
      const flag = node("span", "needs review", "review-badge");
      flag.title = "the calibrated confidence is below this model version's threshold, or too few models agree";
      status.append(document.createTextNode(" "), flag);
    }
    if (scan.error) status.append(node("div", scan.error, "error small reason"));
    tr.append(thumb, pathCell, node("td", scan.study, "col-study"), label,
              node("td", ens.confidence !== undefined ? `${(ens.confidence * 100).toFixed(1)}%` : "", "col-confidence num"),
              agreementCell(scan), status);
    return tr;
  }

  function filtered() {
    const show = el("show").value, study = el("study-filter").value;
    return scans.filter((s) => (SHOWN[show] || SHOWN.all)(s) && (!study || (s.study || "") === study));
  }

  function renderTable() {
    const body = document.querySelector("#scans tbody");
    const rows = filtered().sort(compare);
    body.replaceChildren(...rows.slice(0, shown).map(row));
    if (!rows.length) {
      const tr = node("tr"), td = node("td", scans.length ? "No scan matches." : "No scans yet.", "muted");
      td.colSpan = 7;
      tr.append(td);
      body.append(tr);
    }
    el("scan-count").textContent = rows.length === scans.length ? plural(scans.length, "scan")
      : `${rows.length.toLocaleString()} of ${plural(scans.length, "scan")}`;
    const more = el("more-scans");
    more.hidden = rows.length <= shown;
    more.textContent = `Show more (${(rows.length - shown).toLocaleString()} not shown)`;
    for (const th of document.querySelectorAll("#scans thead th[aria-sort]")) {
      const key = th.querySelector("button").dataset.key;
      th.setAttribute("aria-sort", key === sortKey ? (sortDir > 0 ? "ascending" : "descending") : "none");
    }
  }

  for (const button of document.querySelectorAll("#scans button.sort")) {
    button.addEventListener("click", function () {
      const key = button.dataset.key;
      // A first click on a figure shows the highest first; on text, A to Z.
      if (key === sortKey) sortDir = -sortDir;
      else { sortKey = key; sortDir = key === "confidence" || key === "agreement" ? -1 : 1; }
      renderTable();
    });
  }
  el("show").addEventListener("change", () => { shown = ROWS_STEP; renderTable(); });
  el("study-filter").addEventListener("change", () => { shown = ROWS_STEP; renderTable(); });
  el("more-scans").addEventListener("click", () => { shown += ROWS_STEP; renderTable(); });

  let lastResults = 0;

  async function results() {
    lastResults = Date.now();
    const response = await fetch(box.dataset.resultsUrl, {credentials: "same-origin"});
    if (!response.ok) return;
    const body = await response.json();
    scans = body.scans;
    studies = body.studies || [];
    renderStudies();
    renderFailures();
    renderTable();
    el("studies").dataset.status = body.job.status;  // what the summary shows: a running or a finished job
  }

  // ------------------------------------------------------------------ files refused at upload

  (function showRefusedAtUpload() {
    let note = null;
    try { note = JSON.parse(sessionStorage.getItem(`mri-upload-${box.dataset.jobId}`) || "null"); } catch (e) { note = null; }
    if (!note || !note.refused || !note.refused.length) return;
    el("upload-refused").hidden = false;
    el("upload-refused-title").textContent =
      `${plural(note.refused.length, "file")} of this upload ${note.refused.length === 1 ? "was" : "were"} refused and not sent:`;
    const list = el("upload-refused-list");
    for (const item of note.refused) {
      const li = node("li"), code = node("code", item.path);
      li.append(code, document.createTextNode(` — ${item.reason}`));
      list.append(li);
    }
  })();

  // ------------------------------------------------------------------ progress: counts, rate, time left

  const samples = [];  // [time in ms, scans finished], the last minute of polls

  function duration(seconds) {
    if (seconds < 90) return `${Math.max(1, Math.round(seconds))} s`;
    if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
    return `${(seconds / 3600).toFixed(1)} h`;
  }

  function rateText(job, serverNow) {
    const finished = job.done + job.failed, now = Date.now();
    if (job.status === "done") {
      if (!job.started || !job.finished) return "";
      const took = (new Date(job.finished) - new Date(job.started)) / 1000;
      return `Took ${duration(took)}` + (took > 0 && finished ? ` · ${(finished / took).toFixed(1)} scans/s` : "") + ".";
    }
    samples.push([now, finished]);
    while (samples.length > 2 && now - samples[0][0] > 60000) samples.shift();
    let rate = null;
    const [t0, f0] = samples[0];
    if (now - t0 >= 3000 && finished > f0) rate = (finished - f0) / ((now - t0) / 1000);
    else if (job.started && finished && serverNow) {  // from the start, on the service's clock
      const elapsed = (serverNow - new Date(job.started)) / 1000;
      if (elapsed > 0) rate = finished / elapsed;
    }
    const left = job.total - finished;
    // a flagged job (no model yet, broker down) says why in its detail; "waiting for a worker" would mislead
    if (job.status === "queued" && !finished) return job.detail ? "" : "Waiting for a worker…";
    if (!rate) return `${left.toLocaleString()} to go.`;
    return `${rate.toFixed(1)} scans/s · about ${duration(left / rate)} left.`;
  }

  // The page watches the job's event stream: the service pushes each changed status (it
  // reads the status of every watched job in one query twice a second, however many pages
  // watch). Where the stream is refused (too many open) or fails, it polls instead: the
  // status answer carries an ETag and "no-cache", so the browser revalidates with
  // If-None-Match and a 304 costs no body; while the status stays the same the page also
  // asks less often (up to every 5 s); any change brings it back to the base rate.
  let lastTag = null, idle = 0, lastFinished = -1;

  function nextDelay(job, tag) {
    idle = tag && tag === lastTag ? idle + 1 : 0;
    lastTag = tag;
    const base = job.total > 2000 ? 3000 : 1000;
    return Math.min(base * Math.pow(1.5, idle), 5000);
  }

  // Shows one status; true once the job is done (its results are then shown in full).
  async function show(job, serverNow) {
    el("job-status").textContent = job.status;
    el("job-status").className = "status " + job.status;
    el("job-counts").textContent = `${job.done} classified, ${job.failed} failed of ${job.total}` +
      (job.reused ? ` (${job.reused} reused)` : "");
    el("job-progress").value = job.progress;
    el("job-rate").textContent = rateText(job, serverNow);
    el("job-detail").hidden = !job.detail;
    el("job-detail").textContent = job.detail || "";
    el("job-training-link").hidden = !/training run #\d+/.test(job.detail || "");
    const finished = job.done + job.failed;
    if (job.status === "done") { await results(); return true; }
    // While it runs, the summary fills in too (not too often, and not for very large jobs).
    if (finished !== lastFinished && job.total <= LIVE_RESULTS_MAX && Date.now() - lastResults >= LIVE_RESULTS_EVERY_MS) {
      lastFinished = finished;
      results().catch(() => {});
    }
    return false;
  }

  function cannotRead(message) {
    el("job-detail").hidden = false;
    el("job-detail").textContent = "Cannot read the job status: " + message + " (retrying)";
  }

  async function poll() {
    let job, tag, serverNow = null;
    try {
      const response = await fetch(box.dataset.statusUrl, {credentials: "same-origin"});
      job = await response.json();
      tag = response.headers.get("ETag");
      const date = response.headers.get("Date");
      if (date) serverNow = new Date(date);
      if (!response.ok) throw new Error(job.detail || response.statusText);
    } catch (error) {
      cannotRead(error.message);
      setTimeout(poll, 5000);
      return;
    }
    if (!(await show(job, serverNow))) setTimeout(poll, nextDelay(job, tag));
  }

  function watch() {
    if (!window.EventSource || !box.dataset.eventsUrl) { poll(); return; }
    const source = new EventSource(box.dataset.eventsUrl);
    let heard = false;
    box.dataset.watching = "stream";
    source.addEventListener("status", (message) => {
      heard = true;
      const job = JSON.parse(message.data);
      if (job.status === "done") source.close();  // before the results load: no reconnecting to a finished job
      show(job, null).catch((error) => cannotRead(error.message));
    });
    source.addEventListener("gone", (message) => {
      source.close();
      el("job-detail").hidden = false;
      el("job-detail").textContent = JSON.parse(message.data).detail;
    });
    source.onerror = () => {
      // Refused (e.g. 503: too many streams) or never connected: poll instead. A stream
      // that worked and dropped reconnects by itself (readyState CONNECTING).
      if (source.readyState === EventSource.CLOSED || !heard) {
        source.close();
        box.dataset.watching = "poll";
        poll();
      }
    };
  }

  results().then(watch, watch);
})();
