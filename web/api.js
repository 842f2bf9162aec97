// The API client: every call goes to /api/v1/ with the bearer token in a header (never in a URL).

const BASE = "/api/v1/";
const KEY = "gallery.session";

export class ApiError extends Error {
  constructor(status, message, body, retryAfter) {
    super(message);
    this.status = status;
    this.body = body || {};
    this.retryAfter = retryAfter;
  }
}

// The session (token, token_id, jid): in sessionStorage, or localStorage when "keep me signed in".
export const session = {
  load() {
    for (const store of [sessionStorage, localStorage]) {
      try {
        const value = JSON.parse(store.getItem(KEY) || "null");
        if (value && typeof value.token === "string") return value;
      } catch {
        store.removeItem(KEY);
      }
    }
    return null;
  },
  save(value, keep) {
    this.clear();
    (keep ? localStorage : sessionStorage).setItem(KEY, JSON.stringify(value));
  },
  clear() {
    sessionStorage.removeItem(KEY);
    localStorage.removeItem(KEY);
  },
};

let onUnauthorized = () => {};
export function whenUnauthorized(callback) {
  onUnauthorized = callback;
}

function retryAfter(header) {
  const seconds = Number.parseInt(header || "", 10);
  return Number.isFinite(seconds) ? seconds : null;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [name, value] of Object.entries(params || {})) {
    if (value === undefined || value === null || value === "") continue;
    for (const item of Array.isArray(value) ? value : [value]) q.append(name, String(item));
  }
  const text = q.toString();
  return text ? `?${text}` : "";
}

function headers(extra) {
  const h = { Accept: "application/json", ...extra };
  const s = session.load();
  if (s) h.Authorization = `Bearer ${s.token}`;
  return h;
}

async function parse(response) {
  if (response.status === 204) return null;
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const message = (body && typeof body.error === "string" && body.error) || response.statusText || "request failed";
    const error = new ApiError(response.status, message, body, retryAfter(response.headers.get("Retry-After")));
    if (response.status === 401 && session.load()) onUnauthorized(error);
    throw error;
  }
  return body;
}

// Requests in flight, on <body data-pending> (0 when the page is idle).
let pending = 0;
function track(delta) {
  pending += delta;
  document.body.dataset.pending = String(pending);
}

export async function call(method, path, { params, body, token } = {}) {
  const init = { method, headers: headers(), credentials: "omit", referrerPolicy: "no-referrer", cache: "no-store" };
  if (token) init.headers.Authorization = `Bearer ${token}`;
  let url = BASE + path;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  if (params) url += query(params);
  let response;
  track(1);
  try {
    response = await fetch(url, init);
    return await parse(response);
  } catch (error) {
    if (error instanceof ApiError) throw error;
    throw new ApiError(0, "the service cannot be reached: check your connection", {}, null);
  } finally {
    track(-1);
  }
}

export const get = (path, params) => call("GET", path, { params });

// An upload with progress, through XMLHttpRequest (fetch reports no upload progress).
// Returns {promise, abort}; onProgress(loaded, total) follows the real bytes sent.
export function upload(path, file, fields, onProgress) {
  const xhr = new XMLHttpRequest();
  const promise = new Promise((resolve, reject) => {
    xhr.open("POST", BASE + path);
    for (const [name, value] of Object.entries(headers())) xhr.setRequestHeader(name, value);
    xhr.responseType = "text";
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded, event.total);
    });
    xhr.addEventListener("load", () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        body = null;
      }
      if (xhr.status >= 200 && xhr.status < 300) {
        resolve(body);
        return;
      }
      const message = (body && typeof body.error === "string" && body.error) || `error ${xhr.status}`;
      const error = new ApiError(xhr.status, message, body, retryAfter(xhr.getResponseHeader("Retry-After")));
      if (xhr.status === 401) onUnauthorized(error);
      reject(error);
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "the upload was cut off", {}, null)));
    xhr.addEventListener("abort", () => reject(new ApiError(-1, "cancelled", {}, null)));
    const form = new FormData();
    for (const [name, value] of Object.entries(fields || {})) form.append(name, value);
    form.append("file", file, file.name);
    xhr.send(form);
  });
  return { promise, abort: () => xhr.abort() };
}
