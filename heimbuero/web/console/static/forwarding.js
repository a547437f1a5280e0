// The forwarding page's simulator: recomputed on the server (/portal/forwarding/simulate, the
// same handler as `heimbuero route simulate`) whenever the date or time field changes.
"use strict";
(function () {
  var form = document.getElementById("simulator");
  var out = document.getElementById("sim-result");
  if (!form || !out) return;
  var day = document.getElementById("sim-date");
  var hhmm = document.getElementById("sim-time");
  var seq = 0;
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function update() {
    var mine = ++seq;
    var url = "/portal/forwarding/simulate?client=" + encodeURIComponent(form.dataset.client) +
      "&sim_date=" + encodeURIComponent(day.value) + "&sim_time=" + encodeURIComponent(hhmm.value);
    fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { return r.json(); })
      .then(function (d) {
        if (mine !== seq) return;
        var when = d.at || "";
        out.textContent = "";
        out.appendChild(el("p", "sim-when", when ? out.dataset.at.replace("%s", when.replace("T", " "))
          : out.dataset.now));
        if (d.error) { out.appendChild(el("p", "error sim-error", d.error)); return; }
        var p = el("p");
        p.appendChild(el("strong", "sim-rule", d.rule));
        out.appendChild(p);
        var ol = el("ol", "sim-steps");
        d.steps.forEach(function (s) { ol.appendChild(el("li", "", s)); });
        out.appendChild(ol);
        out.dataset.done = String(mine);
      });
  }
  day.addEventListener("change", update);
  hhmm.addEventListener("change", update);
  form.addEventListener("submit", function (e) { e.preventDefault(); update(); });
})();
