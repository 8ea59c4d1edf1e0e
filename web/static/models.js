// Activate / roll back buttons of the models page: ask, POST with the session's CSRF token, then reload.
(function () {
  const token = document.querySelector('meta[name="csrf-token"]').content;
  const status = document.getElementById("activate-status");
  document.querySelectorAll("button.activate").forEach(function (button) {
    button.addEventListener("click", async function () {
      const what = `${button.dataset.action} version #${button.dataset.version}`;
      if (!window.confirm(`Really ${what}? Workers switch to it from their next batch.`)) return;
      button.disabled = true;
      status.className = "muted";
      status.textContent = `Working: ${what}…`;
      try {
        const response = await fetch(button.dataset.url, {method: "POST", headers: {"X-CSRFToken": token},
                                                         credentials: "same-origin"});
        if (response.ok) { location.reload(); return; }
        const body = await response.json().catch(() => ({detail: response.statusText}));
        throw new Error(body.detail || response.statusText);
      } catch (error) {
        status.className = "error";
        status.textContent = `Could not ${what}: ${error.message}`;
        button.disabled = false;
      }
    });
  });
})();
