// Scan page: "Show explanation" asks GET /api/v1/scans/<id>/explanation?model=... and, while the answer is
// 202 (a worker is computing the Grad-CAM overlay), asks again after its Retry-After; on 200 the PNG is
// shown under the picture. The image is loaded from the same URL (the CSP allows no blob: images).
(function () {
  const form = document.getElementById("explanation-form");
  if (!form) return;
  const el = (id) => document.getElementById(id);
  const select = el("explanation-model"), button = el("explanation-show"), status = el("explanation-status");
  const figure = el("explanation-figure"), image = el("explanation-image"), caption = el("explanation-caption");
  const GIVE_UP_MS = 5 * 60 * 1000;  // the task may wait behind classify batches on the inference queue
  let current = 0;  // a newer request stops the polling of an older one

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function say(text, kind) {
    status.className = kind || "muted";
    status.textContent = text;
  }

  function describe(model, label, share) {
    const via = (model === "svm" || model === "random_forest")
      ? ` (${model} has no gradients: this is ResNet50's map, whose features it classifies, for its class)` : "";
    if (share === 0) {
      return `${model} said ${label}, but no region of the scan raised its score for ${label}: the map is ` +
             `empty, so the scan shows uncoloured${via}. The label came from the scan as a whole, ` +
             "not from a place this method can point to.";
    }
    return `${model} said ${label}. The warmer the colour (blue, green, yellow, red), the more that region ` +
           `raised its score for ${label}; where the scan shows uncoloured, nothing did${via}. ` +
           "It shows where the model looked, not whether it is right.";
  }

  async function show(model, label) {
    const mine = ++current;
    const url = `${form.dataset.url}?model=${encodeURIComponent(model)}`;
    const started = Date.now();
    button.disabled = true;
    say(`Asking for the ${model} explanation…`);
    try {
      while (mine === current) {
        const response = await fetch(url, {credentials: "same-origin", headers: {"Accept": "image/png, application/json"}});
        if (mine !== current) return;
        if (response.status === 200) {
          image.alt = `Grad-CAM heatmap of ${model} (${label}) over the scan`;
          image.src = url;
          const share = response.headers.get("X-Heatmap-Share");
          caption.textContent = describe(model, label, share === null ? null : Number(share));
          figure.hidden = false;
          say("");
          return;
        }
        if (response.status !== 202) {
          const answer = await response.json().catch(() => ({}));
          throw new Error(answer.detail || `${response.status} ${response.statusText}`);
        }
        if (Date.now() - started > GIVE_UP_MS) {
          throw new Error("still being computed after 5 minutes (the workers are busy); try again later");
        }
        const wait = Math.min(Math.max(Number(response.headers.get("Retry-After")) || 2, 1), 10);
        say(`A worker is computing the ${model} explanation… (${Math.round((Date.now() - started) / 1000)} s)`);
        await sleep(wait * 1000);
      }
    } catch (error) {
      if (mine === current) say("No explanation: " + error.message, "error");
    } finally {
      if (mine === current) button.disabled = false;
    }
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    const option = select.options[select.selectedIndex];
    show(option.value, option.dataset.label);
  });
  // Another model chosen: its heatmap is another picture, so the old one goes until it is asked for.
  select.addEventListener("change", function () {
    current++;
    figure.hidden = true;
    button.disabled = false;
    say("");
  });
})();
