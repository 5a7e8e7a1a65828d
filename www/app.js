// The fleetgate dashboard: signs in, keeps the user's projected snapshot in a wasm engine with
// the package's own sync client (fleetgate/sync: snapshot, server-sent deltas, catch-up after a
// reconnect, reload on 410), and computes every list, button and explanation client-side with
// it. The server re-checks every action. The engine shown is always live: the sync client frees
// an engine only after its successor is visible.
//
// Permission labels and the reasons of denied checks and commands come from the engine
// (`PolicyEngine.permissionLabels()`, the decision's `permission`/`org`/`permissions`/`device`/
// `user` from `explain`, `decide` and `preview`); this file only puts them into words.
import init, { PolicyEngine } from "/pkg/web.js";
import { createSync } from "/pkg/sync-web.js";

/** Permission id → the seed's name, from the engine (set once the package is initialised). */
let LABELS = {};
let PERMISSIONS = [];
const ROW = 44;

const $ = (sel, root = document) => root.querySelector(sel);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const app = $("#app");

const S = {
  token: localStorage.getItem("fleetgate.token"),
  user: null, sync: null, demo: null,
  /** The visible engine of the sync client (read it each time: a reload replaces it). */
  get engine() { return this.sync?.engine ?? null; },
  orgs: new Map(), users: new Map(), devices: new Map(), memberships: new Map(),
  activeOrg: null, search: "", sort: "name", list: [], result: "", adminResult: "",
};

// ---- server ---------------------------------------------------------------------------------

// `raw`: answer the body text (a snapshot goes to the engine as text: no JSON.stringify).
async function api(path, { method = "GET", body, raw = false } = {}) {
  const headers = {};
  if (S.token) headers.authorization = `Bearer ${S.token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw Object.assign(new Error("the server cannot be reached"), { code: "OFFLINE", status: 0 });
  }
  const text = res.status === 204 || res.status === 304 ? "" : await res.text().catch(() => "");
  let data = null;
  try {
    data = text === "" || (raw && res.ok) ? null : JSON.parse(text);
  } catch {
    data = null;
  }
  if (!res.ok) {
    const err = new Error(data?.error?.message ?? res.statusText);
    err.code = data?.error?.code ?? `HTTP_${res.status}`;
    err.status = res.status;
    throw err;
  }
  return raw ? text : data;
}

// ---- projection bookkeeping (names for display; decisions come from the engine) ---------------

function indexSnapshot(snap) {
  S.orgs = new Map(snap.orgs.map((o) => [o.id, o]));
  S.users = new Map(snap.users.map((u) => [u.id, u]));
  S.devices = new Map(snap.devices.map((d) => [d.id, d]));
  S.memberships = new Map(snap.memberships.map((m) => [`${m.user}\n${m.org}`, m]));
}

const orgName = (id) => S.orgs.get(id)?.name ?? id;
const userName = (id) => (id ? S.users.get(id)?.name ?? id : "—");
const myMemberships = () => [...S.memberships.values()].filter((m) => m.user === S.user.id);

// ---- plain words ----------------------------------------------------------------------------

// A denied check (a greyed-out control) in words: `explain` names what is missing — the
// permission and the org it is needed in, or the suspended org — so nothing here re-derives
// policy from memberships.
function whyNot(decision) {
  const label = (p) => LABELS[p] ?? p;
  const where = decision.org ? orgName(decision.org) : "this organization";
  switch (decision.code) {
    case "DENY_USER_INACTIVE": return "your account is not active";
    case "DENY_ORG_SUSPENDED": return `${where} is suspended`;
    case "DENY_UNKNOWN_DEVICE": return "this device no longer exists";
    case "DENY_UNKNOWN_USER": return "your account is unknown";
    case "DENY_NO_PERMISSION":
      return decision.permission ? `you do not hold ${label(decision.permission)} in ${where}` : `you have no role in ${where} that allows it`;
    default: return decision.code;
  }
}

function whyCommand(decision, cmd) {
  const label = (p) => LABELS[p] ?? p;
  const where = decision.org ? ` in ${orgName(decision.org)}` : "";
  switch (decision.code) {
    case "DENY_NO_PERMISSION":
      return decision.permission ? `you do not hold ${label(decision.permission)}${where}` : `you hold no active membership${where}`;
    case "DENY_ESCALATION":
      return `this would give permissions you do not hold${where}: ${(decision.permissions ?? []).map(label).join(", ")}`;
    case "DENY_LAST_ADMIN": return "the last active Admin of the organization must stay";
    case "DENY_PLAN": return "the organization's plan does not allow it (Pro needed)";
    case "DENY_DEPTH": return "organizations nest at most five levels deep";
    case "DENY_NOT_EMPTY":
      return decision.device ? `the organization still holds device ${decision.device}`
        : decision.user ? `the organization still has member ${userName(decision.user)}`
        : decision.org ? `the organization still has sub-organization ${orgName(decision.org)}`
        : "the organization is not empty";
    case "DENY_INVALID_TARGET": return "the target is not valid (unknown, not an active member, in another tree, or already exists)";
    case "DENY_USER_INACTIVE": return "your account is not active";
    default: return decision.code;
  }
}

// ---- session ----------------------------------------------------------------------------------

async function boot() {
  await init();
  LABELS = PolicyEngine.permissionLabels();
  PERMISSIONS = Object.keys(LABELS).sort();
  $("#signout").onclick = signOut;
  const accept = location.hash.match(/accept=([\w-]+)/);
  if (accept) return renderAccept(accept[1]);
  if (S.token) {
    try {
      return await startSession();
    } catch (e) {
      if (e.status !== 401) return renderFatal(e);
    }
  }
  renderLogin();
}

async function startSession() {
  app.innerHTML = `<p class="state">Loading your fleet…</p>`;
  const me = await api("/api/me");
  S.user = me.user;
  S.activeOrg = null;
  await S.sync?.close();
  const sync = createSync({
    getToken: () => S.token,
    // Display names come from the same engine state the decisions are made on.
    onUpdate: () => {
      if (S.sync !== sync || !S.engine) return;
      indexSnapshot(S.engine.toJson());
      render();
    },
    onError: (e) => {
      if (S.sync === sync && e.status === 401) endSession("Your session has ended — please sign in again.");
    },
  });
  S.sync = sync;
  sync.subscribe(() => {
    if (S.sync === sync) setConn(sync.status === "reconnecting" ? "offline — reconnecting…" : null);
  });
  await sync.ready;
  if (S.sync !== sync) return;
  $("#who").textContent = `${S.user.name} · ${S.user.email}`;
  $("#signout").hidden = false;
  render();
}

function signOut() {
  api("/api/logout", { method: "POST" }).catch(() => {});
  endSession("");
}

function endSession(message) {
  const sync = S.sync;
  S.sync = null;
  sync?.close();
  S.token = null;
  S.user = null;
  localStorage.removeItem("fleetgate.token");
  $("#who").textContent = "";
  $("#signout").hidden = true;
  $("#conn").hidden = true;
  renderLogin(message);
}

function setConn(text) {
  const el = $("#conn");
  el.hidden = !text;
  el.textContent = text ?? "";
}

// ---- screens ----------------------------------------------------------------------------------

async function renderLogin(message = "") {
  app.innerHTML = `
    <div class="card login">
      <h2>Sign in</h2>
      <form id="login">
        <label for="email">Email</label><input id="email" name="email" type="email" autocomplete="username" required>
        <label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
        <p class="result error" id="login-error">${esc(message)}</p>
        <button class="primary" type="submit">Sign in</button>
      </form>
      <div id="demo"></div>
    </div>`;
  $("#login").onsubmit = async (ev) => {
    ev.preventDefault();
    await signIn($("#email").value, $("#password").value);
  };
  try {
    S.demo = await api("/api/demo");
    $("#demo").innerHTML = `<div class="demo"><strong>Demo logins</strong> (password <code>${esc(S.demo.password)}</code>)<ul>${S.demo.logins
      .map((l) => `<li><button data-email="${esc(l.email)}">${esc(l.email)}</button> ${esc(l.description)}</li>`)
      .join("")}</ul></div>`;
    for (const b of app.querySelectorAll("[data-email]")) b.onclick = () => signIn(b.dataset.email, S.demo.password);
  } catch {
    S.demo = null;
  }
}

async function signIn(email, password) {
  try {
    const res = await api("/api/login", { method: "POST", body: { email, password } });
    S.token = res.token;
    localStorage.setItem("fleetgate.token", res.token);
    await startSession();
  } catch (e) {
    renderLogin(`${e.message} (${e.code})`);
  }
}

function renderAccept(token) {
  app.innerHTML = `
    <div class="card login">
      <h2>Accept your invitation</h2>
      <form id="accept">
        <label for="new-password">Choose a password (8+ characters)</label><input id="new-password" type="password" required minlength="8">
        <p class="result error" id="accept-error"></p>
        <button class="primary" type="submit">Accept and sign in</button>
      </form>
    </div>`;
  $("#accept").onsubmit = async (ev) => {
    ev.preventDefault();
    try {
      const res = await api("/api/invites/accept", { method: "POST", body: { token, password: $("#new-password").value } });
      S.token = res.token;
      localStorage.setItem("fleetgate.token", res.token);
      history.replaceState(null, "", "/");
      await startSession();
    } catch (e) {
      $("#accept-error").textContent = `${e.message} (${e.code})`;
    }
  };
}

function renderFatal(e) {
  app.innerHTML = `<div class="card"><p class="error">Something went wrong: ${esc(e.message)} <code>${esc(e.code)}</code></p><button id="retry">Retry</button></div>`;
  $("#retry").onclick = () => location.reload();
}

// ---- main screen ------------------------------------------------------------------------------

function render() {
  if (!S.user || !S.engine) return;
  const switchable = S.engine.switchableOrgs(S.user.id);
  if (S.activeOrg && !switchable.includes(S.activeOrg)) S.activeOrg = null;
  let ids;
  try {
    ids = S.engine.visibleDevices(S.user.id, S.activeOrg ? { activeOrg: S.activeOrg } : undefined);
  } catch (e) {
    S.activeOrg = null;
    ids = S.engine.visibleDevices(S.user.id);
  }
  const q = S.search.trim().toLowerCase();
  let list = ids.map((id) => S.devices.get(id) ?? { id, name: id, org: "", owner: null });
  if (q) list = list.filter((d) => d.name.toLowerCase().includes(q) || d.id.toLowerCase().includes(q) || orgName(d.org).toLowerCase().includes(q) || userName(d.owner).toLowerCase().includes(q));
  const key = { name: (d) => d.name.toLowerCase(), org: (d) => orgName(d.org).toLowerCase(), owner: (d) => userName(d.owner).toLowerCase() }[S.sort];
  list.sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : a.id < b.id ? -1 : 1));
  S.list = list;
  const scroll = $(".list")?.scrollTop ?? 0;
  // Keep an admin form the user is typing in: live updates must not wipe it.
  const keep = $("#admin")?.contains(document.activeElement) ? $("#admin") : null;
  app.innerHTML = `
    <div class="layout">
      <aside class="card tree" id="orgs"><strong>Organizations</strong>${renderTree(switchable)}</aside>
      <section>
        <div class="card">
          <div class="toolbar">
            <input id="search" placeholder="Search devices, organizations, owners" value="${esc(S.search)}">
            <label>Sort <select id="sort">${["name", "org", "owner"].map((k) => `<option value="${k}" ${S.sort === k ? "selected" : ""}>${k}</option>`).join("")}</select></label>
            <span class="count" id="count">${list.length} of ${ids.length} device${ids.length === 1 ? "" : "s"}</span>
          </div>
          <div class="result" id="result">${S.result}</div>
          ${ids.length === 0 ? renderEmpty(switchable) : `<div class="list" id="devices"><div class="spacer"></div></div>`}
        </div>
        <div id="admin"></div>
      </section>
    </div>`;
  for (const b of app.querySelectorAll("[data-org]")) b.onclick = () => { S.activeOrg = b.dataset.org || null; S.result = ""; S.adminResult = ""; render(); };
  const search = $("#search");
  search.oninput = () => { S.search = search.value; render(); $("#search").focus(); $("#search").setSelectionRange(S.search.length, S.search.length); };
  $("#sort").onchange = (ev) => { S.sort = ev.target.value; render(); };
  const box = $("#devices");
  if (box) {
    box.scrollTop = scroll;
    box.onscroll = () => paintRows(box);
    paintRows(box);
  }
  if (keep) $("#admin").replaceWith(keep);
  else renderAdmin();
}

function renderEmpty(switchable) {
  const me = myMemberships();
  if (me.length === 0 || switchable.length === 0) return `<p class="state" id="empty">You have no active membership in an organization — ask an admin to invite you.</p>`;
  return `<p class="state" id="empty">Your role has no permission to view devices${S.activeOrg ? ` in ${esc(orgName(S.activeOrg))}` : ""} — ask an admin.</p>`;
}

function renderTree(switchable) {
  const set = new Set(switchable);
  const children = new Map();
  const roots = [];
  for (const id of switchable) {
    let p = S.orgs.get(id)?.parent;
    while (p && !set.has(p)) p = S.orgs.get(p)?.parent;
    if (p) (children.get(p) ?? children.set(p, []).get(p)).push(id);
    else roots.push(id);
  }
  const node = (id) => `<li><button data-org="${esc(id)}" class="${S.activeOrg === id ? "active" : ""}">${esc(orgName(id))}</button>${
    children.has(id) ? `<ul>${children.get(id).map(node).join("")}</ul>` : ""}</li>`;
  return `<ul><li><button data-org="" class="${S.activeOrg ? "" : "active"}">All my devices</button></li>${roots.map(node).join("")}</ul>`;
}

function paintRows(box) {
  if (!S.user || !S.engine) return;
  const first = Math.max(0, Math.floor(box.scrollTop / ROW) - 5);
  const last = Math.min(S.list.length, first + Math.ceil(box.clientHeight / ROW) + 10);
  const rows = [];
  for (let i = first; i < last; i++) {
    const d = S.list[i];
    const ok = S.engine.canControl(S.user.id, d.id);
    const why = ok ? "" : whyNot(S.engine.explain(S.user.id, d.id, "control"));
    rows.push(`<div class="row" data-device="${esc(d.id)}" data-top="${i * ROW}">
      <div><div>${esc(d.name)}</div><div class="id">${esc(d.id)}</div></div>
      <div>${esc(orgName(d.org))}</div>
      <div>${esc(userName(d.owner))}</div>
      <div class="ctl"><button class="control" data-id="${esc(d.id)}" ${ok ? "" : "disabled"} title="${esc(why)}">Toggle</button>${ok ? "" : `<span class="why">${esc(why)}</span>`}</div>
    </div>`);
  }
  // Positions are set through the CSSOM: the server's CSP allows no inline style attributes.
  box.innerHTML = `<div class="spacer"></div>${rows.join("")}`;
  box.firstElementChild.style.height = `${S.list.length * ROW}px`;
  for (const r of box.querySelectorAll(".row")) r.style.top = `${r.dataset.top}px`;
  for (const b of box.querySelectorAll("button.control")) b.onclick = () => sendControl(b.dataset.id);
}

async function sendControl(id) {
  try {
    const res = await api(`/api/devices/${encodeURIComponent(id)}/commands`, { method: "POST", body: { name: "toggle", params: {} } });
    S.result = `<span class="ok">Command #${esc(res.id)} queued for ${esc(id)}.</span>`;
  } catch (e) {
    S.result = `<span class="error">Refused: ${esc(e.code)} — ${esc(e.message)}</span>`;
  }
  $("#result").innerHTML = S.result;
}

// ---- administration ---------------------------------------------------------------------------

function renderAdmin() {
  const org = S.activeOrg ?? myMemberships()[0]?.org;
  const el = $("#admin");
  if (!org || !S.orgs.has(org)) return;
  const perms = S.engine.permissionsIn(S.user.id, org);
  const adminPerms = perms.filter((p) => !p.startsWith("devices.own") && p !== "devices.org.view" && p !== "devices.org.control");
  if (adminPerms.length === 0) {
    el.innerHTML = "";
    return;
  }
  const members = [...S.memberships.values()].filter((m) => m.org === org);
  const roles = Object.keys(S.orgs.get(org)?.roles ?? { Admin: [], Staff: [], User: [] }).sort();
  const roleOptions = (sel) => roles.map((r) => `<option ${r === sel ? "selected" : ""}>${esc(r)}</option>`).join("");
  const orgDevices = S.list.filter((d) => d.org === org);
  const deviceOptions = orgDevices.map((d) => `<option value="${esc(d.id)}">${esc(d.name)} (${esc(d.id)})</option>`).join("");
  const userOptions = [...S.users.values()].map((u) => `<option value="${esc(u.id)}">${esc(u.name)} (${esc(u.email)})</option>`).join("");
  const orgOptions = S.engine.switchableOrgs(S.user.id).map((o) => `<option value="${esc(o)}">${esc(orgName(o))}</option>`).join("");
  el.innerHTML = `
    <div class="card admin">
      <h3>Administration of ${esc(orgName(org))}</h3>
      <p class="why">Your permissions here: ${perms.map((p) => esc(LABELS[p])).join(", ")}</p>
      ${perms.includes("users.view") ? `<table id="members"><tr><th>Member</th><th>Role</th><th></th></tr>${members
        .map((m) => `<tr data-user="${esc(m.user)}"><td>${esc(userName(m.user))} <span class="id">${esc(S.users.get(m.user)?.status ?? "")}</span></td>
          <td><select class="role">${roleOptions(m.role)}</select> <button class="set-role">Change role</button></td>
          <td><button class="remove-member">Remove</button></td></tr>`)
        .join("")}</table>` : ""}
      <form id="invite" ${perms.includes("users.invite") ? "" : "hidden"}><strong>Invite</strong><input name="email" type="email" placeholder="email"><select name="role">${roleOptions("User")}</select><button class="primary">Invite</button></form>
      <form id="create-org" ${perms.includes("orgs.create") ? "" : "hidden"}><strong>Sub-organization</strong><input name="id" placeholder="id (e.g. dist-east)"><input name="name" placeholder="name"><button class="primary">Create</button></form>
      <form id="transfer" ${perms.includes("devices.transfer") ? "" : "hidden"}><strong>Transfer</strong><select name="device">${deviceOptions}</select> to <select name="owner">${userOptions}</select><button class="primary">Transfer</button></form>
      <form id="move" ${perms.includes("devices.transfer") ? "" : "hidden"}><strong>Move</strong><select name="device">${deviceOptions}</select> to <select name="org">${orgOptions}</select><button class="primary">Move</button></form>
      <form id="role-perms" ${perms.includes("roles.edit") ? "" : "hidden"}><strong>Role permissions</strong><select name="role">${roles.filter((r) => r !== "Admin").map((r) => `<option>${esc(r)}</option>`).join("")}</select>
        <div class="perms">${PERMISSIONS.map((p) => `<label><input type="checkbox" name="perm" value="${p}"> ${esc(LABELS[p])}</label>`).join("")}</div>
        <button class="primary">Save role</button></form>
      <p class="result" id="admin-result">${S.adminResult}</p>
      <div id="outbox"></div>
    </div>`;
  const forms = {
    invite: (f) => ({ op: "invite", email: f.email.value, org, role: f.role.value }),
    "create-org": (f) => ({ op: "createOrg", id: f.id.value, name: f.name.value, parent: org }),
    transfer: (f) => ({ op: "transferDevice", device: f.device.value, owner: f.owner.value }),
    move: (f) => ({ op: "moveDevice", device: f.device.value, org: f.org.value }),
    "role-perms": (f) => ({ op: "setRolePermissions", org, role: f.role.value, permissions: [...f.querySelectorAll("[name=perm]:checked")].map((c) => c.value) }),
  };
  for (const [id, build] of Object.entries(forms)) {
    const form = $(`#${id}`, el);
    const button = $("button", form);
    const check = () => gate(button, build(form));
    form.oninput = check;
    form.onchange = check;
    form.onsubmit = (ev) => { ev.preventDefault(); confirmAndSend(build(form)); };
    check();
  }
  const rolePerms = $("#role-perms", el);
  const loadRole = () => {
    const have = new Set(S.orgs.get(org)?.roles?.[rolePerms.role.value] ?? []);
    for (const c of rolePerms.querySelectorAll("[name=perm]")) c.checked = have.has(c.value);
    gate($("button", rolePerms), forms["role-perms"](rolePerms));
  };
  rolePerms.role.onchange = loadRole;
  loadRole();
  for (const tr of el.querySelectorAll("#members tr[data-user]")) {
    const user = tr.dataset.user;
    const setRole = () => ({ op: "setRole", user, org, role: $(".role", tr).value });
    const remove = { op: "removeMember", user, org };
    gate($(".set-role", tr), setRole());
    $(".role", tr).onchange = () => gate($(".set-role", tr), setRole());
    gate($(".remove-member", tr), remove);
    $(".set-role", tr).onclick = () => confirmAndSend(setRole());
    $(".remove-member", tr).onclick = () => confirmAndSend(remove);
  }
  if (S.demo && perms.includes("users.invite")) showOutbox();
}

/** Greys a button out with its reason when the engine denies the command. */
function gate(button, cmd) {
  let decision;
  try {
    decision = S.engine.decide(S.user.id, cmd);
  } catch (e) {
    button.disabled = true;
    button.title = "fill in the form";
    return;
  }
  button.disabled = !decision.allowed;
  button.title = decision.allowed ? "" : whyCommand(decision, cmd);
  let note = button.nextElementSibling?.classList.contains("why") ? button.nextElementSibling : null;
  if (!decision.allowed) {
    if (!note) {
      note = document.createElement("span");
      note.className = "why";
      button.after(note);
    }
    note.textContent = whyCommand(decision, cmd);
  } else if (note) note.remove();
}

function confirmAndSend(cmd) {
  let preview;
  try {
    preview = S.engine.preview(S.user.id, cmd);
  } catch (e) {
    S.adminResult = `<span class="error">${esc(e.code)}: ${esc(e.message)}</span>`;
    $("#admin-result").innerHTML = S.adminResult;
    return;
  }
  const line = (a) => `<li>${esc(userName(a.user))} — ${esc(S.devices.get(a.device)?.name ?? a.device)} (${a.action})</li>`;
  const dialog = document.createElement("dialog");
  dialog.id = "confirm";
  dialog.innerHTML = `<h3>Confirm ${esc(cmd.op)}</h3>
    <p><strong>Gains access</strong>${preview.gained.length ? `<ul id="gained">${preview.gained.map(line).join("")}</ul>` : " — nobody"}</p>
    <p><strong>Loses access</strong>${preview.lost.length ? `<ul id="lost">${preview.lost.map(line).join("")}</ul>` : " — nobody"}</p>
    ${preview.truncated ? `<p class="why">…and more: ${preview.gainedCount} gained, ${preview.lostCount} lost in all.</p>` : ""}
    <form method="dialog"><button value="cancel">Cancel</button> <button class="primary" value="ok" id="confirm-ok">Confirm</button></form>`;
  document.body.append(dialog);
  dialog.addEventListener("close", async () => {
    const ok = dialog.returnValue === "ok";
    dialog.remove();
    if (ok) await send(cmd);
  });
  dialog.showModal();
}

async function send(cmd) {
  try {
    const res = await api("/api/commands", { method: "POST", body: cmd });
    S.adminResult = `<span class="ok">Done: ${esc(cmd.op)} (revision ${esc(res.revision)}).</span>${res.acceptLink ? ` Accept link: <a id="accept-link" href="${esc(res.acceptLink)}">${esc(location.origin + res.acceptLink)}</a>` : ""}`;
  } catch (e) {
    S.adminResult = `<span class="error">Refused by the server: ${esc(e.code)} — ${esc(e.message)}</span>`;
  }
  const out = $("#admin-result");
  if (out) out.innerHTML = S.adminResult;
}

async function showOutbox() {
  try {
    const items = await api("/api/outbox");
    $("#outbox").innerHTML = items.length ? `<strong>Outbox (demo mode)</strong><ul>${items.slice(0, 5).map((m) => `<li>${esc(m.email)}: ${esc(m.body)}</li>`).join("")}</ul>` : "";
  } catch {
    /* not in demo mode */
  }
}

boot().catch(renderFatal);
