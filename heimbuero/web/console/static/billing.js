// /portal/billing and /admin/billing: the page's usage section (#usage, data-live="1") follows
// the console's event stream (/events, Server-Sent Events): each `usage` event of the page's
// client (data-client; empty on the provider's page: any client) that covers the page's month
// (data-month) fetches the same page again (through the session) and replaces the section, so
// new usage lines and totals appear without reload. A `usage` event is either a rated call,
// note, voicemail or dictation (`month`: its month) or open usage rated again (`until` given:
// a month recomputed, `until` == `month`; a tariff assigned from a day of `month`, `until`
// null: that month and every later one). The stream reconnects by itself and catches up (Last-Event-ID); when it could not
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
  function covers(d, month) {
    if (!("until" in d)) return d.month === month;
    return d.month <= month && (d.until === null || month <= d.until); // YYYY-MM sorts as text
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
      if (!d || typeof d.month !== "string") return;
      if (usage.dataset.client && d.client !== usage.dataset.client) return;
      if (!covers(d, usage.dataset.month)) return;
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
