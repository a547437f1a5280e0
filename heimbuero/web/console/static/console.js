// The console's live part: one EventSource on /events (session cookie), presence and messages
// updated in place. It reconnects by itself and sends Last-Event-ID, so nothing is missed.
"use strict";
(function () {
  var list = document.getElementById("presence");
  var log = document.getElementById("live");
  function row(p) {
    var li = document.createElement("li");
    li.dataset.user = p.user;
    var name = document.createElement("span");
    name.className = "name";
    name.textContent = p.user;
    var state = document.createElement("span");
    state.className = "state";
    state.textContent = " " + (p.on_the_phone ? "on-the-phone" : p.status || "");
    li.appendChild(name);
    li.appendChild(state);
    return li;
  }
  function upsert(p) {
    if (!list || !p || !p.user) return;
    var old = list.querySelector('li[data-user="' + CSS.escape(p.user) + '"]');
    if (old) list.replaceChild(row(p), old); else list.appendChild(row(p));
  }
  var es = new EventSource("/events");
  es.addEventListener("snapshot", function (e) {
    var d = JSON.parse(e.data);
    if (!list) return;
    list.textContent = "";
    (d.presence || []).forEach(upsert);
  });
  es.addEventListener("presence", function (e) { upsert(JSON.parse(e.data)); });
  // the screen pop: whose call rings, how to answer it, and the note form made ready for it
  var pop = document.getElementById("screenpop");
  es.addEventListener("ringing", function (e) {
    if (!pop) return;
    var c = JSON.parse(e.data);
    pop.querySelector(".name").textContent = c.name || c.client;
    pop.querySelector(".trade").textContent = c.trade ? "(" + c.trade + ")" : "";
    pop.querySelector(".greeting").textContent = c.greeting || "";
    pop.querySelector(".notes").textContent = c.notes || "";
    pop.querySelector(".number").textContent = c.caller || "";
    pop.querySelector(".contact").textContent = c.contact_person || "";
    pop.querySelector(".rule").textContent = c.rule || pop.dataset.defaultRule || "";
    var vip = pop.querySelector(".vip");
    vip.hidden = !c.vip;
    pop.classList.toggle("is-vip", !!c.vip);
    vip.querySelector(".vip-name").textContent = c.vip ? c.vip.name : "";
    vip.querySelector(".vip-remark").textContent = c.vip && c.vip.remark ? "– " + c.vip.remark : "";
    pop.dataset.call = c.call_id;
    pop.hidden = false;
    var client = document.getElementById("client");
    if (client) client.value = c.client;
    var number = document.getElementById("caller_number");
    if (number && !number.value) number.value = (c.caller || "").replace(/^sips?:/, "").split("@")[0];
  });
  es.addEventListener("message", function (e) {
    if (!log) return;
    var m = JSON.parse(e.data);
    var li = document.createElement("li");
    li.textContent = (m.from || m.sender || "") + ": " + (m.text || m.body || "");
    log.insertBefore(li, log.firstChild);
  });
  document.documentElement.dataset.live = "1";
}());
