// Activate buttons of the models page: POST with the session's CSRF token, then reload.
(function () {
  const token = document.querySelector('meta[name="csrf-token"]').content;
  document.querySelectorAll("button.activate").forEach(function (button) {
    button.addEventListener("click", async function () {
      button.disabled = true;
      const response = await fetch(button.dataset.url, {method: "POST", headers: {"X-CSRFToken": token},
                                                       credentials: "same-origin"});
      if (response.ok) { location.reload(); return; }
      const body = await response.json().catch(() => ({detail: response.statusText}));
      alert("Activation failed: " + body.detail);
      button.disabled = false;
    });
  });
})();
