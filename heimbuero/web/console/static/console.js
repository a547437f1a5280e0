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
    pop.querySelector(".history").hidden = true;
    pop.hidden = false;
    var client = document.getElementById("client");
    if (client) client.value = c.client;
    var number = document.getElementById("caller_number");
    if (number && !number.value) number.value = (c.caller || "").replace(/^sips?:/, "").split("@")[0];
  });
  // the caller's earlier calls and notes, a moment after the card
  function items(ul, rows, line) {
    ul.textContent = "";
    rows.forEach(function (r) {
      var li = document.createElement("li");
      li.textContent = line(r);
      ul.appendChild(li);
    });
    if (!rows.length) { var li = document.createElement("li"); li.textContent = "–"; ul.appendChild(li); }
  }
  function when(iso) { return new Date(iso).toLocaleString(document.documentElement.lang || "de"); }
  es.addEventListener("history", function (e) {
    var h = JSON.parse(e.data);
    if (!pop || pop.dataset.call !== h.call_id) return;
    var box = pop.querySelector(".history");
    items(box.querySelector(".calls"), h.calls, function (r) {
      return when(r.started_at) + " · " + (r.result || "…") + (r.answered_by ? " (" + r.answered_by + ")" : "");
    });
    items(box.querySelector(".prev-notes"), h.notes, function (n) {
      return when(n.created_at) + " · " + n.agent + ": " + [n.caller_name, n.concern, n.text].filter(Boolean).join(" – ");
    });
    box.hidden = false;
  });
  es.addEventListener("message", function (e) {
    if (!log) return;
    var m = JSON.parse(e.data);
    var li = document.createElement("li");
    li.textContent = (m.from || m.sender || "") + ": " + (m.text || m.body || "");
    log.insertBefore(li, log.firstChild);
  });
  // the chat (/chat, /chat/PEER): a message or a change of its delivery state brings the
  // page's list again from the server (an HTML fragment), also after a reconnect (snapshot)
  var chat = document.getElementById("chat-log");
  var convs = document.getElementById("chat-list");
  var peer = chat ? chat.dataset.peer : "";
  function fetchInto(el, url) {
    return fetch(url, {credentials: "same-origin", headers: {"Accept": "text/html"}})
      // (a session that ended is redirected to the login page: that is no list)
      .then(function (r) { return r.ok && !r.redirected ? r.text() : null; })
      .then(function (html) {
        if (html === null) return;
        el.innerHTML = html;
        if (el === chat) {
          var last = chat.lastElementChild;
          if (last && last.scrollIntoView) last.scrollIntoView({block: "nearest"});
        }
      })
      .catch(function () {});
  }
  // An event can come a moment before its message is committed: until the list shows the
  // message (`want`, its id), it is fetched again, a few times.
  function shows(el, want) {
    return !want || !!el.querySelector('[data-id="' + CSS.escape(want) + '"]');
  }
  function refreshChat(want, tries) {
    var jobs = [];
    if (chat) jobs.push(fetchInto(chat, "/chat/" + encodeURIComponent(peer) + "/messages"));
    if (convs) jobs.push(fetchInto(convs, "/chat?part=list"));
    return Promise.all(jobs).then(function () {
      var missing = (chat && !shows(chat, want)) || (convs && !shows(convs, want));
      if (missing && (tries || 0) < 20) {
        setTimeout(function () { refreshChat(want, (tries || 0) + 1); }, 250);
      }
    });
  }
  function concerning(e) {
    if (!convs && !chat) return null;
    var m = JSON.parse(e.data);
    return convs || m.sender === peer || m.recipient === peer ? m : null;
  }
  if (chat || convs) {
    es.addEventListener("snapshot", function () {
      refreshChat().then(function () { document.documentElement.dataset.chat = "1"; });
    });
    es.addEventListener("message", function (e) {
      var m = concerning(e);
      if (m) refreshChat(m.kind === "imdn" || m.kind === "composing" ? null : m.id);
    });
    es.addEventListener("state", function (e) {
      if (!concerning(e)) return;
      refreshChat();
      setTimeout(refreshChat, 1000); // the new state may be committed a moment later
    });
  }
  document.documentElement.dataset.live = "1";
}());
