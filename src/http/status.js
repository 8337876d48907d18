// The status page's self-refresh (served as /ui/status.js; the page's CSP allows no inline
// script). Every few seconds it fetches the page again and swaps in the fresh page's #live
// part, so every piece of markup, and its HTML escaping, comes from the server: nothing here
// builds markup from data. The same data is served as JSON at api/v1/status.
"use strict";
(function () {
  const EVERY_MS = 2000;

  async function refresh() {
    const note = document.getElementById("refreshed");
    try {
      if (!document.hidden) {
        // The page's own address: behind a gateway prefix this is still the same instance.
        const res = await fetch(window.location.href, { cache: "no-store" });
        if (!res.ok) {
          throw new Error("HTTP " + res.status);
        }
        const fresh = new DOMParser()
          .parseFromString(await res.text(), "text/html")
          .getElementById("live");
        const live = document.getElementById("live");
        if (!fresh || !live) {
          throw new Error("the answer has no status");
        }
        live.replaceWith(document.importNode(fresh, true));
        if (note) {
          note.textContent = "Updated " + new Date().toLocaleTimeString() +
            "; refreshes every " + EVERY_MS / 1000 + " s.";
        }
      }
    } catch (e) {
      if (note) {
        note.textContent = "Refresh failed (" + e.message + "); retrying.";
      }
    } finally {
      window.setTimeout(refresh, EVERY_MS);
    }
  }

  window.setTimeout(refresh, EVERY_MS);
})();
