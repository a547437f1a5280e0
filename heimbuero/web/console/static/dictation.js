// The typist's player and editor (/dictation/{id}): the job's audio parts one after the other,
// speed 0.5-2.0 with the pitch kept, jumps of N seconds (kept in localStorage), a rewind when
// playback resumes, hotkeys that work while typing (Esc play/pause, F1 back, F2 forward,
// F3 slower, F4 faster), the position per job (localStorage); the draft saved to the server
// a few seconds after typing and when the page is hidden or left (fetch keepalive), and a
// heartbeat so the job's lock does not run out while the page is open. A waveform of the
// part (peaks from the server) shows the position and seeks on a click; a USB foot pedal
// (WebHID) drives the player, its buttons mapped to actions on the page.
// The queue (/dictation) follows /dictation/events: at each change of a job it fetches its list
// again (the same filter), so a job another typist took loses its button without a reload.
"use strict";
(function () {
  var list = document.getElementById("dictation-list");
  if (!list || !window.EventSource) return;
  var query = new URLSearchParams(window.location.search);
  query.delete("delivered");
  query.delete("released");
  query.set("part", "list");
  var busy = false, again = false;
  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch("/dictation?" + query.toString(), {credentials: "same-origin", headers: {"Accept": "text/html"}})
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) { if (html !== null) list.innerHTML = html; })
      .catch(function () { /* the next change */ })
      .then(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }
  var es = new EventSource("/dictation/events");
  es.addEventListener("job", refresh);
  es.addEventListener("open", function () { document.documentElement.dataset.queue = "1"; });
  window.addEventListener("pagehide", function () { es.close(); });
})();
(function () {
  var player = document.getElementById("player");
  var audio = document.getElementById("audio");
  var form = document.getElementById("editor");
  if (!player || !audio || !form) return;
  var job = player.dataset.job;
  var csrf = form.querySelector("input[name=csrf]").value;
  var version = document.getElementById("version");
  var draft = document.getElementById("draft");
  var status = document.getElementById("save-status");
  var speed = document.getElementById("speed");
  var stepInput = document.getElementById("step");
  var backInput = document.getElementById("back");
  var links = Array.prototype.slice.call(player.querySelectorAll("a.part-link"));
  var SPEEDS = [0.5, 0.75, 1, 1.25, 1.5, 1.75, 2];
  var KEY_POS = "hb.dictation.pos." + job, KEY_STEP = "hb.dictation.step";
  var KEY_BACK = "hb.dictation.back", KEY_SPEED = "hb.dictation.speed";

  function load(key, fallback) {
    try { var v = window.localStorage.getItem(key); return v === null ? fallback : v; }
    catch (e) { return fallback; }
  }
  function store(key, value) {
    try { window.localStorage.setItem(key, String(value)); } catch (e) { /* private mode */ }
  }
  function number(input, fallback, lo, hi) {
    var v = parseFloat(input.value);
    return isFinite(v) ? Math.min(hi, Math.max(lo, v)) : fallback;
  }

  // -- the player --
  var part = 0;
  var rate = 1;
  stepInput.value = load(KEY_STEP, "3");
  backInput.value = load(KEY_BACK, "1.5");
  function step() { return number(stepInput, 3, 1, 60); }
  function back() { return number(backInput, 1.5, 0, 10); }
  function showStep() {
    player.querySelectorAll(".step-s").forEach(function (s) { s.textContent = String(step()); });
  }
  stepInput.addEventListener("change", function () { store(KEY_STEP, step()); showStep(); });
  backInput.addEventListener("change", function () { store(KEY_BACK, back()); });
  showStep();

  function setRate(r) {
    rate = Math.min(2, Math.max(0.5, Math.round(r * 100) / 100));
    audio.preservesPitch = true;
    audio.playbackRate = rate;
    var best = SPEEDS.reduce(function (a, b) { return Math.abs(b - rate) < Math.abs(a - rate) ? b : a; });
    speed.value = String(best);
    store(KEY_SPEED, rate);
  }
  speed.addEventListener("change", function () { setRate(parseFloat(speed.value)); });

  // -- the waveform of the part playing: min/max peaks computed once on the server
  // (/dictation/{id}/peaks/{n}), so a long dictation costs the page a few kB, not its audio
  // decoded in memory; the position drawn on it, a click (or the arrow keys) seeks --
  var wave = document.getElementById("wave");
  var waveStatus = document.getElementById("wave-status");
  var peaks = {}, shown = null;  // part index -> peaks (or false: not available)
  function clock(t) {
    t = Math.max(0, Math.floor(t || 0));
    var s = t % 60;
    return Math.floor(t / 60) + ":" + (s < 10 ? "0" : "") + s;
  }
  function draw() {
    if (!wave) return;
    var ratio = window.devicePixelRatio || 1;
    var w = Math.max(1, Math.round(wave.clientWidth * ratio));
    var h = Math.max(1, Math.round(wave.clientHeight * ratio));
    if (wave.width !== w) wave.width = w;
    if (wave.height !== h) wave.height = h;
    var g = wave.getContext("2d");
    if (!g) return;
    g.clearRect(0, 0, w, h);
    var data = shown === null ? null : peaks[shown];
    var dur = isFinite(audio.duration) && audio.duration > 0 ? audio.duration :
      parseFloat(links[part] ? links[part].dataset.seconds : "0") || 0;
    var at = dur > 0 ? Math.min(1, audio.currentTime / dur) : 0;
    var mid = h / 2;
    if (data && data.length >= 2) {
      var n = data.length / 2;
      for (var x = 0; x < w; x++) {
        var a = Math.floor(x * n / w), b = Math.max(a + 1, Math.floor((x + 1) * n / w));
        var lo = 0, hi = 0;
        for (var k = a; k < b && k < n; k++) {
          lo = Math.min(lo, data[2 * k]);
          hi = Math.max(hi, data[2 * k + 1]);
        }
        g.fillStyle = x / w <= at ? "#1a5fb4" : "#8a9bb0";
        var top = mid - (hi / 127) * mid, bottom = mid - (lo / 127) * mid;
        g.fillRect(x, top, 1, Math.max(1, bottom - top));
      }
    } else {
      g.fillStyle = "#8a9bb0";
      g.fillRect(0, mid, w, 1);
    }
    g.fillStyle = "#c01c28";
    g.fillRect(Math.min(w - 2, Math.round(at * w)), 0, 2 * ratio, h);
    wave.setAttribute("aria-valuemax", String(Math.round(dur)));
    wave.setAttribute("aria-valuenow", String(Math.round(audio.currentTime || 0)));
    wave.setAttribute("aria-valuetext", clock(audio.currentTime) + " / " + clock(dur));
    wave.dataset.drawn = data ? String(data.length / 2) : "0";  // (the browser test reads it)
  }
  function showWave(i) {
    if (!wave) return;
    shown = i;
    if (peaks[i] !== undefined) { draw(); return; }
    draw();
    fetch(links[i].dataset.peaks, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (d) {
        peaks[i] = d && d.peaks ? d.peaks : false;
        if (!peaks[i] && waveStatus) {
          waveStatus.textContent = wave.dataset.failed;
          waveStatus.hidden = false;
        }
        if (shown === i) draw();
      })
      .catch(function () { /* drawn without peaks: the position still shows */ });
  }
  if (wave) {
    wave.addEventListener("click", function (e) {
      var dur = audio.duration;
      if (!isFinite(dur) || dur <= 0) return;
      var box = wave.getBoundingClientRect();
      var f = Math.min(1, Math.max(0, (e.clientX - box.left) / box.width));
      audio.currentTime = f * dur;
      remember(true);
      draw();
    });
    wave.addEventListener("keydown", function (e) {
      var by = {"ArrowLeft": -1, "ArrowRight": 1, "PageDown": -10, "PageUp": 10}[e.key];
      if (e.key === "Home") { audio.currentTime = 0; }
      else if (e.key === "End" && isFinite(audio.duration)) { audio.currentTime = audio.duration; }
      else if (by) { jump(by * step()); }
      else return;
      e.preventDefault();
      draw();
    });
    ["timeupdate", "seeked", "loadedmetadata", "durationchange"].forEach(function (ev) {
      audio.addEventListener(ev, draw);
    });
    var drawing = false;
    audio.addEventListener("play", function () {  // smoother than timeupdate's 4 per second
      if (drawing) return;
      drawing = true;
      (function frame() {
        draw();
        if (!audio.paused) window.requestAnimationFrame(frame); else drawing = false;
      })();
    });
    window.addEventListener("resize", draw);
  }

  var pending = null;  // a position to seek to once the part's metadata is there
  function choose(i, at) {
    part = i;
    pending = at || 0;
    links.forEach(function (a, j) { a.classList.toggle("current", j === i); });
    showWave(i);
    if (audio.getAttribute("src") !== links[i].dataset.src) audio.src = links[i].dataset.src;
    else if (audio.readyState >= 1) { audio.currentTime = pending; pending = null; }
  }
  audio.addEventListener("loadedmetadata", function () {
    audio.preservesPitch = true;
    audio.playbackRate = rate;
    if (pending !== null) { audio.currentTime = pending; pending = null; }
  });
  audio.addEventListener("ended", function () {
    if (part + 1 < links.length) { choose(part + 1, 0); audio.play(); }
  });
  links.forEach(function (a, i) {
    a.addEventListener("click", function (e) { e.preventDefault(); choose(i, 0); });
  });

  var lastSaved = 0;
  function remember(force) {
    var now = Date.now();
    if (!force && now - lastSaved < 1000) return;
    lastSaved = now;
    store(KEY_POS, JSON.stringify({part: part, t: audio.currentTime}));
  }
  audio.addEventListener("timeupdate", function () { remember(false); });
  audio.addEventListener("pause", function () { remember(true); });

  function toggle() {
    if (audio.paused) {
      if (audio.currentTime > 0) audio.currentTime = Math.max(0, audio.currentTime - back());
      var p = audio.play();
      if (p && p.catch) p.catch(function () { /* not loaded yet */ });
    } else {
      audio.pause();
    }
  }
  function jump(seconds) {
    var end = isFinite(audio.duration) ? audio.duration : Infinity;
    audio.currentTime = Math.min(end, Math.max(0, audio.currentTime + seconds));
    remember(true);
  }
  document.getElementById("playpause").addEventListener("click", toggle);
  document.getElementById("rewind").addEventListener("click", function () { jump(-step()); });
  document.getElementById("forward").addEventListener("click", function () { jump(step()); });
  document.getElementById("slower").addEventListener("click", function () { setRate(rate - 0.25); });
  document.getElementById("faster").addEventListener("click", function () { setRate(rate + 0.25); });
  var keys = {
    "Escape": toggle,
    "F1": function () { jump(-step()); },
    "F2": function () { jump(step()); },
    "F3": function () { setRate(rate - 0.25); },
    "F4": function () { setRate(rate + 0.25); }
  };
  document.addEventListener("keydown", function (e) {
    var act = keys[e.key];
    if (!act || e.altKey || e.ctrlKey || e.metaKey) return;
    e.preventDefault();  // no help page (F1), no search (F3)
    act();
  }, true);
  window.addEventListener("help", function (e) { e.preventDefault(); });

  // where the typist left off with this job
  var saved = null;
  try { saved = JSON.parse(load(KEY_POS, "null")); } catch (e) { saved = null; }
  setRate(parseFloat(load(KEY_SPEED, "1")) || 1);
  if (links.length) {
    if (saved && saved.part >= 0 && saved.part < links.length) choose(saved.part, saved.t || 0);
    else choose(0, 0);
  }

  // -- the foot pedal (WebHID) --
  // A transcription pedal is a HID device whose input reports carry its buttons as a bitmask
  // (Infinity IN-USB-1/2/3: 1 left, 2 middle, 4 right in the first byte). Which button does
  // what is chosen on the page and kept in localStorage. decide() is the pure part: the
  // buttons held before and a report in, the buttons held now and what to do out.
  var KEY_PEDAL = "hb.dictation.pedal";
  var BUTTONS = [1, 2, 4];
  var ACTIONS = ["rewind", "hold", "toggle", "forward", "none"];
  var mapping = {"1": "rewind", "2": "hold", "4": "forward"};
  try {
    var kept = JSON.parse(load(KEY_PEDAL, "null"));
    BUTTONS.forEach(function (b) {
      if (kept && ACTIONS.indexOf(kept[b]) >= 0) mapping[String(b)] = kept[b];
    });
  } catch (e) { /* the defaults */ }
  function decide(held, report, map) {
    var mask = (report[0] || 0) | ((report[1] || 0) << 8);
    var out = [];
    BUTTONS.forEach(function (b) {
      var act = map[String(b)] || "none";
      if (act === "none") return;
      if ((mask & b) && !(held & b)) out.push({action: act, down: true});
      else if (!(mask & b) && (held & b)) out.push({action: act, down: false});
    });
    return {held: mask, actions: out};
  }
  var pedalHeld = 0, repeat = {};
  function play() {
    if (!audio.paused) return;
    if (audio.currentTime > 0) audio.currentTime = Math.max(0, audio.currentTime - back());
    var p = audio.play();
    if (p && p.catch) p.catch(function () { /* not loaded yet */ });
  }
  function perform(a) {
    var by = a.action === "rewind" ? -1 : a.action === "forward" ? 1 : 0;
    if (by) {  // a jump at once, then again while the button is held
      if (repeat[a.action]) { clearInterval(repeat[a.action]); delete repeat[a.action]; }
      if (a.down) {
        jump(by * step());
        repeat[a.action] = setInterval(function () { jump(by * step()); }, 500);
      }
    } else if (a.action === "hold") {
      if (a.down) play(); else audio.pause();
    } else if (a.action === "toggle" && a.down) {
      toggle();
    }
  }
  function handleReport(bytes) {
    var got = decide(pedalHeld, bytes, mapping);
    pedalHeld = got.held;
    got.actions.forEach(perform);
    return got.actions;
  }
  window.heimbueroPedal = {decide: decide, handleReport: handleReport, mapping: mapping};
  var pedal = document.getElementById("pedal");
  var pedalBox = document.getElementById("pedal-box");
  if (pedal) pedal.textContent = navigator.hid ? pedal.dataset.some : pedal.dataset.none;
  if (navigator.hid && pedal && pedalBox) {
    pedalBox.hidden = false;
    BUTTONS.forEach(function (b) {
      var select = document.getElementById("pedal-" + b);
      if (!select) return;
      select.value = mapping[String(b)];
      select.addEventListener("change", function () {
        mapping[String(b)] = select.value;
        store(KEY_PEDAL, JSON.stringify(mapping));
      });
    });
    var onReport = function (e) {
      handleReport(new Uint8Array(e.data.buffer, e.data.byteOffset, e.data.byteLength));
    };
    var use = function (device) {
      var ready = device.opened ? Promise.resolve() : device.open();
      return ready.then(function () {
        device.removeEventListener("inputreport", onReport);
        device.addEventListener("inputreport", onReport);
        pedal.textContent = pedal.dataset.on + " " + (device.productName || "HID");
      });
    };
    var connect = function (filters) {
      navigator.hid.requestDevice({filters: filters}).then(function (devices) {
        if (devices.length) return use(devices[0]);
      }).catch(function () { pedal.textContent = pedal.dataset.failed; });
    };
    // Infinity IN-USB-1/2/3 (VEC); another pedal: the browser lists every HID device
    document.getElementById("pedal-connect").addEventListener("click", function () {
      connect([{vendorId: 0x05f3, productId: 0x00ff}]);
    });
    document.getElementById("pedal-any").addEventListener("click", function () { connect([]); });
    navigator.hid.getDevices().then(function (devices) {  // allowed before: again at once
      if (devices.length) use(devices[0]).catch(function () { /* a click connects it */ });
    }).catch(function () { /* not allowed here */ });
    navigator.hid.addEventListener("disconnect", function () {
      pedal.textContent = pedal.dataset.some;
      pedalHeld = 0;
    });
  }

  // [mm:ss] of the dictation (all parts before this one counted) at the cursor
  function stamp() {
    var t = audio.currentTime;
    for (var i = 0; i < part; i++) t += parseFloat(links[i].dataset.seconds) || 0;
    var m = Math.floor(t / 60), s = Math.floor(t % 60);
    var text = "[" + (m < 10 ? "0" : "") + m + ":" + (s < 10 ? "0" : "") + s + "]";
    var a = draft.selectionStart, b = draft.selectionEnd;
    draft.setRangeText(text, a, b, "end");
    draft.focus();
    changed();
  }
  document.getElementById("stamp").addEventListener("click", stamp);

  // -- the draft --
  var dirty = false, saving = null, timer = null, leaving = false, broken = false;
  function two(n) { return (n < 10 ? "0" : "") + n; }
  function say(text, bad) {
    status.textContent = text;
    status.classList.toggle("error", !!bad);
  }
  function body() {
    var f = new FormData();
    f.append("csrf", csrf);
    f.append("version", version.value);
    f.append("text", draft.value);
    return f;
  }
  function save() {
    if (broken) return Promise.resolve(false);
    if (saving) return saving.then(function () { return dirty ? save() : true; });
    if (!dirty) return Promise.resolve(true);
    dirty = false;
    say(form.dataset.saving, false);
    saving = fetch("/dictation/" + job + "/draft", {
      method: "POST", credentials: "same-origin", body: body(),
      headers: {"Accept": "application/json"}
    }).then(function (r) {
      return r.json().then(function (d) {
        if (!r.ok) {
          broken = r.status === 409 || r.status === 404;
          dirty = true;
          say(form.dataset.failed + ": " + (d.detail || r.status), true);
          return false;
        }
        version.value = String(d.version);
        var now = new Date();
        say(form.dataset.saved + " " + two(now.getHours()) + ":" + two(now.getMinutes()) + ":" +
            two(now.getSeconds()), false);
        return true;
      });
    }, function () {  // offline for a moment: again in a while
      dirty = true;
      say(form.dataset.failed, true);
      if (timer) clearTimeout(timer);
      timer = setTimeout(save, 10000);
      return false;
    }).then(function (ok) { saving = null; return ok; });
    return saving;
  }
  function changed() {
    dirty = true;
    if (timer) clearTimeout(timer);
    timer = setTimeout(save, 3000);
  }
  draft.addEventListener("input", changed);
  function flush() {
    if (!dirty || leaving || broken) return;
    if (draft.value.length > 60000) { save(); return; }  // beyond keepalive's 64 kB
    dirty = false;
    fetch("/dictation/" + job + "/draft", {
      method: "POST", credentials: "same-origin", body: body(), keepalive: true,
      headers: {"Accept": "application/json"}
    }).then(function (r) {
      return r.ok ? r.json().then(function (d) { version.value = String(d.version); }) : null;
    }).catch(function () { dirty = true; });
  }
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "hidden") flush();
  });
  window.addEventListener("pagehide", flush);

  // Abgeben / Zurückgeben / Speichern: the form posts the text; wait for a save under way
  form.addEventListener("submit", function (e) {
    var button = e.submitter;
    if (button && button.id === "deliver" && !window.confirm(form.dataset.confirm)) {
      e.preventDefault();
      return;
    }
    if (saving) {
      e.preventDefault();
      saving.then(function () {
        leaving = true;
        if (button && button.formAction) form.action = button.formAction;
        form.submit();
      });
      return;
    }
    leaving = true;
  });

  // the heartbeat: the lock lasts while the page is open
  var every = (parseInt(player.dataset.heartbeat, 10) || 60) * 1000;
  setInterval(function () {
    var f = new FormData();
    f.append("csrf", csrf);
    fetch("/dictation/" + job + "/heartbeat", {
      method: "POST", credentials: "same-origin", body: f, headers: {"Accept": "application/json"}
    }).then(function (r) {
      if (!r.ok) r.json().then(function (d) { say(d.detail || String(r.status), true); });
    }).catch(function () { /* offline for a moment: the next one */ });
  }, every);
  document.documentElement.dataset.dictation = "1";  // ready (the browser test waits for it)
})();
