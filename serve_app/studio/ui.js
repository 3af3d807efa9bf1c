// What every part of the studio shows with: DOM shorthands, the live announcer, error notices, and how a
// status or a video is named on screen.

export const $ = (selector, root = document) => root.querySelector(selector);

/** A new element: `props` sets `class`, `text`, DOM properties (non-string values) or attributes. */
export const el = (tag, props = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name in node && typeof value !== "string") node[name] = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
};

/** Read `text` out to screen readers (the announcer is an aria-live region). */
export function announce(text) {
  const node = $("#announcer");
  node.textContent = "";
  requestAnimationFrame(() => { node.textContent = text; });
}

/** Show `err` in the notice `node`, its `param` (or `label`) first. */
export function showError(node, err, label = null) {
  node.replaceChildren();
  if (err.param) node.append(el("span", { class: "param", text: label || err.param }), ": ");
  node.append(err.message);
  node.hidden = false;
}

export function hideError(node) {
  node.hidden = true;
  node.replaceChildren();
}

export const globalError = $("#global-error");

/** Show an error no view has a place for at the top of the page (a navigation away is not one). */
export function reportError(err) {
  if (err.name === "AbortError") return;
  showError(globalError, err);
}

export const statusText = (status) => (status || "").replace("_", " ");
export const title = (video) => video.title || video.prompt || video.id;
