// The node dashboard: talks to the node it was served by through the JSON API over a
// websocket (the same messages as any client: hello, auth, status, contexts, watch).
"use strict";
const $ = (id) => document.getElementById(id);
const wsUrl = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/";
let key = null;          // the cluster key typed in, kept only in this page
let api = null;          // the request/response connection
let pending = new Map(); // request id -> resolve
let nextId = 1;
let tailSocket = null;
let chosen = null;
const history = [];      // one sample per second for the convergence timeline

function short(hex) { return hex ? hex.slice(0, 12) + "…" : "–"; }
function esc(s) { return String(s).replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c])); }

async function hmacHex(keyText, message) {
  const enc = new TextEncoder();
  const k = await crypto.subtle.importKey("raw", enc.encode(keyText), {name: "HMAC", hash: "SHA-256"}, false, ["sign"]);
  const sig = await crypto.subtle.sign("HMAC", k, message);
  return Array.from(new Uint8Array(sig)).map((b) => b.toString(16).padStart(2, "0")).join("");
}

function hexBytes(hex) { return new Uint8Array(hex.match(/../g).map((h) => parseInt(h, 16))); }

// Open a websocket and say hello (and prove the key when the node asks for it).
function connect() {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl);
    let step = 0;
    ws.onopen = () => ws.send(JSON.stringify({id: 0, op: "hello"}));
    ws.onerror = () => reject(new Error("cannot reach the node"));
    ws.onmessage = async (msg) => {
      const resp = JSON.parse(msg.data);
      if (step === 0) {
        step = 1;
        if (!resp.auth_required) { resolve(ws); return; }
        if (key === null) { ws.close(); reject(new Error("key needed")); return; }
        const prefix = new TextEncoder().encode("p2p-ledger-api");
        const nonce = hexBytes(resp.nonce);
        const message = new Uint8Array(prefix.length + nonce.length);
        message.set(prefix); message.set(nonce, prefix.length);
        ws.send(JSON.stringify({id: 0, op: "auth", mac: await hmacHex(key, message)}));
      } else if (step === 1) {
        step = 2;
        if (resp.ok) resolve(ws); else { ws.close(); reject(new Error(resp.message || "refused")); }
      }
    };
  });
}

async function openApi() {
  api = await connect();
  api.onmessage = (msg) => {
    const resp = JSON.parse(msg.data);
    const done = pending.get(resp.id);
    if (done) { pending.delete(resp.id); done(resp); }
  };
  api.onclose = () => { api = null; setConn(false); };
  setConn(true);
}

function call(op, fields) {
  return new Promise((resolve, reject) => {
    if (!api) { reject(new Error("offline")); return; }
    const id = nextId++;
    pending.set(id, (resp) => resp.ok ? resolve(resp) : reject(new Error(resp.message)));
    api.send(JSON.stringify(Object.assign({id, op}, fields || {})));
  });
}

function setConn(up) {
  $("conn").textContent = up ? "live" : "offline";
  $("conn").className = "pill " + (up ? "ok" : "warn");
}

// ---- entries: a record is 32 id bytes + the canonical encoding (core/entry.py) ----
function decodeRecord(b64) {
  const raw = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const view = new DataView(raw.buffer);
  const dec = new TextDecoder();
  let at = 32 + 5;  // id, magic "P2PL", version (2)
  const u32 = () => { const v = view.getUint32(at); at += 4; return v; };
  const u64 = () => { const v = view.getBigUint64(at); at += 8; return v; };
  const bytes = () => { const n = u32(); const out = raw.slice(at, at + n); at += n; return out; };
  const context = dec.decode(bytes());
  const key = dec.decode(bytes());
  const payload = bytes();
  const metas = u32();
  for (let i = 0; i < metas; i++) { bytes(); bytes(); }
  const lamport = u64();
  const origin = Array.from(raw.slice(at, at + 32), (b) => b.toString(16).padStart(2, "0")).join("");
  at += 32;  // the origin: the author's Ed25519 public key
  u64();  // chain
  const seq = u64();
  let text;
  try { text = new TextDecoder("utf-8", {fatal: true}).decode(payload); }
  catch (e) { text = "(" + payload.length + " bytes)"; }
  return {context, key, text, lamport, origin, seq};
}

function follow(context) {
  if (tailSocket) { tailSocket.onclose = null; tailSocket.close(); }
  chosen = context;
  $("tail-name").textContent = context;
  $("tail").innerHTML = "";
  connect().then((ws) => {
    tailSocket = ws;
    ws.onmessage = (msg) => {
      const resp = JSON.parse(msg.data);
      if (!resp.record) return;
      const e = decodeRecord(resp.record);
      const li = document.createElement("li");
      li.innerHTML = `<span class="who">${esc(e.origin.slice(0, 8))}…:${e.seq}</span>` +
        `<span class="key">${esc(e.key || "·")}</span><span class="payload">${esc(e.text)}</span>`;
      $("tail").prepend(li);
      while ($("tail").children.length > 200) $("tail").lastChild.remove();
    };
    ws.onclose = () => { if (chosen === context) setTimeout(() => follow(context), 1000); };
    ws.send(JSON.stringify({id: 1, op: "watch", context}));
  }).catch(() => setTimeout(() => follow(context), 1000));
}

// ---- rendering ----
function render(status, contexts) {
  $("node").textContent = `${status.node_id}  ${status.url || ""}`;
  $("root").textContent = status.root;
  $("entries").textContent = status.entries.toLocaleString();
  $("ncontexts").textContent = status.contexts.toLocaleString();
  const linked = status.peers.filter((p) => p.state === "connected");
  const agree = linked.length > 0 && linked.every((p) => p.root_agrees === true);
  if (!linked.length) $("agreed").innerHTML = '<span class="muted">no linked peer</span>';
  else if (agree)  // (how long: from the node's own tracking, once a round confirmed it)
    $("agreed").innerHTML = '<span class="yes">all agree</span>' + (status.agreed_for_s === null ?
      "" : ` <span class="hint">for ${fmtSecs(status.agreed_for_s)}</span>`);
  else $("agreed").innerHTML = '<span class="no">converging…</span>';
  history.push(!linked.length ? "alone" : agree ? "ok" : "diff");
  while (history.length > 90) history.shift();
  $("timeline").innerHTML = history.map((h) => `<span class="${h}"></span>`).join("") +
    "<span></span>".repeat(90 - history.length);
  const rows = status.peers.map((p) => {
    const cls = {connected: "ok", connecting: "warn", new: "warn", backoff: "bad", dropped: "bad"}[p.state] || "";
    const root = p.root_agrees === true ? '<span class="yes">agrees</span>' :
      p.root_agrees === false ? '<span class="no">differs</span>' : '<span class="muted">–</span>';
    const why = p.last_error && p.state !== "connected" ? `<div class="hint">${esc(p.last_error)}</div>` : "";
    return `<tr><td>${esc(p.node_id || "?")}</td><td class="mono">${esc(p.url || "inbound")}${why}</td>` +
      `<td><span class="pill ${cls}">${esc(p.state)}</span></td><td>${root}</td></tr>`;
  });
  $("peers").innerHTML = rows.join("") || '<tr><td colspan="4" class="muted">none yet</td></tr>';
  $("contexts").innerHTML = contexts.map((c) =>
    `<tr class="pick${c.context === chosen ? " chosen" : ""}" data-context="${esc(c.context)}">` +
    `<td>${esc(c.context)}</td><td class="num">${c.entries.toLocaleString()}</td>` +
    `<td class="mono muted">${short(c.root)}</td></tr>`).join("") ||
    '<tr><td colspan="3" class="muted">none yet</td></tr>';
  for (const row of $("contexts").querySelectorAll("tr.pick"))
    row.onclick = () => follow(row.dataset.context);
  if (chosen === null && contexts.length) follow(contexts[0].context);
}

function fmtSecs(s) {
  if (s < 60) return `${s.toFixed(0)} s`;
  if (s < 3600) return `${(s / 60).toFixed(0)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

async function tick() {
  try {
    if (!api) await openApi();
    const status = await call("status");
    const contexts = (await call("contexts")).contexts;
    render(status, contexts);
  } catch (e) {
    if (e.message === "key needed" || /key/.test(e.message)) {
      $("login").classList.remove("hidden");
      if (key !== null) $("login-error").textContent = e.message;
      return;  // wait for the form
    }
    setConn(false);
  }
  setTimeout(tick, 1000);
}

$("login").onsubmit = (ev) => {
  ev.preventDefault();
  key = $("key").value;
  $("login").classList.add("hidden");
  $("login-error").textContent = "";
  tick();
};

tick();
