// What a video's page can do to its video: cancel it, delete it (after asking), and start a remix or an
// extension of it.

import { api, forgetMedia } from "./api.js";
import { list } from "./library.js";
import { $, announce, hideError, reportError, showError, statusText } from "./ui.js";
import { page, renderVideo, setActions } from "./video-page.js";

/** POST a new video made from this one, then open its page. */
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

/** Wire the action buttons and forms of a video's page. */
export function initActions() {
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
}
