// /portal/billing: while the page shows the current month and is visible, its usage section
// is fetched again every 20 seconds (the same page, through the session) and replaced, so new
// usage lines and totals appear without reload. Without the script the page is the same, as of
// its load.
(function () {
  "use strict";
  const usage = document.getElementById("usage");
  if (!usage || usage.dataset.live !== "1") return;
  const every = 20000;
  async function refresh() {
    if (document.hidden) return;
    try {
      const r = await fetch(location.href, { credentials: "same-origin", cache: "no-store" });
      if (!r.ok) return;
      const doc = new DOMParser().parseFromString(await r.text(), "text/html");
      const fresh = doc.getElementById("usage");
      if (fresh && fresh.dataset.month === usage.dataset.month &&
          fresh.innerHTML !== usage.innerHTML) {
        usage.replaceChildren(...Array.from(fresh.childNodes));
      }
    } catch (e) {
      // offline for a moment: the next round tries again
    }
  }
  setInterval(refresh, every);
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) refresh();
  });
})();
