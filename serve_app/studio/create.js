// The "New video" form: its scene rows, the reference image or clip, and errors shown at the field they name.

import { ApiError, api } from "./api.js";
import { $, announce, hideError, showError, statusText } from "./ui.js";

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

const reference = $("#input_reference");
const referencePreview = $("#reference-preview");
const referenceImage = $("#reference-image");
const referenceVideo = $("#reference-video");

/** Show the chosen file: an image as one, a clip as a player (the video continues from its last frame). */
function previewReference() {
  for (const element of [referenceImage, referenceVideo]) {
    if (element.src) URL.revokeObjectURL(element.src);
    element.removeAttribute("src");
    element.hidden = true;
  }
  const file = reference.files[0];
  if (file) {
    const element = file.type.startsWith("video/") ? referenceVideo : referenceImage;
    element.src = URL.createObjectURL(file);
    element.hidden = false;
  }
  referencePreview.hidden = !file;
}

// A clip's preview rests on its last frame: the one the new video continues from.
function showLastFrame() {
  if (Number.isFinite(referenceVideo.duration)) referenceVideo.currentTime = referenceVideo.duration;
}

function clearReference() {
  reference.value = "";
  reference.dispatchEvent(new Event("change"));
  reference.focus();
}

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

/** Send the form as a new video; `onCreated(video)` shows it. */
async function create(onCreated) {
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
    onCreated(video);
    announce(`Video created, ${statusText(video.status)}`);
  } catch (err) {
    if (err.name !== "AbortError") showCreateError(err);
  } finally {
    submit.disabled = false;
    submit.textContent = "Create video";
  }
}

/** Wire the form; `onCreated(video)` runs with each video it creates. */
export function initCreateForm(onCreated) {
  $("#add-scene").addEventListener("click", addScene);
  reference.addEventListener("change", previewReference);
  referenceVideo.addEventListener("loadedmetadata", showLastFrame);
  $("#clear-reference").addEventListener("click", clearReference);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    create(onCreated);
  });
}
