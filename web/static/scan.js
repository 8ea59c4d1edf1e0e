// Scan page: window/level (re-rendered by the server in the scan's own values), zoom, and the review
// control (POST/DELETE /api/v1/scans/<id>/review with the session's CSRF token, then reload).
(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const el = (id) => document.getElementById(id);

  function setupWindow() {
    const controls = el("image-controls"), image = el("scan-image");
    if (!controls || !image) return;
    const level = el("window-level"), width = el("window-width");
    const start = {center: Number(controls.dataset.center), window: Number(controls.dataset.window)};
    const step = Number(level.step) || 1;
    let timer = null;

    function render(now) {
      el("window-level-value").textContent = level.value;
      el("window-width-value").textContent = width.value;
      clearTimeout(timer);
      const load = () => {
        // The slider snaps to its step; within half a step it is still the file's own window,
        // which the server renders exactly as the models saw it.
        const changed = Math.abs(Number(level.value) - start.center) > step / 2 ||
                        Math.abs(Number(width.value) - start.window) > step / 2;
        image.src = image.dataset.src + (changed ? `?center=${encodeURIComponent(level.value)}&width=${encodeURIComponent(width.value)}` : "");
      };
      if (now) load(); else timer = setTimeout(load, 150);  // once the slider rests, not at every step
    }
    level.addEventListener("input", () => render(false));
    width.addEventListener("input", () => render(false));
    el("window-reset").addEventListener("click", function () {
      level.value = start.center; width.value = start.window; render(true);
    });
    controls.addEventListener("submit", (event) => event.preventDefault());
  }

  function setupZoom() {
    const box = el("image-box"), image = el("scan-image");
    if (!box || !image) return;
    const steps = [0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 6, 8];
    let zoom = null;  // null: fit the box

    function apply() {
      const natural = Number(image.getAttribute("width"));
      if (zoom === null) {
        box.classList.add("fit");
        image.style.width = "";
        el("zoom-value").textContent = "fit";
      } else {
        box.classList.remove("fit");
        image.style.width = Math.round(natural * zoom) + "px";  // CSSOM, allowed by the CSP
        el("zoom-value").textContent = Math.round(zoom * 100) + "%";
      }
    }
    function current() { return zoom === null ? image.clientWidth / Number(image.getAttribute("width")) : zoom; }
    el("zoom-in").addEventListener("click", () => { zoom = steps.find((s) => s > current() + 1e-6) || steps[steps.length - 1]; apply(); });
    el("zoom-out").addEventListener("click", () => { zoom = steps.slice().reverse().find((s) => s < current() - 1e-6) || steps[0]; apply(); });
    el("zoom-fit").addEventListener("click", () => { zoom = null; apply(); });
    el("zoom-actual").addEventListener("click", () => { zoom = 1; apply(); });
    box.addEventListener("keydown", function (event) {  // + and - on the focused picture
      if (event.key === "+" || event.key === "=") { el("zoom-in").click(); event.preventDefault(); }
      if (event.key === "-") { el("zoom-out").click(); event.preventDefault(); }
    });
  }

  function setupReview() {
    const form = el("review-form");
    if (!form) return;
    const status = el("review-status");

    async function send(method, body) {
      status.className = "muted";
      status.textContent = "Saving…";
      for (const button of form.querySelectorAll("button")) button.disabled = true;
      try {
        const response = await fetch(form.dataset.url, {
          method: method, credentials: "same-origin", body: body ? JSON.stringify(body) : null,
          headers: Object.assign({"X-CSRFToken": csrf, "Accept": "application/json"},
                                 body ? {"Content-Type": "application/json"} : {})});
        const answer = await response.json().catch(() => ({}));
        if (!response.ok) throw new Error(answer.detail || response.statusText);
        location.reload();
      } catch (error) {
        status.className = "error";
        status.textContent = "Not saved: " + error.message;
        for (const button of form.querySelectorAll("button")) button.disabled = false;
      }
    }
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      send("POST", {label: el("review-label").value, note: el("review-note").value});
    });
    const withdraw = el("review-withdraw");
    if (withdraw) withdraw.addEventListener("click", () => send("DELETE", null));
  }

  setupWindow();
  setupZoom();
  setupReview();
})();
