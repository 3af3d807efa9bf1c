// The service's Videos API, as the studio calls it.
//
// One code path for every request: `request()` adds the API key when there is one and, on a 401, asks for
// a key and tries again. Media goes through blob URLs when a key is set (<video> and <img> cannot send
// one), so the key's owner is the only one who can forget them.

import { $ } from "./ui.js";

/** The statuses a video ends in. */
export const TERMINAL = new Set(["completed", "failed", "cancelled"]);
const KEY_STORAGE = "storyreel.apiKey";
// Everything before the trailing "/" or "/index.html" is the route prefix the app is served under.
const PREFIX = location.pathname.replace(/\/(index\.html)?$/, "");

export class ApiError extends Error {
  constructor(status, message, param = null, code = null, retryAfter = null) {
    super(message);
    this.status = status;
    this.param = param;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

let apiKey = sessionStorage.getItem(KEY_STORAGE) || "";
export const hasKey = () => Boolean(apiKey);
export const apiUrl = (path) => `${PREFIX}${path}`;
export const contentPath = (id, variant) => `/v1/videos/${encodeURIComponent(id)}/content?variant=${variant}`;

async function readError(response) {
  const retryAfter = Number(response.headers.get("retry-after")) || null;
  try {
    const { error } = await response.json();
    return new ApiError(response.status, error.message, error.param, error.code, retryAfter);
  } catch {
    return new ApiError(response.status, `the service answered ${response.status}`, null, null, retryAfter);
  }
}

/** fetch() against the API, with the key; a 401 asks for a key and tries again. Non-2xx throws ApiError. */
export async function request(path, { method = "GET", body, json, headers = {}, signal } = {}) {
  for (;;) {
    const sent = { ...headers };
    if (apiKey) sent.Authorization = `Bearer ${apiKey}`;
    let payload = body;
    if (json !== undefined) {
      sent["Content-Type"] = "application/json";
      payload = JSON.stringify(json);
    }
    let response;
    try {
      response = await fetch(apiUrl(path), { method, headers: sent, body: payload, signal });
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError(0, "Cannot reach the service (network error). Check the connection and try again.");
    }
    if (response.status === 401) {
      await askForKey(await readError(response));
      continue;
    }
    if (!response.ok) throw await readError(response);
    return response;
  }
}

/** `request()`, and the answer's JSON. */
export const api = async (path, options) => (await request(path, options)).json();

// -- API keys -----------------------------------------------------------------------------------------

let keyPrompt = null;

/** Show the key dialog (once, however many requests are waiting); resolves when a key is entered. */
function askForKey(error) {
  if (keyPrompt) return keyPrompt;
  const dialog = $("#key-dialog");
  const input = $("#api-key");
  $("#key-reason").textContent =
    apiKey && error.code === "invalid_api_key"
      ? "That key was refused. Enter a valid API key."
      : "This service asks for an API key.";
  input.value = "";
  keyPrompt = new Promise((resolve, reject) => {
    const done = (key) => {
      dialog.removeEventListener("close", onClose);
      keyPrompt = null;
      if (key) {
        setKey(key);
        resolve();
      } else {
        reject(new ApiError(401, "An API key is needed to use this service.", "authorization", error.code));
      }
    };
    const onClose = () => done(dialog.returnValue === "use" ? input.value.trim() : "");
    dialog.addEventListener("close", onClose);
    dialog.returnValue = "";
    dialog.showModal();
    input.focus();
  });
  return keyPrompt;
}

function setKey(key) {
  apiKey = key;
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
  $("#key-button").hidden = !key;
  forgetMedia();
}

/** Wire the key dialog and the "Forget API key" button; `onForget` runs after the key is forgotten. */
export function initKeys(onForget) {
  $("#key-form").addEventListener("submit", (event) => {
    if (!$("#api-key").value.trim()) {
      event.preventDefault();
      $("#api-key").setAttribute("aria-invalid", "true");
      $("#api-key").focus();
    } else {
      $("#api-key").removeAttribute("aria-invalid");
    }
  });
  $("#key-cancel").addEventListener("click", () => $("#key-dialog").close(""));
  $("#key-button").addEventListener("click", () => {
    setKey("");
    onForget();
  });
  $("#key-button").hidden = !apiKey;
  $("#key-button").textContent = "Forget API key";
}

// -- media --------------------------------------------------------------------------------------------

const blobUrls = new Map(); // "id:variant" -> Promise of an object URL

/** A URL a media element can load: the plain URL without a key, else the file fetched as a blob. */
export function mediaSrc(id, variant) {
  if (!apiKey) return Promise.resolve(apiUrl(contentPath(id, variant)));
  const key = `${id}:${variant}`;
  if (!blobUrls.has(key)) {
    const url = request(contentPath(id, variant))
      .then((response) => response.blob())
      .then((blob) => URL.createObjectURL(blob));
    url.catch(() => blobUrls.delete(key));
    blobUrls.set(key, url);
  }
  return blobUrls.get(key);
}

/** Let go of the blob URLs of video `id` (or of every video). */
export function forgetMedia(id = null) {
  for (const [key, url] of blobUrls) {
    if (id && !key.startsWith(`${id}:`)) continue;
    blobUrls.delete(key);
    url.then(URL.revokeObjectURL, () => {});
  }
}
