// DOM helpers. Text goes in as text (textContent), never as markup; links only as http(s) URLs.

export const $ = (selector, root = document) => root.querySelector(selector);

// el("li", {className: "x", dataset: {id: 3}}, "text", child, ...)
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name === "text") node.textContent = String(value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "className" || name === "type" || name === "checked" || name === "disabled" || name === "value") node[name] = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// An absolute http(s) URL from the API, or null (never javascript:, data: or anything else).
export function safeUrl(value) {
  if (typeof value !== "string") return null;
  try {
    const url = new URL(value, location.href);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}

export function setText(selector, text) {
  const node = typeof selector === "string" ? $(selector) : selector;
  node.textContent = text;
}

const UNITS = ["bytes", "KB", "MB", "GB", "TB"];
export function bytes(n) {
  let value = Number(n) || 0;
  let unit = 0;
  while (value >= 1000 && unit < UNITS.length - 1) {
    value /= 1000;
    unit += 1;
  }
  if (unit === 0) return `${value} ${value === 1 ? "byte" : "bytes"}`;
  return `${value.toFixed(value < 10 ? 1 : 0)} ${UNITS[unit]}`;
}

export function date(value) {
  if (!value) return "";
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return "";
  return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

export function plural(n, one, many) {
  return `${n} ${n === 1 ? one : many || `${one}s`}`;
}

// A file's kind, as the page shows it.
export function kindOf(file) {
  const type = typeof file.media_type === "string" ? file.media_type : "";
  if (file.context === "voice") return "voice";
  for (const kind of ["image", "video", "audio"]) if (type.startsWith(`${kind}/`)) return kind;
  return "file";
}

export const KIND_LABEL = { image: "Image", video: "Video", audio: "Audio", voice: "Voice message", file: "File" };
