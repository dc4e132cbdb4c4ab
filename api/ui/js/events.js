// The live event stream (GET /v1/events/stream, Server-Sent Events) read with fetch(): EventSource cannot send the
// Authorization header the API needs. Resumes after the last id seen; stops when the credential lapses.

import {bearer} from "./api.js";

/** Parse SSE text blocks into {id, event, data}; returns what is left of an incomplete block. */
export function parseBlocks(buffer, emit) {
  const blocks = buffer.split(/\r?\n\r?\n/);
  const rest = blocks.pop();
  for (const block of blocks) {
    const message = {id: null, event: "message", data: []};
    for (const line of block.split(/\r?\n/)) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const key = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (key === "data") message.data.push(value);
      else if (key === "id" || key === "event") message[key] = value;
    }
    if (message.data.length || message.event !== "message") emit({...message, data: message.data.join("\n")});
  }
  return rest;
}

/**
 * Subscribe: ``onEvent({id, event, data})`` for each event, ``onState("live" | "reconnecting" | "stopped")``.
 * Returns a function that stops the stream.
 */
export function subscribe(onEvent, onState = () => {}) {
  const control = new AbortController();
  let lastId = null;
  let delay = 1000;

  async function once() {
    const auth = await bearer();
    if (!auth) return "stopped";
    const headers = {Authorization: auth, Accept: "text/event-stream"};
    if (lastId !== null) headers["Last-Event-ID"] = lastId;
    const response = await fetch("/v1/events/stream", {headers, signal: control.signal, cache: "no-store"});
    if (!response.ok) return response.status === 401 || response.status === 403 ? "stopped" : "retry";
    onState("live");
    delay = 1000;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let ended = null;
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer = parseBlocks(buffer + value, message => {
        if (message.event === "end") ended = JSON.parse(message.data || "{}").reason || "ended";
        else {
          if (message.id !== null) lastId = message.id;
          onEvent(message);
        }
      });
      if (ended) break;
    }
    // an expired token is refreshed by bearer() on the next attempt; a revoked one stops here
    return ended && ended !== "token_expired" ? "stopped" : "retry";
  }

  (async () => {
    while (!control.signal.aborted) {
      let outcome;
      try {
        outcome = await once();
      } catch {
        outcome = control.signal.aborted ? "stopped" : "retry";
      }
      if (outcome === "stopped") break;
      onState("reconnecting");
      await new Promise(resolve => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 30_000);
    }
    onState("stopped");
  })();
  return () => control.abort();
}
