// A video's page: its status and progress as the event stream tells them, its scenes, and once it is
// completed the player and the downloads.

import { TERMINAL, apiUrl, contentPath, hasKey, mediaSrc } from "./api.js";
import { followVideo } from "./events.js";
import { $, announce, el, hideError, reportError, showError, statusText, title } from "./ui.js";

// Each file a completed video may have, and its download link's text.
const VARIANTS = [
  ["video", "Video (MP4)"],
  ["thumbnail", "Thumbnail (JPEG)"],
  ["spritesheet", "Spritesheet (JPEG)"],
  ["captions", "Captions (WebVTT)"],
  ["audio", "Audio (M4A)"],
];

/** The video the page shows: its id, its last state, the controller that stops following it. */
export const page = {
  id: null,
  video: null,
  controller: null,
  playerReady: false,
};
const player = $("#player-video");

function resetVideoPage(id) {
  page.id = id;
  page.video = null;
  page.playerReady = false;
  $("#video-heading").textContent = "Video";
  $("#video-prompt").textContent = "";
  $("#video-status").textContent = "loading…";
  $("#video-status").dataset.status = "";
  $("#video-progress").value = 0;
  $("#video-percent").textContent = "0%";
  $("#video-queue").hidden = true;
  $("#video-seconds").textContent = "";
  $("#video-links").replaceChildren();
  hideError($("#video-error"));
  hideError($("#action-error"));
  $("#scene-list").replaceChildren();
  $("#downloads").replaceChildren();
  $("#player").hidden = true;
  stopPlayer();
  $("#delete-confirm").hidden = true;
  $("#remix-form").reset();
  $("#extend-form").reset();
  setActions(null);
}

function stopPlayer() {
  player.pause();
  player.removeAttribute("src");
  for (const track of player.querySelectorAll("track")) track.remove();
  player.load();
}

/** Enable the actions `video` takes (none while it is loading or gone: `video` null). */
export function setActions(video) {
  const finished = !video || TERMINAL.has(video.status);
  $("#cancel-button").disabled = finished;
  $("#delete-button").disabled = !video;
  const completed = video?.status === "completed";
  $("#actions-note").hidden = completed || !video;
  for (const button of document.querySelectorAll("#remix-form button, #extend-form button")) {
    button.disabled = !completed;
  }
}

/** Show `video`'s state, if the page still shows that video; a completed one gets its player. */
export function renderVideo(video) {
  if (video.id !== page.id) return;
  const before = page.video;
  page.video = video;
  $("#video-heading").textContent = title(video);
  $("#video-prompt").textContent = video.title && video.prompt !== video.title ? video.prompt : "";
  const status = $("#video-status");
  status.textContent = statusText(video.status);
  status.dataset.status = video.status;
  $("#video-progress").value = video.progress;
  $("#video-percent").textContent = `${video.progress}%`;
  const queue = $("#video-queue");
  const queued = video.status === "queued" && video.queue_position !== null && video.queue_position !== undefined;
  queue.hidden = !queued;
  if (queued) {
    const start = video.estimated_start_at
      ? `, starts about ${new Date(video.estimated_start_at * 1000).toLocaleTimeString()}`
      : "";
    queue.textContent = `Queue position ${video.queue_position + 1}${start}`;
  }
  $("#video-seconds").textContent = `${lengthText(video.seconds)} · ${video.size}`;
  const error = $("#video-error");
  if (video.error) showError(error, { message: `${video.error.message} (${video.error.code})` });
  else hideError(error);
  renderNotices(video);
  renderLinks(video);
  renderScenes(video);
  setActions(video);
  if (!before || before.status !== video.status) {
    announce(`Video ${statusText(video.status)}`);
  }
  if (video.status === "completed" && !page.playerReady) {
    page.playerReady = true;
    showPlayer(video).catch((err) => showError($("#video-error"), err));
  }
}

/** Where the video differs from what was asked (a narration longer than `seconds`, a silent voice). */
function renderNotices(video) {
  const notices = video.notices || [];
  const list = $("#video-notices");
  list.replaceChildren(...notices.map((notice) => el("li", { "data-code": notice.code, text: notice.message })));
  list.hidden = notices.length === 0;
}

/** A length as people read it: "2.6 s", not "2.648208616780045 s". */
function lengthText(value) {
  const number = Number(value);
  return Number.isFinite(number) ? `${Math.round(number * 10) / 10} s` : `${value} s`;
}

function renderLinks(video) {
  const links = $("#video-links");
  links.replaceChildren();
  const source = [
    ["Remix of", video.remixed_from_video_id],
    ["Extends", video.extended_from_video_id],
  ].filter(([, id]) => id);
  for (const [what, id] of source) {
    links.append(`${what} `, el("a", { href: `#/videos/${id}`, text: id }), " ");
  }
}

function renderScenes(video) {
  const items = video.scenes.map((scene) => {
    const n = scene.index + 1;
    const head = el(
      "div",
      { class: "head" },
      el("strong", { text: `Scene ${n}` }),
      el("span", { class: "status", "data-status": scene.status, text: statusText(scene.status) }),
      scene.generator ? el("span", { class: `badge ${scene.generator}`, text: scene.generator }) : null,
    );
    const facts = el(
      "div",
      { class: "facts" },
      el("span", { text: lengthText(scene.duration_s) }),
      scene.keyframe_generator ? el("span", { text: `keyframe: ${scene.keyframe_generator}` }) : null,
      scene.narration
        ? el("span", {
            class: "voice",
            text: scene.narration.silent
              ? `voice: ${scene.narration.voice} said nothing`
              : `voice: ${scene.narrator} ${scene.narration.voice}, ${lengthText(scene.narration.seconds)}`,
          })
        : null,
      el("span", { text: `segments: ${scene.segments_done}/${scene.segments}` }),
      scene.batch_size ? el("span", { text: `batch of ${scene.batch_size}` }) : null,
      scene.source_video_id ? el("span", { text: `clip taken from ${scene.source_video_id}` }) : null,
    );
    return el(
      "li",
      { class: "scene-item" },
      head,
      el("p", { class: "caption", text: scene.caption }),
      el("progress", { max: 100, value: scene.progress, "aria-label": `Scene ${n} progress` }),
      scene.generator === "fallback" && scene.fallback_reason
        ? el("p", { class: "fallback-reason", text: `Fallback: ${scene.fallback_reason}` })
        : null,
      scene.narration && scene.narration.fallback_reason
        ? el("p", { class: "fallback-reason", text: `Voice fallback: ${scene.narration.fallback_reason}` })
        : null,
      facts,
    );
  });
  $("#scene-list").replaceChildren(...items);
  $("#scenes-empty").hidden = items.length > 0;
}

async function showPlayer(video) {
  const id = video.id;
  // What the video has: `captions` only when it was asked for (older servers do not say: offer all).
  const has = new Set(video.variants && video.variants.length ? video.variants : VARIANTS.map(([v]) => v));
  const withCaptions = has.has("captions");
  const [videoSrc, captionsSrc] = await Promise.all([
    mediaSrc(id, "video"),
    withCaptions ? mediaSrc(id, "captions") : null,
  ]);
  if (page.id !== id) return;
  if (withCaptions) {
    player.append(el("track", { kind: "captions", label: "Captions", src: captionsSrc, default: true }));
  }
  player.src = videoSrc;
  const downloads = VARIANTS.filter(([variant]) => has.has(variant)).map(([variant, label]) =>
    el("li", {}, el("a", { href: apiUrl(contentPath(id, variant)), download: "", "data-variant": variant, text: label })),
  );
  $("#downloads").replaceChildren(...downloads);
  $("#player").hidden = false;
}

function renderGone(id, err) {
  if (page.id !== id) return;
  $("#video-heading").textContent = "Video not found";
  $("#video-status").textContent = "deleted or unknown";
  $("#video-status").dataset.status = "";
  showError($("#video-error"), { message: err.message });
  setActions(null);
  announce("Video not found");
}

// Download links cannot send the key either: with one, fetch the file and save it from a blob URL.
async function download(event) {
  const link = event.target.closest("a[data-variant]");
  if (!link || !hasKey() || !page.id) return;
  event.preventDefault();
  try {
    const src = await mediaSrc(page.id, link.dataset.variant);
    const extension = { video: "mp4", thumbnail: "jpg", spritesheet: "jpg", captions: "vtt", audio: "m4a" }[
      link.dataset.variant
    ];
    el("a", { href: src, download: `${page.id}-${link.dataset.variant}.${extension}` }).click();
  } catch (err) {
    showError($("#action-error"), err);
  }
}

/** Show video `id` and follow it until it ends (or the page is left). */
export function openVideoPage(id) {
  resetVideoPage(id);
  page.controller = new AbortController();
  const errors = $("#video-error");
  followVideo(id, page.controller.signal, {
    onVideo: renderVideo,
    onGone: (err) => renderGone(id, err),
    onError: (err) => showError(errors, err),
    onRecovered: () => hideError(errors),
  }).catch(reportError);
  $("#video-heading").focus();
  window.scrollTo(0, 0);
}

/** Stop following the video and stop its player. */
export function leaveVideoPage() {
  page.controller?.abort();
  page.controller = null;
  if (page.id) {
    stopPlayer();
    page.id = null;
  }
}

/** Wire the downloads (which need the key, when there is one). */
export function initVideoPage() {
  $("#downloads").addEventListener("click", download);
}
