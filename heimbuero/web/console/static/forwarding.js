// The forwarding page's simulator: recomputed on the server (/portal/forwarding/simulate, the
// same handler as `heimbuero route simulate`) whenever the date, time or caller field changes.
"use strict";
(function () {
  var form = document.getElementById("simulator");
  var out = document.getElementById("sim-result");
  if (!form || !out) return;
  var day = document.getElementById("sim-date");
  var hhmm = document.getElementById("sim-time");
  var caller = document.getElementById("sim-caller");
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
      "&sim_date=" + encodeURIComponent(day.value) + "&sim_time=" + encodeURIComponent(hhmm.value) +
      "&sim_caller=" + encodeURIComponent(caller ? caller.value : "");
    fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { return r.json(); })
      .then(function (d) {
        if (mine !== seq) return;
        var when = d.when || "";
        out.textContent = "";
        out.appendChild(el("p", "sim-when", when ? out.dataset.at.replace("%s", when)
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
  if (caller) caller.addEventListener("change", update);
  form.addEventListener("submit", function (e) { e.preventDefault(); update(); });
})();
// The step editor: every change previews the unsaved draft (nothing is stored until "save").
(function () {
  var form = document.getElementById("editor");
  var out = document.getElementById("draft-result");
  if (!form || !out) return;
  var seq = 0;
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function preview() {
    var mine = ++seq;
    var body = new URLSearchParams(new FormData(form));
    body.set("action", "preview");
    body.set("format", "json");
    fetch("/portal/forwarding/edit", {method: "POST", credentials: "same-origin", body: body})
      .then(function (r) { return r.json(); })
      .then(function (d) {
        if (mine !== seq) return;
        out.textContent = "";
        var problems = Object.keys(d.errors || {}).map(function (k) {
          var field = document.getElementById(k);
          var label = field && field.labels && field.labels[0] ? field.labels[0].textContent : k;
          return label + ": " + d.errors[k];
        }).concat(d.general || []);
        if (problems.length) {
          var ul = el("ul", "error");
          problems.forEach(function (p) { ul.appendChild(el("li", "", p)); });
          out.appendChild(ul);
          return;
        }
        var p = el("p", "", out.dataset.label + " ");
        p.appendChild(el("strong", "sim-rule", d.rule));
        out.appendChild(p);
        var ol = el("ol", "sim-steps");
        d.steps.forEach(function (s) { ol.appendChild(el("li", "", s)); });
        out.appendChild(ol);
      });
  }
  form.addEventListener("change", preview);
})();
