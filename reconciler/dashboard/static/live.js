// Keeps the page live: every two seconds, fetch this page's live region (?partial=1) and swap
// it in. The server renders and escapes everything; this script only moves its HTML.
"use strict";
(function () {
  const region = document.getElementById("live");
  const state = document.getElementById("live-state");
  if (!region || !state) return;
  const every = 2000;
  async function refresh() {
    // Never under a person's hands: while they fill the filters, wait.
    if (region.contains(document.activeElement) && document.activeElement !== document.body) {
      return;
    }
    const url = new URL(window.location.href);
    url.searchParams.set("partial", "1");
    try {
      const answer = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      if (!answer.ok) throw new Error(String(answer.status));
      region.innerHTML = await answer.text();
      state.textContent = "live";
      state.className = "live-state";
      document.body.dataset.refreshed = String(Date.now());
    } catch (error) {
      state.textContent = "disconnected";
      state.className = "live-state lost";
    }
  }
  window.setInterval(refresh, every);
})();
