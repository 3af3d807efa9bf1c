// storyreel studio: plain JavaScript over the service's Videos API (no framework, no build step).
//
// The page is two views, picked by the URL's hash: the list of videos with the create form (#/), and one
// video's page (#/videos/<id>). Each module wires its own part of the page; this one routes between them.

import { initActions } from "./actions.js";
import { initKeys } from "./api.js";
import { initCreateForm } from "./create.js";
import { initLibrary, list } from "./library.js";
import { $, announce, globalError, hideError, reportError } from "./ui.js";
import { initVideoPage, leaveVideoPage, openVideoPage } from "./video-page.js";

function showView(name) {
  $("#list-view").hidden = name !== "list";
  $("#video-view").hidden = name !== "video";
}

function leave() {
  list.stop();
  leaveVideoPage();
  hideError(globalError);
}

function route() {
  leave();
  const match = location.hash.match(/^#\/videos\/([\w-]+)$/);
  if (match) {
    showView("video");
    openVideoPage(match[1]);
  } else {
    showView("list");
    list.load().then(() => list.start(), reportError);
    if (location.hash) $("#list-heading").focus();
  }
}

initKeys(() => {
  announce("API key forgotten");
  route();
});
initCreateForm((video) => list.prepend(video));
initLibrary();
initVideoPage();
initActions();
window.addEventListener("hashchange", route);
route();
