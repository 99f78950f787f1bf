// The API client: the key from localStorage as `Authorization: Bearer`, errors as ApiError.

const KEY = "orchestrator.apiKey";

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

export function apiKey() {
  return localStorage.getItem(KEY);
}

export function setApiKey(key) {
  if (key) localStorage.setItem(KEY, key);
  else localStorage.removeItem(KEY);
}

let onUnauthenticated = () => {};
export function whenUnauthenticated(callback) {
  onUnauthenticated = callback;
}

function query(params) {
  const search = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v === null || v === undefined || v === "") continue;
    for (const one of Array.isArray(v) ? v : [v]) search.append(k, one);
  }
  const text = search.toString();
  return text ? "?" + text : "";
}

export async function request(method, path, { params, body, signal } = {}) {
  const headers = { Accept: "application/json" };
  const key = apiKey();
  if (key) headers.Authorization = "Bearer " + key;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch("/api/v1" + path + query(params), {
      method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "unreachable", "The API does not answer: " + err.message);
  }
  let data = null;
  const text = await response.text();
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = (data && data.error) || {};
    const err = new ApiError(response.status, error.code || "http_" + response.status,
      error.message || `${method} ${path}: HTTP ${response.status}`, error.details);
    // A 401 for a key since replaced (a request sent before the user entered one) is no news.
    if (response.status === 401 && key === apiKey()) onUnauthenticated(err);
    throw err;
  }
  return data;
}

export const get = (path, params, signal) => request("GET", path, { params, signal });
export const post = (path, body, params) => request("POST", path, { body, params });
