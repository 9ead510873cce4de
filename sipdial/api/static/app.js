// sipdial's web page (issue 11): sign in, call box, live state, hang up, call list.
// Plain ES module, no build step; talks to the same API as CRMs (session cookie + CSRF).

const T = {
  en: {
    signIn: "Sign in", signOut: "Sign out", user: "User (extension)", password: "Password",
    orToken: "or an API token", token: "API token", callBox: "Call", number: "Number",
    device: "Ring", allDevices: "all my phones",
    allDevicesAdmin: "all of the user's phones", mode: "Connect by", modeDefault: "default",
    modeRefer: "transfer (REFER)", modeBridge: "bridge", confirm: "\"press 1\" first",
    dialButton: "Call", current: "Current call", hangUp: "Hang up", calls: "Calls",
    onlyMissed: "missed only", onlyToday: "today", when: "When", state: "State",
    duration: "Duration", more: "More", protocol: "Open tel: links with sipdial",
    confirmDial: "Call", cancel: "Cancel", callBack: "Call back", missed: "missed",
    signedInAs: "signed in as", admin: "administrator", protocolDone: "registered",
    phonebook: "Phonebook", search: "Search", name: "Name", numbers: "Numbers",
    addContact: "Add a contact", numbersHint: "Numbers (comma separated)", add: "Add",
    editContact: "Change a contact", save: "Save", edit: "Change",
    importFile: "Import a CSV or vCard file", import: "Import", remove: "Delete",
    imported: "imported", anonymous: "anonymous", tooBig: "too big (over 60 kB each), left out",
    call: "Call", forUser: "For user",
    registrations: "Registered phones (all users)", userCol: "User", expires: "Expires in",
    webhooks: "Webhook deliveries (since start)", target: "Target", delivered: "Delivered",
    waiting: "Waiting", failedAttempts: "Failed attempts", givenUp: "Given up",
    lastError: "Last error", noWebhooks: "No webhooks are configured.", failing: "failing",
    states: {
      calling_user: "dialling your phone", user_ringing: "your phone rings",
      user_answered: "answered", awaiting_confirmation: "press 1",
      calling_target: "dialling", target_ringing: "ringing", connected: "connected",
      ended: "ended",
    },
    causes: {
      completed: "hung up", user_busy: "you were busy", user_rejected: "you declined",
      user_no_answer: "missed", user_hung_up: "you hung up", not_confirmed: "not confirmed",
      target_busy: "busy", target_no_answer: "no answer", target_unavailable: "unavailable",
      target_failed: "failed", refer_failed: "transfer failed", cancelled: "cancelled",
      failed: "failed", interrupted: "interrupted", caller_cancelled: "missed",
    },
  },
  de: {
    signIn: "Anmelden", signOut: "Abmelden", user: "Benutzer (Nebenstelle)",
    password: "Kennwort", orToken: "oder ein API-Token", token: "API-Token", callBox: "Anrufen",
    number: "Rufnummer", device: "Klingeln an", allDevices: "allen meinen Telefonen",
    allDevicesAdmin: "allen Telefonen des Benutzers",
    mode: "Verbinden per", modeDefault: "Standard", modeRefer: "Weitervermittlung (REFER)",
    modeBridge: "Brücke", confirm: "vorher „1 drücken“", dialButton: "Anrufen",
    current: "Aktueller Anruf", hangUp: "Auflegen", calls: "Anrufliste",
    onlyMissed: "nur verpasste", onlyToday: "heute", when: "Wann", state: "Status",
    duration: "Dauer", more: "Mehr", protocol: "tel:-Links mit sipdial öffnen",
    confirmDial: "Anrufen:", cancel: "Abbrechen", callBack: "Zurückrufen", missed: "verpasst",
    signedInAs: "angemeldet als", admin: "Administrator", protocolDone: "eingerichtet",
    phonebook: "Telefonbuch", search: "Suchen", name: "Name", numbers: "Rufnummern",
    addContact: "Kontakt hinzufügen", numbersHint: "Rufnummern (durch Komma getrennt)",
    add: "Hinzufügen", editContact: "Kontakt ändern", save: "Speichern", edit: "Ändern",
    importFile: "CSV- oder vCard-Datei importieren", import: "Importieren",
    remove: "Löschen", imported: "importiert", anonymous: "unbekannt",
    tooBig: "zu groß (über 60 kB je Eintrag), ausgelassen", call: "Anrufen", forUser: "Für Benutzer",
    registrations: "Angemeldete Telefone (alle Benutzer)", userCol: "Benutzer",
    expires: "Läuft ab in",
    webhooks: "Webhook-Zustellungen (seit dem Start)", target: "Ziel", delivered: "Zugestellt",
    waiting: "Wartend", failedAttempts: "Fehlversuche", givenUp: "Aufgegeben",
    lastError: "Letzter Fehler", noWebhooks: "Es sind keine Webhooks eingerichtet.",
    failing: "gestört",
    states: {
      calling_user: "Ihr Telefon wird angerufen", user_ringing: "Klingelt bei Ihnen",
      user_answered: "Angenommen", awaiting_confirmation: "1 drücken",
      calling_target: "Wählt", target_ringing: "Klingelt", connected: "Verbunden",
      ended: "Beendet",
    },
    causes: {
      completed: "Aufgelegt", user_busy: "Sie waren besetzt", user_rejected: "Abgelehnt",
      user_no_answer: "Verpasst", user_hung_up: "Sie haben aufgelegt",
      not_confirmed: "Nicht bestätigt", target_busy: "Besetzt", target_no_answer: "Keine Antwort",
      target_unavailable: "Nicht erreichbar", target_failed: "Fehlgeschlagen",
      refer_failed: "Vermittlung fehlgeschlagen", cancelled: "Abgebrochen",
      failed: "Fehlgeschlagen", interrupted: "Unterbrochen", caller_cancelled: "Verpasst",
    },
  },
};
const lang = (navigator.language || "en").toLowerCase().startsWith("de") ? "de" : "en";
const t = T[lang];
document.documentElement.lang = lang;

const $ = (id) => document.getElementById(id);
let session = null;   // {user, admin, csrf}
// the user whose calls, phones and contacts the page shows; null: an administrator's view
const mine = () => (session.admin ? null : session.user);
let current = null;   // the call placed from this page
const PAGE = 20;
let listed = new Set();  // ids of the calls in the list
let next = null;         // the call list's next page: before= this
let events = null;

function label(el, text, title = false) {
  el.setAttribute("aria-label", text);
  if (title) el.title = text;
}

function translate() {
  for (const el of document.querySelectorAll("[data-t]")) {
    const text = t[el.dataset.t];
    if (typeof text === "string") el.textContent = text;
  }
}

async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (session && method !== "GET") headers["X-CSRF-Token"] = session.csrf;
  const r = await fetch(path, { method, headers, credentials: "same-origin",
                                body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await r.json().catch(() => ({}));
  if (r.status === 401 && session && path !== "/v1/session") {
    showSignIn();  // the session ended (expired, password changed): sign in again
  }
  if (!r.ok) throw new Error((data.error && data.error.message) || `HTTP ${r.status}`);
  return data;
}

function stateWords(call) {
  if (call.state === "ended") {
    const missed = call.direction === "inbound"
      ? !(call.events || []).some((e) => e.state === "connected")
      : call.cause === "user_no_answer";
    const words = t.causes[call.cause] || call.cause || t.states.ended;
    return missed && !words.toLowerCase().includes(t.missed) ? `${words} (${t.missed})` : words;
  }
  return t.states[call.state] || call.state;
}

function isMissed(call) {
  if (call.state !== "ended") return false;
  if (call.direction === "inbound") return !(call.events || []).some((e) => e.state === "connected");
  return call.cause === "user_no_answer";
}

function duration(call) {
  const connected = (call.events || []).find((e) => e.state === "connected");
  if (!connected || !call.ended_at) return "";
  const s = Math.round((Date.parse(call.ended_at) - Date.parse(connected.time)) / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

async function showSignedIn(s) {
  session = { ...s, admin: Boolean(s.admin || !s.user) };
  $("who").textContent = `${t.signedInAs} ${s.user || t.admin}` +
    (s.user && session.admin ? ` (${t.admin})` : "");
  $("sign-in-view").hidden = true;
  $("app-view").hidden = false;
  $("sign-out").hidden = false;
  const admin = session.admin;
  $("admin-view").hidden = !admin;
  for (const el of document.querySelectorAll(".admin-only")) el.hidden = !admin;
  $("device").options[0].textContent = admin ? t.allDevicesAdmin : t.allDevices;
  await Promise.allSettled([loadDevices(), loadCalls(), loadBook(),
                            admin ? loadWebhooks() : null]);
  listen();
  $("to").focus();
  const hash = location.hash;
  const wanted = hash.startsWith("#dial=") ? decodeURIComponent(hash.slice(6)) : "";
  if (wanted) {
    history.replaceState(null, "", "/");
    askToDial(wanted.replace(/^(tel|callto|sip|web\+callto):(\/\/)?/i, ""));
  }
}

function showSignIn() {
  session = null;
  if (events) events.close();
  listing += 1;  // answers still under way are for the previous session: dropped
  $("sign-in-view").hidden = false;
  $("app-view").hidden = true;
  $("sign-out").hidden = true;
  $("who").textContent = "";
  stopEditing();
  // nothing of the previous user stays for the next one
  current = null;
  $("current").hidden = true;
  registrations = [];
  listed = new Set();
  next = null;
  for (const id of ["calls", "book", "registrations", "webhooks"]) $(id).tBodies[0].replaceChildren();
  for (const id of ["book-status", "call-error", "calls-status"]) $(id).textContent = "";
  for (const id of ["as-user", "to", "book-search"]) $(id).value = "";
  for (const opt of [...$("device").options].slice(1)) opt.remove();
  $("user").focus();
}

let registrations = [];  // the signed-in user's, or (administrator) everyone's

async function loadDevices() {
  const query = mine() ? `?user=${encodeURIComponent(mine())}` : "";
  const found = await api("GET", `/v1/registrations${query}`);
  if (!session) return;  // signed out meanwhile
  ({ registrations } = found);
  if (!mine()) {
    const table = $("registrations").tBodies[0];
    table.replaceChildren();
    for (const r of registrations) {
      const row = table.insertRow();
      row.insertCell().textContent = r.user;
      row.insertCell().textContent = `${r.user_agent || r.contact} (${r.transport} ${r.source})`;
      row.insertCell().textContent = `${r.expires_in} s`;
    }
  }
  showDevices();
}

// the phones the call box may ring: the user's own, or those of the user an
// administrator dials for
function showDevices() {
  const select = $("device");
  const chosen = select.value;
  for (const opt of [...select.options].slice(1)) opt.remove();
  const user = mine() || $("as-user").value.trim() || session.user;
  for (const r of registrations.filter((r) => r.user === user)) {
    const opt = document.createElement("option");
    opt.value = r.contact;
    opt.textContent = `${r.user_agent || r.contact} (${r.transport} ${r.source})`;
    select.append(opt);
  }
  select.value = [...select.options].some((o) => o.value === chosen) ? chosen : "";
}

// The list from the server, filtered there (missed, today) and paged with its "next";
// `more`: the next page below the shown rows, else the first page again, as long as shown.
async function loadWebhooks() {
  const { webhooks } = await api("GET", "/v1/webhooks");
  if (!session) return;
  const body = $("webhooks").tBodies[0];
  body.replaceChildren();
  $("webhooks-none").hidden = webhooks.length > 0;
  for (const w of webhooks) {
    const row = body.insertRow();
    const failing = w.given_up > 0
      || (w.last_error_at && w.last_error_at > (w.last_delivered_at || ""));
    if (failing) row.className = "failing";
    row.insertCell().textContent = `${w.webhook ? `#${w.webhook} ` : ""}${w.target}` +
      (failing ? ` (${t.failing})` : "");
    row.insertCell().textContent = String(w.delivered) +
      (w.last_delivered_at ? ` (${new Date(w.last_delivered_at).toLocaleString(lang)})` : "");
    row.insertCell().textContent = String(w.queued);
    row.insertCell().textContent = String(w.failed_attempts);
    row.insertCell().textContent = String(w.given_up);
    row.insertCell().textContent = w.last_error
      ? `${w.last_error} (${new Date(w.last_error_at).toLocaleString(lang)})` : "";
  }
}

let listing = 0;  // the call list's latest request: an older answer is dropped

async function loadCalls(more = false) {
  const asked = ++listing;
  const query = new URLSearchParams({
    limit: String(more ? PAGE : Math.min(Math.max(listed.size, PAGE), 500)) });
  if (mine()) query.set("user", mine());
  if ($("only-missed").checked) query.set("missed", "true");
  if ($("only-today").checked) {
    const midnight = new Date();
    midnight.setHours(0, 0, 0, 0);
    query.set("since", midnight.toISOString());
  }
  if (more && next) query.set("before", next);
  let page;
  try {
    page = await api("GET", `/v1/calls?${query}`);
  } catch (e) {
    if (asked === listing) throw e;  // an older request's error: not this list's
    return;
  }
  if (asked !== listing || !session) return;
  $("calls-status").textContent = "";  // a reload (an event, a filter) asked after this one
  const body = $("calls").tBodies[0];
  if (!more) {
    body.replaceChildren();
    listed = new Set();
  }
  next = page.next;
  if (!next && document.activeElement === $("more")) $("calls-title").focus();
  $("more").hidden = !next;
  for (const call of page.calls) {
    if (listed.has(call.id)) continue;
    listed.add(call.id);
    const number = call.direction === "inbound" ? (call.caller || "") : call.to;
    const row = body.insertRow();
    row.dataset.id = call.id;
    if (isMissed(call)) row.className = "missed";
    row.insertCell().textContent = new Date(call.created_at).toLocaleString(lang);
    const who = row.insertCell();
    who.className = "number";
    who.textContent = (call.direction === "inbound" ? "← " : "→ ") + number +
      (call.contact ? ` (${call.contact.name})` : "") + (mine() ? "" : ` [${call.user}]`);
    row.insertCell().textContent = stateWords(call);
    row.insertCell().textContent = duration(call);
    const action = row.insertCell();
    if (number) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "call-back";
      button.textContent = "☎";
      label(button, `${t.callBack} ${number}`, true);
      button.addEventListener("click", () => dial(number, call.user));
      action.append(button);
    }
  }
}

async function loadBook() {
  return fillBook().catch((e) => { if (session) $("book-status").textContent = e.message; });
}

async function fillBook() {
  const query = new URLSearchParams({ limit: "100" });
  const q = $("book-search").value.trim();
  if (q) query.set("q", q);
  const { contacts } = await api("GET", `/v1/contacts?${query}`);
  if (!session) return;  // signed out meanwhile
  const body = $("book").tBodies[0];
  body.replaceChildren();
  for (const c of contacts) {
    const row = body.insertRow();
    row.insertCell().textContent = c.name;
    const numbers = row.insertCell();
    for (const number of c.numbers) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "book-dial number";
      button.textContent = `☎ ${number}`;
      label(button, `${t.call} ${c.name} ${number}`, true);
      button.addEventListener("click", () => dial(number));
      numbers.append(button, " ");
    }
    const cell = row.insertCell();
    if (!mine() || c.owner === mine()) {  // everyone's: an administrator's
      const edit = document.createElement("button");
      edit.type = "button";
      edit.className = "book-edit";
      edit.textContent = t.edit;
      label(edit, `${t.edit} ${c.name}`);
      edit.addEventListener("click", () => editContact(c));
      cell.append(edit, " ");
      const del = document.createElement("button");
      del.type = "button";
      del.textContent = t.remove;
      label(del, `${t.remove} ${c.name}`);
      del.addEventListener("click", async () => {
        try { await api("DELETE", `/v1/contacts/${c.id}`); } catch (e) { $("book-status").textContent = e.message; }
        loadBook();
      });
      cell.append(del);
    }
  }
}

function showCurrent(call) {
  current = call;
  $("current").hidden = false;
  $("current-to").textContent = call.direction === "inbound"
    ? `← ${call.caller || t.anonymous}${call.contact ? ` (${call.contact.name})` : ""}`
    : call.to;
  $("current-state").textContent = stateWords(call);
  $("hang-up").hidden = call.state === "ended";
}

function listen() {
  if (events) events.close();
  events = new EventSource("/v1/events");
  events.onerror = () => {  // a closed stream: still signed in? (it reconnects by itself)
    api("GET", "/v1/session").catch(() => showSignIn());
  };
  const update = (message) => {
    const data = JSON.parse(message.data);
    if (!data.call) return;
    if (current && data.call.id === current.id) {
      showCurrent(data.call);
    } else if (data.event === "call.incoming" && data.call.user === session.user
               && (!current || current.state === "ended")) {
      showCurrent(data.call);  // someone calls: who it is, live, with a hang-up button
    }
    if (data.event === "call.ended" || data.event === "call.incoming") {
      loadCalls().catch(showListError);
      if (!mine()) loadWebhooks().catch(() => {});
    }
  };
  for (const name of ["call.dialing", "call.ringing", "call.answered", "call.confirmed",
                      "call.connected", "call.ended", "call.incoming"]) {
    events.addEventListener(name, update);
  }
}

async function dial(number, forUser) {
  $("call-error").textContent = "";
  const body = { user: mine() || forUser || $("as-user").value.trim() || session.user,
                 to: number };
  const device = $("device").value;  // one of this user's phones (a call-back may be another's)
  if (device && registrations.some((r) => r.contact === device && r.user === body.user)) {
    body.device = device;
  }
  if ($("mode").value) body.mode = $("mode").value;
  if ($("confirm").checked) body.confirm = true;
  try {
    const call = await api("POST", "/v1/calls", body);
    showCurrent(call);
    loadCalls().catch(showListError);
  } catch (e) {
    $("call-error").textContent = e.message;
  }
}

function askToDial(number) {
  $("confirm-number").textContent = number;
  const dialog = $("confirm-dial");
  dialog.returnValue = "";  // Escape must not repeat an earlier "yes"
  dialog.onclose = () => { if (dialog.returnValue === "yes") dial(number); };
  dialog.showModal();
}

$("sign-in").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("sign-in-error").textContent = "";
  const token = $("token").value;
  const body = token ? { token } : { user: $("user").value, password: $("password").value };
  try {
    await showSignedIn(await api("POST", "/v1/session", body));
  } catch (e) {
    $("sign-in-error").textContent = e.message;
  }
});
$("sign-out").addEventListener("click", async () => {
  await api("DELETE", "/v1/session").catch(() => {});
  showSignIn();
});
$("as-user").addEventListener("input", showDevices);
$("call-box").addEventListener("submit", (ev) => { ev.preventDefault(); dial($("to").value); });
$("hang-up").addEventListener("click", async () => {
  if (current) await api("DELETE", `/v1/calls/${encodeURIComponent(current.id)}`).catch(() => {});
});
let searchTimer = 0;
$("book-search").addEventListener("input", () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(loadBook, 250);
});
let editing = null;  // the contact the form changes; null: it adds one

function editContact(c) {
  editing = c;
  $("book-name").value = c.name;
  $("book-numbers").value = c.numbers.join(", ");
  $("book-form-title").textContent = t.editContact;
  $("book-save").textContent = t.save;
  $("book-cancel").hidden = false;
  $("book-name").focus();
}

function stopEditing() {
  editing = null;
  $("book-add").reset();
  $("book-form-title").textContent = t.addContact;
  $("book-save").textContent = t.add;
  $("book-cancel").hidden = true;
}

$("book-cancel").addEventListener("click", () => { stopEditing(); $("book-name").focus(); });
$("book-add").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const numbers = $("book-numbers").value.split(",").map((n) => n.trim()).filter(Boolean);
  const body = { name: $("book-name").value, numbers };
  try {
    if (editing) {
      if (editing.url) body.url = editing.url;
      await api("PUT", `/v1/contacts/${editing.id}`, body);
    } else {
      await api("POST", "/v1/contacts", body);
    }
    $("book-status").textContent = "";
    const wasEditing = editing !== null;
    stopEditing();
    if (wasEditing) $("book-name").focus();
    loadBook();
  } catch (e) { $("book-status").textContent = e.message; }
});
// A request body may be 64 KiB: a bigger file goes in parts of whole entries (CSV rows
// under the header row again, vCards), each part imported as it arrives.
const PART_BYTES = 60000;
const MAX_FILE_BYTES = 16 * 1024 * 1024;

// {parts, skipped}: the file in parts, and how many entries alone are too big to send
// (a vCard with a large PHOTO): those are left out, the rest goes
function importParts(text) {
  const encoder = new TextEncoder();
  const size = (s) => encoder.encode(s).length;
  let head = "";
  let entries;
  if (/^\s*BEGIN:VCARD/i.test(text)) {
    entries = (text.match(/[\s\S]*?END:VCARD[ \t]*(?:\r\n|\n|\r)?|[\s\S]+$/gi) || [])
      .filter((entry) => entry.trim());
  } else {
    const lines = text.split(/(?<=\n)/);
    entries = [];
    let entry = "";
    for (const line of lines) {  // a quoted field may hold line breaks: keep it whole
      entry += line;
      if ((entry.match(/"/g) || []).length % 2 === 0) { entries.push(entry); entry = ""; }
    }
    if (entry) entries.push(entry);
    head = entries.shift() || "";
  }
  const parts = [];
  const headBytes = size(head);
  let part = "";
  let bytes = headBytes;
  let skipped = 0;
  for (const entry of entries) {
    const more = size(entry);
    if (headBytes + more > PART_BYTES) { skipped += 1; continue; }
    if (part && bytes + more > PART_BYTES) { parts.push(head + part); part = ""; bytes = headBytes; }
    part += entry;
    bytes += more;
  }
  if (part || !parts.length) parts.push(head + part);
  return { parts, skipped };
}

$("book-import").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const file = $("book-file").files[0];
  if (!file) return;
  const status = $("book-status");
  if (file.size > MAX_FILE_BYTES) {
    status.textContent = `${file.name}: > ${MAX_FILE_BYTES / 1048576} MiB`;
    return;
  }
  let imported = 0;
  const { parts, skipped } = importParts(await file.text());
  const tooBig = skipped ? `; ${skipped} ${t.tooBig}` : "";
  for (const part of parts) {
    const r = await fetch("/v1/contacts/import", {
      method: "POST", credentials: "same-origin", body: part,
      headers: { "Content-Type": "text/plain; charset=utf-8", "X-CSRF-Token": session.csrf },
    });
    const data = await r.json().catch(() => ({}));
    if (!r.ok) {
      status.textContent = `${imported} ${t.imported}${tooBig}; ` +
        ((data.error && data.error.message) || `HTTP ${r.status}`);
      loadBook();
      return;
    }
    imported += data.imported;
    status.textContent = `${imported} ${t.imported}${tooBig}`;
  }
  loadBook();
});
function showListError(e) { $("calls-status").textContent = e.message; }
const refilter = () => { listed = new Set(); loadCalls().catch(showListError); };
$("only-missed").addEventListener("change", refilter);
$("only-today").addEventListener("change", refilter);
$("more").addEventListener("click", () => loadCalls(true).catch(showListError));
$("protocol").addEventListener("click", () => {
  // tel: and sip: are safelisted; callto: only as web+callto
  for (const scheme of ["tel", "sip", "web+callto"]) {
    try { navigator.registerProtocolHandler(scheme, `${location.origin}/dial?to=%s`); } catch (e) { /* not offered */ }
  }
  $("protocol").textContent = t.protocolDone;
});

translate();
api("GET", "/v1/session").then(showSignedIn, showSignIn);
