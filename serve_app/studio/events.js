// A video's server-sent events, read with fetch (EventSource cannot send an API key).

import { TERMINAL, request } from "./api.js";

const RECONNECT_MS = 2000; // the stream's own `retry: 2000`
const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });

/**
 * Follow video `id`'s event stream until the video ends; reconnect when the stream ends before that.
 * The page shows what happens: `onVideo(video)` each state the stream sends, `onGone(err)` a video that is
 * not there (404), `onError(err)` a failure (the key prompt turned down, or a retry on its way), and
 * `onRecovered()` a stream that ran and ended cleanly.
 */
export async function followVideo(id, signal, { onVideo, onGone, onError, onRecovered }) {
  while (!signal.aborted) {
    try {
      const response = await request(`/v1/videos/${encodeURIComponent(id)}/events`, {
        headers: { Accept: "text/event-stream" },
        signal,
      });
      for await (const event of readEvents(response.body, signal)) {
        if (event.type !== "video") continue;
        const video = JSON.parse(event.data);
        onVideo(video);
        if (TERMINAL.has(video.status)) return;
      }
      onRecovered();
    } catch (err) {
      if (signal.aborted || err.name === "AbortError") return;
      if (err.status === 404) {
        onGone(err);
        return;
      }
      if (err.status === 401) {
        onError(err); // the key prompt was turned down: do not ask again
        return;
      }
      onError({
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
