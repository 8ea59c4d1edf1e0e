// Relative times ("3 min ago") on every page, kept current; the exact local and UTC time on hover.
// The wording matches web/formatting.py's `ago`, which renders the first paint.
(function () {
  function ago(date, now) {
    const seconds = (now - date) / 1000;
    if (seconds < -60) return null;  // a clock ahead of ours: keep the server's text
    if (seconds < 45) return "just now";
    if (seconds < 3600) return `${Math.max(1, Math.round(seconds / 60))} min ago`;
    if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
    const days = Math.floor(seconds / 86400);
    if (days === 1) return "yesterday";
    if (days < 7) return `${days} days ago`;
    return date.toISOString().slice(0, 10);
  }

  function refresh(root) {
    const now = Date.now();
    for (const el of (root || document).querySelectorAll("time[data-ago]")) {
      const date = new Date(el.getAttribute("datetime"));
      if (isNaN(date)) continue;
      const text = ago(date, now);
      if (text) el.textContent = text;
      if (!el.dataset.titled) {  // the viewer's own clock first, then UTC
        el.title = `${date.toLocaleString()} (${el.title || date.toISOString()})`;
        el.dataset.titled = "1";
      }
    }
  }

  window.mriTimes = {ago: ago, refresh: refresh};
  refresh();
  setInterval(refresh, 30000);
})();
