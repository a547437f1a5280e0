// /portal/billing: while the page shows the current month, its usage section follows the
// console's event stream (/events, Server-Sent Events): each `usage` event of the page's client
// and month (billing rated a call, note, voicemail or dictation) fetches the same page again
// (through the session) and replaces the section, so new usage lines and totals appear without
// reload. The stream reconnects by itself and catches up (Last-Event-ID); when it could not
// catch up it sends a fresh `snapshot`, and the page fetches its section then too. Should the
// stream end for good (the server refused it), the section is fetched every minute and the
// stream tried again. Without the script the page is the same, as of its load.
(function () {
  "use strict";
  const usage = document.getElementById("usage");
  if (!usage || usage.dataset.live !== "1") return;
  const root = document.documentElement;
  let running = null;
  let again = false;
  let missed = false; // an update came while the page was hidden
  let events = 0;
  async function refresh() {
    if (document.hidden) { missed = true; return; }
    if (running) { again = true; return running; } // one fetch at a time; one more after it
    running = (async function () {
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
        // offline for a moment: the stream's reconnect brings a snapshot, which fetches again
      } finally {
        running = null;
        if (again) { again = false; refresh(); }
      }
    })();
    return running;
  }
  let poll = null;
  function connect() {
    if (!window.EventSource) { poll = poll || setInterval(refresh, 60000); return; }
    const es = new EventSource("/events");
    es.addEventListener("open", function () {
      root.dataset.usageStream = "open";
      if (poll) { clearInterval(poll); poll = null; }
    });
    es.addEventListener("snapshot", function () { refresh(); });
    es.addEventListener("usage", function (e) {
      let d = null;
      try { d = JSON.parse(e.data); } catch (err) { return; }
      if (!d || d.client !== usage.dataset.client || d.month !== usage.dataset.month) return;
      events += 1;
      root.dataset.usageEvents = String(events);
      refresh();
    });
    es.addEventListener("error", function () {
      if (es.readyState !== EventSource.CLOSED) { root.dataset.usageStream = "reconnecting"; return; }
      root.dataset.usageStream = "closed"; // refused for good: poll, and try the stream again
      es.close();
      poll = poll || setInterval(refresh, 60000);
      setTimeout(connect, 60000);
    });
    window.addEventListener("pagehide", function () { es.close(); }, { once: true });
  }
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && missed) { missed = false; refresh(); }
  });
  connect();
})();
