// storyreel studio: plain JavaScript over the service's Videos API (no framework, no build step).
//
// One code path for every request: `request()` adds the API key when there is one and, on a 401, asks for
// a key and tries again. The event stream is read with fetch too (EventSource cannot send a header), and
// media goes through blob URLs when a key is set (<video> and <img> cannot send one either).
"use strict";

(() => {
  const TERMINAL = new Set(["completed", "failed", "cancelled"]);
  const VARIANTS = [
    ["video", "Video (MP4)"],
    ["thumbnail", "Thumbnail (JPEG)"],
    ["spritesheet", "Spritesheet (JPEG)"],
    ["captions", "Captions (WebVTT)"],
    ["audio", "Audio (M4A)"],
  ];
  // The spritesheet's grid, as engines/media/processor.py writes it by default (VideoProcessingConfig:
  // `spritesheet_tiles` frames at most, each `spritesheet_tile_width` pixels wide). The columns and rows
  // are read from the image itself, so only a deployment that changes the tile width needs these changed.
  const SPRITE_TILES = 20;
  const SPRITE_TILE_WIDTH = 192;
  const POLL_MS = 2000;
  const RECONNECT_MS = 2000; // the stream's own `retry: 2000`
  const KEY_STORAGE = "storyreel.apiKey";
  // Everything before the trailing "/" or "/index.html" is the route prefix the app is served under.
  const PREFIX = location.pathname.replace(/\/(index\.html)?$/, "");

  const $ = (selector, root = document) => root.querySelector(selector);
  const el = (tag, props = {}, ...children) => {
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
  const sleep = (ms, signal) =>
    new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      signal?.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
    });

  // -- the API ------------------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message, param = null, code = null, retryAfter = null) {
      super(message);
      this.status = status;
      this.param = param;
      this.code = code;
      this.retryAfter = retryAfter;
    }
  }

  let apiKey = sessionStorage.getItem(KEY_STORAGE) || "";
  const apiUrl = (path) => `${PREFIX}${path}`;
  const contentPath = (id, variant) => `/v1/videos/${encodeURIComponent(id)}/content?variant=${variant}`;

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
  async function request(path, { method = "GET", body, json, headers = {}, signal } = {}) {
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

  const api = async (path, options) => (await request(path, options)).json();

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
    announce("API key forgotten");
    route();
  });
  $("#key-button").hidden = !apiKey;
  $("#key-button").textContent = "Forget API key";

  // -- media --------------------------------------------------------------------------------------------

  const blobUrls = new Map(); // "id:variant" -> Promise of an object URL

  /** A URL a media element can load: the plain URL without a key, else the file fetched as a blob. */
  function mediaSrc(id, variant) {
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

  function forgetMedia(id = null) {
    for (const [key, url] of blobUrls) {
      if (id && !key.startsWith(`${id}:`)) continue;
      blobUrls.delete(key);
      url.then(URL.revokeObjectURL, () => {});
    }
  }

  // -- messages -----------------------------------------------------------------------------------------

  function announce(text) {
    const node = $("#announcer");
    node.textContent = "";
    requestAnimationFrame(() => { node.textContent = text; });
  }

  function showError(node, err, label = null) {
    node.replaceChildren();
    if (err.param) node.append(el("span", { class: "param", text: label || err.param }), ": ");
    node.append(err.message);
    node.hidden = false;
  }

  function hideError(node) {
    node.hidden = true;
    node.replaceChildren();
  }

  const globalError = $("#global-error");

  function reportError(err) {
    if (err.name === "AbortError") return;
    showError(globalError, err);
  }

  const statusText = (status) => (status || "").replace("_", " ");
  const title = (video) => video.title || video.prompt || video.id;

  // -- the create form ----------------------------------------------------------------------------------

  const form = $("#create-form");
  const sceneRows = $("#scene-rows");
  const createError = $("#create-error");
  let sceneCounter = 0;

  function renumberScenes() {
    [...sceneRows.children].forEach((row, i) => {
      const n = i + 1;
      row.querySelector('[data-label="caption"]').textContent = `Scene ${n} caption`;
      row.querySelector('[data-label="duration_s"]').textContent = `Scene ${n} duration (s)`;
      row.querySelector('[data-label="motion"]').textContent = `Scene ${n} motion`;
      row.querySelector(".remove-scene").setAttribute("aria-label", `Remove scene ${n}`);
    });
  }

  function addScene() {
    const row = $("#scene-row-template").content.firstElementChild.cloneNode(true);
    sceneCounter += 1;
    for (const input of row.querySelectorAll("[data-field]")) {
      const field = input.dataset.field;
      input.id = `scene-${sceneCounter}-${field}`;
      const label = input.closest(".field").querySelector("label");
      label.htmlFor = input.id;
      label.dataset.label = field;
    }
    row.querySelector(".remove-scene").addEventListener("click", () => {
      const next = row.nextElementSibling || row.previousElementSibling;
      row.remove();
      renumberScenes();
      (next ? next.querySelector("input") : $("#add-scene")).focus();
    });
    sceneRows.append(row);
    renumberScenes();
    row.querySelector("input").focus();
  }

  $("#add-scene").addEventListener("click", addScene);

  const reference = $("#input_reference");
  const referencePreview = $("#reference-preview");
  const referenceImage = $("#reference-image");

  reference.addEventListener("change", () => {
    if (referenceImage.src) URL.revokeObjectURL(referenceImage.src);
    const file = reference.files[0];
    if (file) referenceImage.src = URL.createObjectURL(file);
    else referenceImage.removeAttribute("src");
    referencePreview.hidden = !file;
  });
  $("#clear-reference").addEventListener("click", () => {
    reference.value = "";
    reference.dispatchEvent(new Event("change"));
    reference.focus();
  });

  function readScenes() {
    return [...sceneRows.children].map((row) => {
      const scene = { caption: row.querySelector('[data-field="caption"]').value.trim() };
      const duration = row.querySelector('[data-field="duration_s"]').value.trim();
      const motion = row.querySelector('[data-field="motion"]').value;
      if (duration) scene.duration_s = Number(duration);
      if (motion) scene.motion = motion;
      return scene;
    });
  }

  /** The form's input the API's `param` names (`seconds`, `scenes.1.caption`, ...), if there is one. */
  function fieldFor(param) {
    if (!param) return null;
    const [name, index, sub] = param.split(".");
    if (name === "scenes" && index !== undefined) {
      const row = sceneRows.children[Number(index)];
      if (row) return row.querySelector(`[data-field="${sub || "caption"}"]`) || row.querySelector("input");
    }
    if (name === "size") return form.querySelector('input[name="size"]:checked');
    if (name === "scenes") return sceneRows.querySelector("input") || $("#add-scene");
    return form.querySelector(`#${CSS.escape(name)}`);
  }

  function labelFor(input) {
    if (!input) return null;
    if (input.name === "size") return "Size";
    const label = input.labels?.[0] || input.closest("fieldset")?.querySelector("legend");
    return label ? label.firstChild.textContent.trim() : null;
  }

  function clearCreateError() {
    hideError(createError);
    for (const node of form.querySelectorAll('[aria-invalid="true"]')) {
      node.removeAttribute("aria-invalid");
      node.removeAttribute("aria-describedby");
    }
  }

  function showCreateError(err) {
    const input = fieldFor(err.param);
    const label = labelFor(input);
    showError(createError, err, label && err.param ? `${label} (${err.param})` : err.param);
    if (input && input.tagName !== "BUTTON") {
      input.setAttribute("aria-invalid", "true");
      input.setAttribute("aria-describedby", "create-error");
      input.focus();
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearCreateError();
    const prompt = $("#prompt").value.trim();
    if (!prompt) {
      showCreateError(new ApiError(400, "write what the video should show", "prompt"));
      return;
    }
    const data = new FormData();
    data.append("prompt", prompt);
    for (const name of ["seconds", "style", "num_scenes"]) {
      const value = $(`#${name}`).value.trim();
      if (value) data.append(name, value);
    }
    data.append("size", form.querySelector('input[name="size"]:checked').value);
    const scenes = readScenes();
    if (scenes.length) data.append("scenes", JSON.stringify(scenes));
    if (reference.files[0]) data.append("input_reference", reference.files[0]);
    data.append("continuity", String($("#continuity").checked));
    data.append("captions", String($("#captions").checked));
    data.append("narration", String($("#narration").checked));
    data.append("burn_subtitles", String($("#burn_subtitles").checked));

    const submit = $("#create-submit");
    submit.disabled = true;
    submit.textContent = "Creating…";
    try {
      const video = await api("/v1/videos", { method: "POST", body: data });
      list.prepend(video);
      announce(`Video created, ${statusText(video.status)}`);
    } catch (err) {
      if (err.name !== "AbortError") showCreateError(err);
    } finally {
      submit.disabled = false;
      submit.textContent = "Create video";
    }
  });

  // -- the list of videos -------------------------------------------------------------------------------

  const list = {
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

  $("#more").addEventListener("click", () => list.load(true).catch(reportError));

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

  // -- a video's page -----------------------------------------------------------------------------------

  const page = {
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

  function setActions(video) {
    const finished = !video || TERMINAL.has(video.status);
    $("#cancel-button").disabled = finished;
    $("#delete-button").disabled = !video;
    const completed = video?.status === "completed";
    $("#actions-note").hidden = completed || !video;
    for (const button of document.querySelectorAll("#remix-form button, #extend-form button")) {
      button.disabled = !completed;
    }
  }

  function renderVideo(video) {
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

  // Download links cannot send the key either: with one, fetch the file and save it from a blob URL.
  $("#downloads").addEventListener("click", async (event) => {
    const link = event.target.closest("a[data-variant]");
    if (!link || !apiKey || !page.id) return;
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
  });

  /** Follow the video's event stream until it finishes; reconnect when the stream ends before that. */
  async function followEvents(id, signal) {
    while (!signal.aborted) {
      try {
        const response = await request(`/v1/videos/${encodeURIComponent(id)}/events`, {
          headers: { Accept: "text/event-stream" },
          signal,
        });
        for await (const event of readEvents(response.body, signal)) {
          if (event.type !== "video") continue;
          const video = JSON.parse(event.data);
          renderVideo(video);
          if (TERMINAL.has(video.status)) return;
        }
        hideError($("#video-error"));
      } catch (err) {
        if (signal.aborted || err.name === "AbortError") return;
        if (err.status === 404) {
          renderGone(id, err);
          return;
        }
        if (err.status === 401) {
          showError($("#video-error"), err); // the key prompt was turned down: do not ask again
          return;
        }
        showError($("#video-error"), {
          message: `${err.message} — trying again in a moment`,
        });
        await sleep((err.retryAfter || RECONNECT_MS / 1000) * 1000, signal);
        continue;
      }
      await sleep(RECONNECT_MS, signal);
    }
  }

  /** Server-sent events from a byte stream: `event:` and `data:` lines, a blank line ends an event. */
  async function* readEvents(body, signal) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    const stopReading = () => reader.cancel().catch(() => {});
    signal.addEventListener("abort", stopReading, { once: true });
    let buffer = "";
    let type = "message";
    let data = [];
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buffer += value;
        const lines = buffer.split(/\r\n|\r|\n/);
        buffer = lines.pop();
        for (const line of lines) {
          if (line === "") {
            // A "\r\n" split across two reads makes an extra blank line: an event with no data is dropped.
            if (data.length) yield { type, data: data.join("\n") };
            type = "message";
            data = [];
            continue;
          }
          if (line.startsWith(":")) continue; // a comment (keep-alive)
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const value_ = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "event") type = value_;
          else if (field === "data") data.push(value_);
          // `retry:` and `id:` are ignored: the reconnect delay is fixed, and every event is the whole video.
        }
      }
    } finally {
      signal.removeEventListener("abort", stopReading);
      stopReading();
    }
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

  $("#cancel-button").addEventListener("click", async () => {
    const id = page.id;
    hideError($("#action-error"));
    $("#cancel-button").disabled = true;
    try {
      renderVideo(await api(`/v1/videos/${id}/cancel`, { method: "POST" }));
    } catch (err) {
      // Most likely a 409: it ended before the cancel landed. Say so, and show where it ended.
      showError($("#action-error"), err);
      try {
        renderVideo(await api(`/v1/videos/${id}`));
      } catch (again) {
        reportError(again);
      }
    }
  });

  $("#delete-button").addEventListener("click", () => {
    $("#delete-confirm").hidden = false;
    $("#delete-no").focus();
  });
  $("#delete-no").addEventListener("click", () => {
    $("#delete-confirm").hidden = true;
    $("#delete-button").focus();
  });
  $("#delete-yes").addEventListener("click", async () => {
    const id = page.id;
    hideError($("#action-error"));
    $("#delete-yes").disabled = true;
    try {
      await api(`/v1/videos/${id}`, { method: "DELETE" });
      forgetMedia(id);
      list.remove(id);
      announce("Video deleted");
      location.hash = "#/";
    } catch (err) {
      showError($("#action-error"), err);
    } finally {
      $("#delete-yes").disabled = false;
    }
  });

  async function startFrom(path, body, form) {
    hideError($("#action-error"));
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const video = await api(path, { method: "POST", json: body });
      announce(`New video created, ${statusText(video.status)}`);
      location.hash = `#/videos/${video.id}`;
    } catch (err) {
      showError($("#action-error"), err);
      setActions(page.video);
    }
  }

  $("#remix-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const prompt = $("#remix-prompt").value.trim();
    startFrom(`/v1/videos/${page.id}/remix`, { prompt }, event.target);
  });

  $("#extend-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const prompt = $("#extend-prompt").value.trim();
    const seconds = Number($("#extend-seconds").value);
    startFrom("/v1/videos/extensions", { video: { id: page.id }, prompt, seconds }, event.target);
  });

  // -- routes -------------------------------------------------------------------------------------------

  function showView(name) {
    $("#list-view").hidden = name !== "list";
    $("#video-view").hidden = name !== "video";
  }

  function leave() {
    list.stop();
    page.controller?.abort();
    page.controller = null;
    if (page.id) {
      stopPlayer();
      page.id = null;
    }
    hideError(globalError);
  }

  function route() {
    leave();
    const match = location.hash.match(/^#\/videos\/([\w-]+)$/);
    if (match) {
      showView("video");
      resetVideoPage(match[1]);
      page.controller = new AbortController();
      followEvents(match[1], page.controller.signal).catch(reportError);
      $("#video-heading").focus();
      window.scrollTo(0, 0);
    } else {
      showView("list");
      list.load().then(() => list.start(), reportError);
      if (location.hash) $("#list-heading").focus();
    }
  }

  window.addEventListener("hashchange", route);
  route();
})();
