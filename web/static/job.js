// Poll the job's JSON until it is done, then render the per-scan results table.
(function () {
  const box = document.getElementById("job");
  const names = JSON.parse(box.dataset.modelNames || "[]");
  const el = (id) => document.getElementById(id);

  function cell(text, cls) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : String(text);
    if (cls) td.className = cls;
    return td;
  }

  function scanCell(scan) {  // the path, linked to the scan's own page
    const td = document.createElement("td"), link = document.createElement("a");
    link.href = `/scans/${scan.id}`;
    link.textContent = scan.path + (scan.frame ? ` [${scan.frame}]` : "");
    td.append(link);
    return td;
  }

  function statusCell(scan) {
    const td = document.createElement("td"), badge = document.createElement("span");
    badge.className = "status " + scan.status;
    badge.textContent = scan.status + (scan.reused ? " (reused)" : "");
    td.append(badge);
    return td;
  }

  function renderScans(scans) {
    const body = document.querySelector("#scans tbody");
    body.replaceChildren();
    for (const scan of scans) {
      const tr = document.createElement("tr");
      const ens = scan.ensemble || {};
      tr.append(scanCell(scan), cell(scan.study),
                statusCell(scan),
                cell(ens.label, "label"), cell(ens.confidence !== undefined ? ens.confidence.toFixed(3) : ""),
                cell(ens.agreement !== undefined && ens.agreement !== null ? `${ens.agreement}/${names.length}` : ""));
      for (const name of names) {
        const p = (scan.predictions || {})[name];
        tr.append(cell(p ? `${p.label} (${p.confidence.toFixed(2)})` : ""));
      }
      tr.append(cell(scan.error, "error"));
      body.append(tr);
    }
    if (!scans.length) body.innerHTML = '<tr><td class="muted">No scans.</td></tr>';
  }

  async function results() {
    const response = await fetch(box.dataset.resultsUrl, {credentials: "same-origin"});
    if (response.ok) renderScans((await response.json()).scans);
  }

  // The status answer carries an ETag and "no-cache": the browser revalidates with
  // If-None-Match and a 304 costs no body. While the status stays the same the page also
  // asks less often (up to every 5 s); any change brings it back to the base rate.
  let lastTag = null, idle = 0;

  function nextDelay(job, tag) {
    idle = tag && tag === lastTag ? idle + 1 : 0;
    lastTag = tag;
    const base = job.total > 2000 ? 3000 : 1000;
    return Math.min(base * Math.pow(1.5, idle), 5000);
  }

  async function poll() {
    let job, tag;
    try {
      const response = await fetch(box.dataset.statusUrl, {credentials: "same-origin"});
      job = await response.json();
      tag = response.headers.get("ETag");
      if (!response.ok) throw new Error(job.detail || response.statusText);
    } catch (error) {
      el("job-detail").hidden = false;
      el("job-detail").textContent = "Cannot read the job status: " + error.message + " (retrying)";
      setTimeout(poll, 5000);
      return;
    }
    el("job-status").textContent = job.status;
    el("job-status").className = "status " + job.status;
    el("job-counts").textContent = `${job.done} classified, ${job.failed} failed of ${job.total}` +
      (job.reused ? ` (${job.reused} reused)` : "");
    el("job-progress").value = job.progress;
    el("job-detail").hidden = !job.detail;
    el("job-detail").textContent = job.detail || "";
    if (job.status === "done") { await results(); return; }
    setTimeout(poll, nextDelay(job, tag));
  }

  results().then(poll);
})();
