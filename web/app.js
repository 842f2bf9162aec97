// gallery's web page: sign in with a code sent over XMPP, then files, quota, uploads, avatars,
// devices, the account and (for admins) the accounts. Everything from the API is shown as text.

import * as api from "./api.js";
import { $, KIND_LABEL, bytes, date, el, kindOf, plural, safeUrl, setText } from "./dom.js";

const UPLOADS_AT_ONCE = 3;
const STAT_KINDS = [
  ["images", "Images"],
  ["videos", "Videos"],
  ["audio", "Audio"],
  ["voices", "Voice messages"],
  ["files", "Other files"],
  ["avatars", "Avatars"],
];
const FILE_BUCKETS = ["images", "videos", "voices", "audio", "files"];

const state = {
  about: {},
  me: null, // the session: {token, token_id, jid}
  page: 1,
  totalPages: 0,
  items: [],
  selected: new Set(),
  typeFilter: false, // the API takes type=image|video|audio|voice|file
  accountsPage: 1,
  loginJid: "",
};

// -- status lines ------------------------------------------------------------------------------

function say(selector, text, kind = "info") {
  const node = $(selector);
  node.textContent = text;
  node.dataset.kind = kind;
}

const appSay = (text, kind) => say("#app-status", text, kind);

function waitText(seconds) {
  if (!seconds) return "a moment";
  if (seconds < 90) return plural(seconds, "second");
  return plural(Math.ceil(seconds / 60), "minute");
}

// -- confirmation dialog -----------------------------------------------------------------------

function confirmDialog(text, okLabel = "Delete") {
  const dialog = $("#confirm");
  setText("#confirm-text", text);
  setText("#confirm-ok", okLabel);
  return new Promise((resolve) => {
    const done = (value) => {
      if (dialog.open) dialog.close();
      resolve(value);
    };
    $("#confirm-ok").onclick = () => done(true);
    $("#confirm-cancel").onclick = () => done(false);
    dialog.oncancel = (event) => {
      event.preventDefault();
      done(false);
    };
    dialog.showModal();
    $("#confirm-cancel").focus();
  });
}

// -- about this service ------------------------------------------------------------------------

async function loadAbout() {
  try {
    state.about = await api.get("about/");
  } catch {
    state.about = {};
  }
  const about = state.about;
  const title = typeof about.title === "string" && about.title ? about.title : "gallery";
  document.title = title;
  setText("#title", title);
  const logo = safeUrl(about.logo);
  if (logo) {
    $("#logo").src = logo;
    $("#logo").hidden = false;
  }
  if (about.evaluation) {
    setText("#evaluation-jid", about.evaluation_jid || "");
    $("#evaluation").hidden = false;
    if (!$("#jid").value) $("#jid").value = about.evaluation_jid || "";
  }
}

// -- signing in --------------------------------------------------------------------------------

function codeRequestError(error, jid) {
  const domain = jid.includes("@") ? jid.split("@").pop() : jid;
  switch (error.status) {
    case 400:
      return `“${jid}” is not a valid XMPP address: ${(error.body.fields && error.body.fields.jid) || error.message}.`;
    case 403:
      return `This service does not accept this address (${domain}): ${error.message}.`;
    case 429:
      return `Too many code requests: wait ${waitText(error.retryAfter)} and try again.`;
    case 503:
      return `The service cannot send codes over XMPP right now (${error.message}). Try again later.`;
    case 0:
      return error.message;
    default:
      return `The code could not be requested: ${error.message}.`;
  }
}

function authError(error) {
  switch (error.status) {
    case 400:
      return `That is not a code: ${error.message}. Type the 6 digits you received.`;
    case 403:
      return `The code was not accepted: ${error.message}.`;
    case 429:
      return error.retryAfter
        ? `Too many wrong codes. Request a new code in ${waitText(error.retryAfter)}.`
        : `Too many attempts: ${error.message}.`;
    case 0:
      return error.message;
    default:
      return `Signing in failed: ${error.message}.`;
  }
}

function codeSentText(jid, apiJid) {
  const about = state.about;
  if (about.evaluation && jid === about.evaluation_jid) {
    return `A code for ${jid} was printed on the service's console (its log), on the line that starts with “EVALUATION SET-UP”.`;
  }
  if (about.code_hint) return `We sent a code to ${jid}. ${about.code_hint}`;
  return `We sent a code to ${jid}: a message from ${apiJid || about.api_jid || "this service"} in your XMPP client.`;
}

async function requestCode(event) {
  event.preventDefault();
  const jid = $("#jid").value.trim();
  if (!jid) {
    say("#login-status", "Type your XMPP address, for example you@example.org.", "error");
    $("#jid").focus();
    return;
  }
  $("#send-code").disabled = true;
  say("#login-status", "Sending a code…");
  try {
    const answer = await api.call("POST", "account/xmpp_code_request/", { body: { jid } });
    state.loginJid = jid;
    setText("#code-sent", codeSentText(jid, answer && answer.api_jid));
    say("#login-status", "");
    $("#code-form").hidden = true;
    $("#auth-form").hidden = false;
    $("#code").value = "";
    $("#code").focus();
  } catch (error) {
    say("#login-status", codeRequestError(error, jid), "error");
  } finally {
    $("#send-code").disabled = false;
  }
}

function haveCode() {
  const jid = $("#jid").value.trim();
  if (!jid) {
    say("#login-status", "Type your XMPP address first.", "error");
    $("#jid").focus();
    return;
  }
  state.loginJid = jid;
  const evaluation = state.about.evaluation && jid === state.about.evaluation_jid;
  setText("#code-sent", evaluation ? "Type the code printed on the service's console (its log), on the line that starts with “EVALUATION SET-UP”." : `Type the code you received for ${jid}.`);
  say("#login-status", "");
  $("#code-form").hidden = true;
  $("#auth-form").hidden = false;
  $("#code").focus();
}

function deviceName() {
  const ua = navigator.userAgent;
  const browser = /Firefox\//.test(ua) ? "Firefox" : /Edg\//.test(ua) ? "Edge" : /Chrom/.test(ua) ? "Chromium" : /Safari\//.test(ua) ? "Safari" : "a browser";
  const system = /Android/.test(ua) ? "Android" : /iPhone|iPad/.test(ua) ? "iOS" : /Windows/.test(ua) ? "Windows" : /Mac OS/.test(ua) ? "macOS" : /Linux/.test(ua) ? "Linux" : "";
  return system ? `${browser} on ${system}` : browser;
}

async function signIn(event) {
  event.preventDefault();
  const code = $("#code").value.trim();
  if (!/^[0-9]{6}$/.test(code)) {
    say("#login-status", "The code is 6 digits.", "error");
    $("#code").focus();
    return;
  }
  $("#sign-in").disabled = true;
  say("#login-status", "Signing in…");
  try {
    const answer = await api.call("POST", "account/xmpp_auth/", {
      body: { jid: state.loginJid, code, device: deviceName(), client: "gallery web page" },
    });
    const me = { token: answer.token, token_id: answer.token_id, jid: state.loginJid.split("/")[0].toLowerCase() };
    api.session.save(me, $("#keep").checked);
    $("#code").value = "";
    say("#login-status", "");
    await enter(me);
  } catch (error) {
    say("#login-status", authError(error), "error");
    if (error.status === 429) backToAddress();
  } finally {
    $("#sign-in").disabled = false;
  }
}

function backToAddress() {
  $("#auth-form").hidden = true;
  $("#code-form").hidden = false;
}

function showLogin(message, kind = "info") {
  state.me = null;
  $("#app").hidden = true;
  $("#who").hidden = true;
  $("#login").hidden = false;
  backToAddress();
  say("#login-status", message || "", kind);
}

async function logOut() {
  const me = state.me;
  api.session.clear(); // first: answers still on their way no longer count as "signed out elsewhere"
  showLogin("Signing out…");
  if (me) {
    try {
      await api.call("DELETE", "account/tokens/", { body: { token_id: me.token_id }, token: me.token });
    } catch {
      // the token may already be gone: either way it is forgotten here
    }
  }
  say("#login-status", "You are signed out.");
  $("#jid").focus();
}

api.whenUnauthorized(() => {
  api.session.clear();
  showLogin("Your session has ended (it expired, or it was signed out from another device). Sign in again.", "error");
});

// -- tabs --------------------------------------------------------------------------------------

const loaders = {
  files: () => Promise.all([loadFiles(), loadQuota()]),
  avatars: () => loadAvatars(),
  devices: () => loadTokens(),
  account: () => loadAccountSummary(),
  admin: () => loadAccounts(),
};

function showTab(name) {
  for (const button of document.querySelectorAll(".tabs button")) {
    if (button.dataset.tab === name) button.setAttribute("aria-current", "page");
    else button.removeAttribute("aria-current");
  }
  for (const section of document.querySelectorAll(".tab")) section.hidden = section.id !== name;
  appSay("");
  loaders[name]().catch(report);
}

function report(error) {
  if (error && error.status === 401) return; // handled: back to the login form
  appSay(error && error.message ? `Something went wrong: ${error.message}.` : "Something went wrong.", "error");
}

async function enter(me) {
  state.me = me;
  setText("#who-jid", me.jid);
  setText("#account-jid", me.jid);
  $("#login").hidden = true;
  $("#who").hidden = false;
  $("#app").hidden = false;
  try {
    await probeTypeFilter();
    showTab("files");
    await probeAdmin();
  } catch (error) {
    report(error);
  }
}

async function probeTypeFilter() {
  // Older services ignore `type`; one that knows it refuses an unknown value with a 400.
  try {
    await api.get("files/", { type: "not-a-kind", obj_per_page: 1 });
    state.typeFilter = false;
  } catch (error) {
    if (error.status !== 400) throw error;
    state.typeFilter = true;
  }
  $("#f-kind-file").hidden = !state.typeFilter;
}

async function probeAdmin() {
  try {
    await api.get("account/list/", { obj_per_page: 1 });
    $("#admin-tab").hidden = false;
  } catch (error) {
    if (error.status !== 403) throw error;
    $("#admin-tab").hidden = true;
  }
}

// -- quota -------------------------------------------------------------------------------------

async function loadQuota() {
  const [quota, stats] = await Promise.all([api.get("account/quota/"), api.get("files/stats/")]);
  const used = Number(quota.used) || 0;
  const total = Number(quota.quota) || 0;
  const percent = total > 0 ? Math.min(100, (100 * used) / total) : 100;
  setText("#quota-text", `${bytes(used)} of ${bytes(total)} used · ${bytes(quota.available)} free`);
  setText("#quota-percent", `${percent.toFixed(percent < 10 ? 1 : 0)} %`);
  const bar = $("#quota-bar");
  bar.setAttribute("aria-valuenow", percent.toFixed(1));
  bar.setAttribute("aria-valuetext", `${bytes(used)} of ${bytes(total)}`);
  bar.dataset.used = String(used);
  bar.classList.toggle("full", percent >= 90);
  $("#quota-fill").style.width = `${percent}%`;
  const list = $("#kinds");
  list.replaceChildren(
    ...STAT_KINDS.map(([key, label]) => {
      const bucket = stats[key] || { count: 0, used: 0 };
      return el("li", { dataset: { kind: key } }, el("span", { text: label }), el("span", { text: `${bucket.count} · ${bytes(bucket.used)}` }));
    }),
  );
  state.quota = quota;
}

// -- files -------------------------------------------------------------------------------------

function filterParams() {
  const params = {};
  const kind = $("#f-kind").value;
  if (kind) {
    if (state.typeFilter) params.type = kind;
    else if (kind === "voice") params.context = "voice";
    else params.media_type = kind;
  }
  if ($("#f-from").value) params.date_gte = $("#f-from").value;
  if ($("#f-to").value) params.date_lte = $("#f-to").value;
  return params;
}

function filterDescription() {
  const parts = [];
  const kind = $("#f-kind");
  parts.push(kind.value ? kind.options[kind.selectedIndex].textContent.toLowerCase() : "files");
  if ($("#f-from").value) parts.push(`from ${$("#f-from").value}`);
  if ($("#f-to").value) parts.push(`until ${$("#f-to").value}`);
  return parts.join(" ");
}

async function loadFiles() {
  const perPage = Number($("#f-per-page").value) || 48;
  const asked = (state.asked = (state.asked || 0) + 1);
  const answer = await api.get("files/", { ...filterParams(), order_by: $("#f-sort").value, obj_per_page: perPage, page: state.page });
  if (asked !== state.asked) return answer; // a newer request (the filter changed meanwhile) wins
  if (answer.items.length === 0 && state.page > 1 && answer.total_pages > 0) {
    state.page = answer.total_pages;
    return loadFiles();
  }
  state.items = answer.items;
  state.totalPages = answer.total_pages;
  state.total = answer.total_objects;
  const ids = new Set(answer.items.map((f) => String(f.id)));
  for (const id of state.selected) if (!ids.has(id)) state.selected.delete(id);
  render();
  return answer;
}

function fileLink(file) {
  return safeUrl(file.file);
}

function thumbOrIcon(file) {
  const kind = kindOf(file);
  const thumb = file.thumbnail && safeUrl(file.thumbnail.url);
  if (thumb) {
    return el("img", { src: thumb, alt: "", loading: "lazy", width: file.thumbnail.width || 128, height: file.thumbnail.height || 128 });
  }
  return el("span", { className: `icon icon-${kind}`, "aria-hidden": "true", text: KIND_LABEL[kind].split(" ")[0] });
}

function selectBox(file) {
  const box = el("input", { type: "checkbox", className: "pick", "aria-label": `Select ${file.name}`, checked: state.selected.has(String(file.id)) });
  box.addEventListener("change", () => {
    if (box.checked) state.selected.add(String(file.id));
    else state.selected.delete(String(file.id));
    updateSelection();
  });
  return box;
}

function fileActions(file) {
  const link = fileLink(file);
  return el(
    "div",
    { className: "actions" },
    link ? el("a", { href: link, target: "_blank", rel: "noopener noreferrer", className: "button", "aria-label": `Open ${file.name}`, text: "Open" }) : null,
    el("button", { type: "button", "aria-label": `Copy the link of ${file.name}`, text: "Copy link", onclick: () => copyLink(link) }),
    el("button", { type: "button", className: "danger", "aria-label": `Delete ${file.name}`, text: "Delete", onclick: () => deleteOne(file) }),
  );
}

function render() {
  const list = $('input[name="view"]:checked').value === "list";
  $("#grid").hidden = list;
  $("#list-wrap").hidden = !list;
  $("#empty").hidden = state.items.length > 0;
  if (list) {
    $("#grid").replaceChildren();
    $("#list tbody").replaceChildren(
      ...state.items.map((file) =>
        el(
          "tr",
          { dataset: { id: file.id } },
          el("td", {}, selectBox(file)),
          el("td", { className: "name" }, el("span", { className: "file-name", text: file.name })),
          el("td", { text: KIND_LABEL[kindOf(file)] }),
          el("td", { text: bytes(file.size) }),
          el("td", {}, el("time", { datetime: file.created_at || "", text: date(file.created_at) })),
          el("td", { text: file.expires_at ? date(file.expires_at) : "never" }),
          el("td", {}, fileActions(file)),
        ),
      ),
    );
  } else {
    $("#list tbody").replaceChildren();
    $("#grid").replaceChildren(
      ...state.items.map((file) =>
        el(
          "li",
          { className: "tile", dataset: { id: file.id, kind: kindOf(file) } },
          el("div", { className: "thumb" }, thumbOrIcon(file), selectBox(file)),
          el("p", { className: "file-name", title: file.name, text: file.name }),
          el("p", { className: "muted meta", text: `${KIND_LABEL[kindOf(file)]} · ${bytes(file.size)} · ${date(file.created_at)}` }),
          file.expires_at ? el("p", { className: "muted meta", text: `Expires ${date(file.expires_at)}` }) : null,
          fileActions(file),
        ),
      ),
    );
  }
  const pages = Math.max(1, state.totalPages);
  setText("#page-info", `Page ${Math.min(state.page, pages)} of ${pages}`);
  $("#prev").disabled = state.page <= 1;
  $("#next").disabled = state.page >= state.totalPages;
  setText("#count", `${plural(state.total || 0, "file")} match`);
  $("#delete-filtered").disabled = Object.keys(filterParams()).length === 0 || !state.total;
  updateSelection();
}

function updateSelection() {
  const n = state.selected.size;
  const button = $("#delete-selected");
  button.disabled = n === 0;
  button.textContent = n ? `Delete ${plural(n, "selected file")}` : "Delete selected";
  const all = $("#select-all");
  all.checked = state.items.length > 0 && state.items.every((f) => state.selected.has(String(f.id)));
}

async function copyLink(link) {
  if (!link) return;
  try {
    await navigator.clipboard.writeText(link);
    appSay("The link is copied.");
  } catch {
    const field = el("textarea", { className: "sr-only", "aria-hidden": "true" });
    field.value = link;
    document.body.append(field);
    field.select();
    const ok = document.execCommand("copy");
    field.remove();
    appSay(ok ? "The link is copied." : `Copy this link: ${link}`);
  }
}

async function afterDelete(answer, what) {
  appSay(`Deleted ${what}.`);
  await Promise.all([loadFiles(), loadQuota()]);
  return answer;
}

async function deleteOne(file) {
  if (!(await confirmDialog(`Delete “${file.name}” (${bytes(file.size)})? Its link stops working.`))) return;
  try {
    await api.call("DELETE", "files/", { body: { id: [file.id] } });
    state.selected.delete(String(file.id));
    await afterDelete(null, `“${file.name}”`);
  } catch (error) {
    report(error);
  }
}

async function deleteSelected() {
  const chosen = state.items.filter((f) => state.selected.has(String(f.id))); // the selection is of this page
  const ids = chosen.map((f) => f.id); // as the API gave them (integers, or strings from older services)
  const size = chosen.reduce((sum, f) => sum + (Number(f.size) || 0), 0);
  if (!(await confirmDialog(`Delete ${plural(ids.length, "file")} (${bytes(size)})? Their links stop working.`))) return;
  try {
    const answer = await api.call("DELETE", "files/", { body: { id: ids } });
    state.selected.clear();
    await afterDelete(answer, plural(answer.deleted, "file"));
  } catch (error) {
    report(error);
  }
}

async function matchingSize(params, count) {
  if (!("context" in params)) {
    const stats = await api.get("files/stats/", params);
    return FILE_BUCKETS.reduce((sum, key) => sum + ((stats[key] && Number(stats[key].used)) || 0), 0);
  }
  let size = 0;
  for (let page = 1; (page - 1) * 500 < count; page += 1) {
    const answer = await api.get("files/", { ...params, obj_per_page: 500, page });
    size += answer.items.reduce((sum, f) => sum + (Number(f.size) || 0), 0);
  }
  return size;
}

async function deleteFiltered() {
  const params = filterParams();
  if (Object.keys(params).length === 0) return;
  try {
    const counted = await api.get("files/", { ...params, obj_per_page: 1 });
    const count = counted.total_objects;
    if (!count) {
      appSay("No file matches the filter.");
      return;
    }
    const size = await matchingSize(params, count);
    const question = `Delete all ${filterDescription()}: ${plural(count, "file")}, ${bytes(size)}? Their links stop working.`;
    if (!(await confirmDialog(question, `Delete ${plural(count, "file")}`))) return;
    const answer = await api.call("DELETE", "files/", { body: params });
    state.selected.clear();
    state.page = 1;
    await afterDelete(answer, plural(answer.deleted, "file"));
  } catch (error) {
    report(error);
  }
}

// -- uploads -----------------------------------------------------------------------------------

const queue = [];
let active = 0;
let refreshTimer = null;

function refreshSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => {
    Promise.all([loadFiles(), loadQuota()]).catch(report);
  }, 150);
}

function uploadError(error) {
  switch (error.status) {
    case -1:
      return "Cancelled.";
    case 0:
      return "The upload was cut off: check your connection and try again.";
    case 403:
      return `Refused: not enough space left in your quota (${error.message}).`;
    case 413:
      return `Refused: the file is larger than this service accepts (${error.message}).`;
    case 415:
      return `Refused: this kind of file is not accepted here (${error.message}).`;
    case 429:
      return `Refused: too many uploads in a short time; try again in ${waitText(error.retryAfter)}.`;
    case 503:
      return "Refused: the service is busy; try again in a moment.";
    default:
      return `Refused: ${error.message}.`;
  }
}

function addUploads(files) {
  for (const file of files) {
    const status = el("span", { className: "up-status", text: "Waiting…" });
    const bar = el("progress", { max: Math.max(1, file.size), value: 0, "aria-label": `Upload of ${file.name}` });
    const cancel = el("button", { type: "button", className: "link", text: "Cancel", "aria-label": `Cancel the upload of ${file.name}` });
    const item = el("li", { className: "upload", dataset: { state: "waiting" } }, el("span", { className: "file-name", text: file.name }), el("span", { className: "muted", text: bytes(file.size) }), bar, status, cancel);
    const job = { file, item, bar, status, cancel, handle: null };
    cancel.addEventListener("click", () => cancelUpload(job));
    $("#uploads").prepend(item);
    const limit = Number(state.about.max_file_size) || 0;
    if (limit && file.size > limit) {
      finish(job, "refused", `Refused: the file is larger than this service accepts (at most ${bytes(limit)}).`);
      continue;
    }
    queue.push(job);
  }
  pump();
}

function finish(job, result, text) {
  job.item.dataset.state = result;
  job.status.textContent = text;
  job.cancel.hidden = true;
  appSay(`${job.file.name}: ${text}`, result === "refused" ? "error" : "info"); // announced once, not every percent
  $("#clear-uploads").hidden = false;
}

function clearUploads() {
  for (const item of [...document.querySelectorAll("#uploads .upload")]) {
    if (item.dataset.state !== "waiting" && item.dataset.state !== "sending") item.remove();
  }
  $("#clear-uploads").hidden = true;
}

function cancelUpload(job) {
  const waiting = queue.indexOf(job);
  if (waiting >= 0) {
    queue.splice(waiting, 1);
    finish(job, "cancelled", "Cancelled.");
  } else if (job.handle) {
    job.handle.abort();
  }
}

function pump() {
  while (active < UPLOADS_AT_ONCE && queue.length) start(queue.shift());
}

function start(job) {
  active += 1;
  job.item.dataset.state = "sending";
  job.status.textContent = "0 %";
  job.handle = api.upload("files/upload/", job.file, {}, (loaded, total) => {
    job.bar.max = Math.max(1, total);
    job.bar.value = loaded;
    job.item.dataset.sent = String(loaded);
    job.status.textContent = loaded >= total ? "Processing…" : `${Math.floor((100 * loaded) / Math.max(1, total))} %`;
  });
  job.handle.promise
    .then(() => {
      job.bar.value = job.bar.max;
      finish(job, "done", "Uploaded.");
      refreshSoon();
    })
    .catch((error) => {
      finish(job, error.status === -1 ? "cancelled" : "refused", uploadError(error));
      if (error.status === 429 || error.status === 0 || error.status === 503) {
        const retry = el("button", { type: "button", className: "link", text: "Retry", "aria-label": `Retry the upload of ${job.file.name}` });
        retry.addEventListener("click", () => {
          retry.remove();
          job.cancel.hidden = false;
          job.item.dataset.state = "waiting";
          job.status.textContent = "Waiting…";
          queue.push(job);
          pump();
        });
        job.item.append(retry);
      }
    })
    .finally(() => {
      active -= 1;
      pump();
    });
}

function setUpDrop() {
  const zone = $("#drop");
  const on = (event) => {
    event.preventDefault();
    zone.classList.add("over");
  };
  const off = () => zone.classList.remove("over");
  zone.addEventListener("dragenter", on);
  zone.addEventListener("dragover", on);
  zone.addEventListener("dragleave", off);
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    off();
    if (event.dataTransfer && event.dataTransfer.files.length) addUploads([...event.dataTransfer.files]);
  });
  // a file dropped elsewhere on the page must not navigate away from it
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
  $("#picker").addEventListener("change", (event) => {
    addUploads([...event.target.files]);
    event.target.value = "";
  });
}

// -- avatars -----------------------------------------------------------------------------------

function thumbSizes(avatar) {
  const sizes = (avatar.thumbnails || []).map((t) => Number(t.width)).filter(Boolean);
  return sizes.length ? `thumbnails ${sizes.join(", ")} px` : "no thumbnails";
}

async function loadAvatars() {
  const answer = await api.get("avatar/", { obj_per_page: 100 });
  $("#avatars-empty").hidden = answer.items.length > 0;
  $("#avatar-list").replaceChildren(
    ...answer.items.map((avatar) => {
      const thumbs = avatar.thumbnails || [];
      const preview = thumbs.find((t) => t.width >= 128) || thumbs[thumbs.length - 1];
      const src = safeUrl(preview ? preview.url : avatar.file);
      return el(
        "li",
        { className: "tile", dataset: { id: avatar.id } },
        el("div", { className: "thumb" }, src ? el("img", { src, alt: `Avatar ${avatar.name}`, width: 128, height: 128 }) : null),
        el("p", { className: "file-name", text: avatar.name }),
        el("p", { className: "muted meta", text: `${avatar.width || "?"}×${avatar.height || "?"} · ${bytes(avatar.size)} · ${thumbSizes(avatar)}` }),
        el("div", { className: "actions" }, el("button", { type: "button", className: "danger", text: "Delete", "aria-label": `Delete the avatar ${avatar.name}`, onclick: () => deleteAvatar(avatar) })),
      );
    }),
  );
}

async function uploadAvatar(event) {
  const file = event.target.files[0];
  event.target.value = "";
  if (!file) return;
  say("#avatar-status", `Uploading ${file.name}…`);
  $("#avatar-result").hidden = true;
  try {
    const avatar = await api.upload("avatar/upload/", file, {}, () => {}).promise;
    const src = safeUrl(avatar.file);
    if (src) $("#avatar-result-img").src = src;
    setText("#avatar-result-text", `Cropped to ${avatar.width}×${avatar.height}; ${thumbSizes(avatar)}.`);
    $("#avatar-result").hidden = false;
    say("#avatar-status", `${file.name} is your new avatar.`);
    await Promise.all([loadAvatars(), loadQuota()]);
  } catch (error) {
    say("#avatar-status", uploadError(error), "error");
  }
}

async function deleteAvatar(avatar) {
  if (!(await confirmDialog(`Delete the avatar “${avatar.name}”?`))) return;
  try {
    await api.call("DELETE", "avatar/", { body: { id: avatar.id } });
    say("#avatar-status", "The avatar is deleted.");
    $("#avatar-result").hidden = true;
    await Promise.all([loadAvatars(), loadQuota()]);
  } catch (error) {
    say("#avatar-status", `The avatar could not be deleted: ${error.message}.`, "error");
  }
}

// -- devices -----------------------------------------------------------------------------------

async function loadTokens() {
  const tokens = await api.get("account/tokens/");
  $("#tokens tbody").replaceChildren(
    ...tokens.map((token) => {
      const name = token.device || "Unnamed device";
      const action = token.current
        ? el("button", { type: "button", text: "Log out", onclick: logOut })
        : el("button", { type: "button", className: "danger", text: "Sign out", "aria-label": `Sign out ${name}`, onclick: () => revoke(token) });
      return el(
        "tr",
        { dataset: { id: token.token_id, current: token.current ? "true" : "false" } },
        el("td", {}, el("span", { text: name }), token.current ? el("strong", { className: "tag", text: "this device" }) : null),
        el("td", { text: token.client || "" }),
        el("td", { text: date(token.created_at) }),
        el("td", { text: token.last_used_at ? date(token.last_used_at) : "never" }),
        el("td", {}, action),
      );
    }),
  );
  $("#revoke-others").disabled = tokens.filter((t) => !t.current).length === 0;
}

async function revoke(token) {
  try {
    await api.call("DELETE", "account/tokens/", { body: { token_id: token.token_id } });
    appSay(`${token.device || "The device"} is signed out.`);
    await loadTokens();
  } catch (error) {
    report(error);
  }
}

async function revokeOthers() {
  if (!(await confirmDialog("Sign out every other device? They will need a new code to sign in.", "Sign them out"))) return;
  try {
    await api.call("DELETE", "account/tokens/", { body: { all: true } });
    appSay("Every other device is signed out.");
    await loadTokens();
  } catch (error) {
    report(error);
  }
}

// -- account -----------------------------------------------------------------------------------

async function loadAccountSummary() {
  const stats = await api.get("files/stats/");
  const files = FILE_BUCKETS.reduce((sum, key) => sum + ((stats[key] && stats[key].count) || 0), 0);
  const avatars = (stats.avatars && stats.avatars.count) || 0;
  state.summary = { files, avatars, used: stats.used };
  setText("#account-summary", `You keep ${plural(files, "file")} and ${plural(avatars, "avatar")} here (${bytes(stats.used)}).`);
}

async function deleteAccount() {
  await loadAccountSummary();
  const s = state.summary;
  const question = `Delete the account ${state.me.jid}? This removes ${plural(s.files, "file")} and ${plural(s.avatars, "avatar")} (${bytes(s.used)}) — every link to them stops working — and signs out every device. It cannot be undone.`;
  if (!(await confirmDialog(question, "Delete my account"))) return;
  try {
    await api.call("DELETE", "account/");
    api.session.clear();
    showLogin("Your account and everything in it are deleted.");
  } catch (error) {
    report(error);
  }
}

// -- admin: accounts ---------------------------------------------------------------------------

const MIB = 1024 * 1024;

async function loadAccounts() {
  const vhost = $("#a-vhost").value.trim();
  const answer = await api.get("account/list/", { vhost, page: state.accountsPage, obj_per_page: 50 });
  $("#accounts tbody").replaceChildren(
    ...answer.items.map((account) => {
      const input = el("input", { type: "number", min: "0", step: "any", value: String(Math.round((account.quota / MIB) * 100) / 100), "aria-label": `Quota of ${account.jid} in MiB` });
      const save = el("button", { type: "submit", text: "Save", "aria-label": `Save the quota of ${account.jid}` });
      const form = el("form", { className: "quota-form" }, input, save);
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        setQuota(account.jid, input.value);
      });
      return el(
        "tr",
        { dataset: { jid: account.jid } },
        el("td", { text: account.jid }),
        el("td", { className: "used", text: `${bytes(account.used)} of ${bytes(account.quota)}` }),
        el("td", { text: String(account.files) }),
        el("td", { text: account.last_login ? date(account.last_login) : "never" }),
        el("td", {}, form),
      );
    }),
  );
  const pages = Math.max(1, answer.total_pages);
  setText("#a-page-info", `Page ${Math.min(state.accountsPage, pages)} of ${pages} · ${plural(answer.total_objects, "account")}`);
  $("#a-prev").disabled = state.accountsPage <= 1;
  $("#a-next").disabled = state.accountsPage >= answer.total_pages;
}

async function setQuota(jid, mib) {
  const value = Math.round(Number(mib) * MIB);
  if (!Number.isFinite(value) || value < 0) {
    appSay("A quota is a number of MiB, 0 or more.", "error");
    return;
  }
  try {
    const answer = await api.call("PUT", "account/quota/", { body: { jid, value } });
    appSay(`The quota of ${answer.jid} is now ${bytes(answer.quota)}.`);
    await loadAccounts();
    if (jid === state.me.jid) await loadQuota();
  } catch (error) {
    report(error);
  }
}

// -- wiring ------------------------------------------------------------------------------------

function wire() {
  $("#code-form").addEventListener("submit", requestCode);
  $("#auth-form").addEventListener("submit", signIn);
  $("#have-code").addEventListener("click", haveCode);
  $("#other-jid").addEventListener("click", () => {
    backToAddress();
    say("#login-status", "");
    $("#jid").focus();
  });
  $("#logout").addEventListener("click", logOut);
  for (const button of document.querySelectorAll(".tabs button")) button.addEventListener("click", () => showTab(button.dataset.tab));
  const reload = () => {
    state.page = 1;
    loadFiles().catch(report);
  };
  for (const id of ["#f-kind", "#f-from", "#f-to", "#f-sort", "#f-per-page"]) $(id).addEventListener("change", reload);
  for (const radio of document.querySelectorAll('input[name="view"]')) radio.addEventListener("change", render);
  $("#filters").addEventListener("submit", (event) => event.preventDefault());
  $("#prev").addEventListener("click", () => {
    state.page = Math.max(1, state.page - 1);
    loadFiles().catch(report);
  });
  $("#next").addEventListener("click", () => {
    state.page += 1;
    loadFiles().catch(report);
  });
  $("#select-all").addEventListener("change", (event) => {
    for (const file of state.items) {
      if (event.target.checked) state.selected.add(String(file.id));
      else state.selected.delete(String(file.id));
    }
    render();
  });
  $("#delete-selected").addEventListener("click", deleteSelected);
  $("#clear-uploads").addEventListener("click", clearUploads);
  $("#delete-filtered").addEventListener("click", deleteFiltered);
  $("#avatar-picker").addEventListener("change", uploadAvatar);
  $("#revoke-others").addEventListener("click", revokeOthers);
  $("#delete-account").addEventListener("click", deleteAccount);
  $("#admin-filter").addEventListener("submit", (event) => {
    event.preventDefault();
    state.accountsPage = 1;
    loadAccounts().catch(report);
  });
  $("#a-prev").addEventListener("click", () => {
    state.accountsPage = Math.max(1, state.accountsPage - 1);
    loadAccounts().catch(report);
  });
  $("#a-next").addEventListener("click", () => {
    state.accountsPage += 1;
    loadAccounts().catch(report);
  });
  setUpDrop();
}

async function main() {
  wire();
  await loadAbout();
  const me = api.session.load();
  if (me) {
    await enter(me);
  } else {
    showLogin();
  }
  document.body.dataset.ready = "true";
}

main();
