// The list of videos: one card per video, a page at a time, the running ones polled; a completed card
// shows its thumbnail and scrubs its spritesheet.

import { TERMINAL, api, mediaSrc } from "./api.js";
import { $, announce, el, globalError, hideError, reportError, statusText, title } from "./ui.js";

// The spritesheet's grid, as engines/media/processor.py writes it by default (VideoProcessingConfig:
// `spritesheet_tiles` frames at most, each `spritesheet_tile_width` pixels wide). The columns and rows
// are read from the image itself, so only a deployment that changes the tile width needs these changed.
const SPRITE_TILES = 20;
const SPRITE_TILE_WIDTH = 192;
const POLL_MS = 2000;

/** The cards on the list page, and the timer that keeps the running ones fresh. */
export const list = {
  cards: new Map(), // id -> {node, video, update}
  madeHere: new Set(), // ids created from the form while a page load was under way
  after: null,
  timer: null,
  polling: false,

  async load(more = false) {
    const params = new URLSearchParams({ limit: "20", order: "desc" });
    if (more && this.after) params.set("after", this.after);
    const moreButton = $("#more");
    moreButton.disabled = true;
    try {
      const page = await api(`/v1/videos?${params}`);
      if (more) for (const video of page.data) this.append(video);
      else this.replace(page.data);
      this.after = page.last_id;
      moreButton.hidden = !page.has_more;
      this.refreshEmpty();
    } finally {
      moreButton.disabled = false;
    }
  },

  /** Show ``videos`` (the first page), keeping the cards already there (their images, their focus). */
  replace(videos) {
    const cards = new Map();
    // Videos made here since the page was asked for are not on it yet: they stay on top.
    const shown = new Set(videos.map((video) => video.id));
    for (const id of this.madeHere) {
      if (!shown.has(id) && this.cards.has(id)) cards.set(id, this.cards.get(id));
    }
    this.madeHere.clear();
    for (const video of videos) {
      const card = this.cards.get(video.id) || makeCard(video);
      card.update(video);
      cards.set(video.id, card);
    }
    this.cards = cards;
    $("#video-list").replaceChildren(...[...cards.values()].map((card) => card.node));
  },

  refreshEmpty() {
    $("#list-empty").hidden = this.cards.size > 0;
  },

  append(video) {
    if (this.cards.has(video.id)) return this.cards.get(video.id).update(video);
    const card = makeCard(video);
    this.cards.set(video.id, card);
    $("#video-list").append(card.node);
  },

  prepend(video) {
    const card = makeCard(video);
    this.madeHere.add(video.id);
    this.cards.set(video.id, card);
    $("#video-list").prepend(card.node);
    this.refreshEmpty();
  },

  remove(id) {
    this.cards.get(id)?.node.remove();
    this.cards.delete(id);
    this.refreshEmpty();
  },

  start() {
    this.stop();
    this.timer = setInterval(() => this.poll(), POLL_MS);
  },

  stop() {
    clearInterval(this.timer);
    this.timer = null;
  },

  /** Refresh every card that is still running (a list page only says where each video was then). */
  async poll() {
    if (this.polling) return;
    this.polling = true;
    try {
      const running = [...this.cards.values()].filter((card) => !TERMINAL.has(card.video.status));
      for (const card of running) {
        try {
          card.update(await api(`/v1/videos/${card.video.id}`));
        } catch (err) {
          if (err.status === 404) this.remove(card.video.id);
          else throw err;
        }
      }
      hideError(globalError);
    } catch (err) {
      reportError(err);
    } finally {
      this.polling = false;
    }
  },
};

const reducedMotion = window.matchMedia("(prefers-reduced-motion: reduce)");

function makeCard(video) {
  const id = video.id;
  const statusId = `card-status-${id}`;
  const image = el("img", { alt: "", decoding: "async" });
  const sheet = el("div", { class: "sheet" });
  const thumb = el("div", { class: "thumb" }, image, sheet);
  const [width, height] = (video.size || "16x9").split("x").map(Number);
  sheet.style.aspectRatio = `${width} / ${height}`;
  const titleNode = el("span", { class: "title" });
  const link = el(
    "a",
    { class: "card-link", href: `#/videos/${id}`, "aria-describedby": statusId },
    thumb,
    el("div", { class: "body" }, titleNode),
  );
  const status = el("span", { class: "status" });
  const queue = el("span", { class: "queue" });
  const percent = el("span", { class: "percent" });
  const progress = el("progress", { max: 100 });
  const meta = el("div", { class: "meta", id: statusId }, status, percent, queue);
  const node = el("li", { "data-id": id }, el("article", { class: "card" }, link, el("div", { class: "body" }, meta, progress)));
  const card = { node, video, update };
  let thumbLoaded = false;
  let scrub = null;

  function update(next) {
    const changed = card.video.status !== next.status;
    card.video = next;
    titleNode.textContent = title(next);
    status.textContent = statusText(next.status);
    status.dataset.status = next.status;
    percent.textContent = `${next.progress}%`;
    progress.value = next.progress;
    progress.setAttribute("aria-label", `Progress of ${title(next)}`);
    const queued = next.status === "queued" && next.queue_position !== null && next.queue_position !== undefined;
    queue.textContent = queued ? `queue position ${next.queue_position + 1}` : "";
    queue.hidden = !queued;
    if (changed) announce(`${title(next)}: ${statusText(next.status)}`);
    if (next.status === "completed" && !thumbLoaded) {
      thumbLoaded = true;
      mediaSrc(id, "thumbnail").then((src) => { image.src = src; }, () => { thumbLoaded = false; });
      scrub = scrubber(next, thumb, sheet, link);
    }
    if (next.status !== "completed") thumb.dataset.placeholder = statusText(next.status);
  }

  update(video);
  return card;
}

/** Hover (or focus) a completed card to scrub its spritesheet: the pointer's x picks the tile. */
function scrubber(video, thumb, sheet, link) {
  let grid = null; // {cols, rows, count} once the sheet has loaded
  let loading = null;
  let index = 0;
  let timer = null;

  function load() {
    loading ??= mediaSrc(video.id, "spritesheet").then(async (src) => {
      const img = new Image();
      img.src = src;
      await img.decode();
      const [w, h] = video.size.split("x").map(Number);
      const cols = Math.max(1, Math.round(img.naturalWidth / SPRITE_TILE_WIDTH));
      const tileHeight = (img.naturalWidth / cols) * (h / w);
      const rows = Math.max(1, Math.round(img.naturalHeight / tileHeight));
      grid = { cols, rows, count: Math.min(SPRITE_TILES, cols * rows) };
      sheet.style.backgroundImage = `url("${src}")`;
      sheet.style.backgroundSize = `${cols * 100}% ${rows * 100}%`;
    }).catch(() => { loading = null; });
    return loading;
  }

  function show(i) {
    if (!grid) return;
    index = ((i % grid.count) + grid.count) % grid.count;
    const col = index % grid.cols;
    const row = Math.floor(index / grid.cols);
    const x = grid.cols > 1 ? (col / (grid.cols - 1)) * 100 : 0;
    const y = grid.rows > 1 ? (row / (grid.rows - 1)) * 100 : 0;
    sheet.style.backgroundPosition = `${x}% ${y}%`;
    thumb.classList.add("scrubbing");
  }

  function stop() {
    clearInterval(timer);
    timer = null;
    thumb.classList.remove("scrubbing");
  }

  thumb.addEventListener("pointerenter", load);
  thumb.addEventListener("pointermove", (event) => {
    if (!grid) return;
    const box = thumb.getBoundingClientRect();
    const fraction = Math.min(Math.max((event.clientX - box.left) / box.width, 0), 0.9999);
    show(Math.floor(fraction * grid.count));
  });
  thumb.addEventListener("pointerleave", () => { if (document.activeElement !== link) stop(); });
  // By keyboard: focus plays the frames through (or, with reduced motion, shows the middle one);
  // the left and right arrow keys step through them.
  link.addEventListener("focus", async () => {
    await load();
    if (document.activeElement !== link || !grid) return;
    if (reducedMotion.matches) show(Math.floor(grid.count / 2));
    else {
      show(0);
      timer = setInterval(() => show(index + 1), 250);
    }
  });
  link.addEventListener("keydown", (event) => {
    if (!grid || (event.key !== "ArrowLeft" && event.key !== "ArrowRight")) return;
    event.preventDefault();
    clearInterval(timer);
    show(index + (event.key === "ArrowRight" ? 1 : -1));
  });
  link.addEventListener("blur", stop);
  return { stop };
}

/** Wire the "More" button (the next page of videos). */
export function initLibrary() {
  $("#more").addEventListener("click", () => list.load(true).catch(reportError));
}
