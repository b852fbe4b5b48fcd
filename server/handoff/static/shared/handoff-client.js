/* The browser side of docs/protocol.md, shared by the agent console and the customer widget.
 *
 * - `api()`: the HTTP API with `Authorization: Bearer`, errors as ApiError {status, code, message}.
 * - `connect()`: a Socket.IO connection to /handoff with the official client (static/vendor/socket.io.min.js),
 *   reconnecting by itself; `call()` sends an event and resolves with its ack.
 * - `LiveSession`: what a signed-in page does with that connection, the same on both pages: after every
 *   (re)connect it `resume`s what the page follows, then sends its Outbox again; a drop holds the outbox; a refused
 *   token is forgotten. The page supplies only its event handlers, what to resume and how to show it.
 * - `Transcript`: one conversation's stored events keyed by seq, so an event seen twice (a broadcast and the
 *   `resume` ack after a reconnect) is shown once, and `lastSeq` is the highest seq up to which nothing is missing:
 *   exactly what `resume` asks for; `renderEvents()` keeps a list of its items in seq order.
 * - `Outbox`: messages with a `client_id` kept until the server acknowledged them, sent again after a reconnect
 *   (the server stores a repeated client_id once and answers with the first seq), so nothing is lost or doubled.
 * - `TypingSender`: start/stop indicators from an input, paced under the server's throttle and timeout.
 */
(function (global) {
  "use strict";

  const NAMESPACE = "/handoff";
  const API = "/api/v1";
  const ACK_TIMEOUT_MS = 10000;

  class ApiError extends Error {
    constructor(status, code, message, details) {
      super(message);
      this.status = status;
      this.code = code;
      this.details = details || {};
    }
  }

  /** Read `token` (and `conversation`) from the URL fragment, else from the query; then clear them from the
   *  address bar so they are not bookmarked, shared by accident, or sent as a referrer. */
  function readCredentials() {
    const found = {};
    const fromHash = new URLSearchParams(global.location.hash.replace(/^#/, ""));
    const fromQuery = new URLSearchParams(global.location.search);
    for (const key of ["token", "conversation"]) {
      const value = fromHash.get(key) || fromQuery.get(key);
      if (value) found[key] = value;
    }
    if (fromHash.has("token") || fromQuery.has("token")) {
      global.history.replaceState(null, "", global.location.pathname);
    }
    return found;
  }

  async function api(token, method, path, body) {
    const init = { method, headers: { Authorization: "Bearer " + token } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(API + path, init);
    } catch (err) {
      throw new ApiError(0, "network", "the server cannot be reached (" + err.message + ")");
    }
    let data = null;
    try {
      data = await response.json();
    } catch (err) {
      data = null;
    }
    if (!response.ok) {
      const error = (data && data.error) || {};
      throw new ApiError(response.status, error.code || "http_" + response.status,
        error.message || response.status + " " + response.statusText, error);
    }
    return data;
  }

  /** A Socket.IO connection to /handoff. `handlers` maps server events to functions; `onConnect(first)` runs on
   *  every (re)connection, `onDisconnect(reason)` when it drops, `onRefused(error)` when the token is refused. */
  function connect(token, handlers, hooks) {
    const socket = global.io(NAMESPACE, {
      auth: { token },
      transports: ["websocket", "polling"],
      tryAllTransports: true, // a proxy that blocks WebSockets still gets long-polling
      reconnectionDelay: 500,
      reconnectionDelayMax: 4000,
      timeout: 8000,
    });
    let connectedBefore = false;
    socket.on("connect", () => {
      const first = !connectedBefore;
      connectedBefore = true;
      hooks.onConnect && hooks.onConnect(first);
    });
    socket.on("disconnect", (reason) => {
      hooks.onDisconnect && hooks.onDisconnect(reason);
      // The server closed the connection on purpose (e.g. shut down): the client does not retry by itself.
      if (reason === "io server disconnect") setTimeout(() => socket.connect(), 1000);
    });
    socket.on("connect_error", (err) => {
      if (err && err.data && err.data.code === "unauthorized") {
        hooks.onRefused && hooks.onRefused(err.data);
      } else {
        hooks.onDisconnect && hooks.onDisconnect(err ? err.message : "connect error");
      }
    });
    for (const [event, handler] of Object.entries(handlers)) socket.on(event, handler);
    // Back online: try at once rather than at the next back-off step.
    // (disconnect() first: connect() during the client's own back-off would leave its reconnection state stuck.)
    global.addEventListener("online", () => {
      if (!socket.connected) socket.disconnect().connect();
    });
    return socket;
  }

  /** Send `event` with `payload`; resolve with the ack ({ok: true, ...} or {ok: false, error}); reject when no ack
   *  came (disconnected or timed out): the event may or may not have been stored. */
  function call(socket, event, payload, timeoutMs) {
    return socket.timeout(timeoutMs || ACK_TIMEOUT_MS).emitWithAck(event, payload);
  }

  function newClientId() {
    if (global.crypto && global.crypto.randomUUID) return global.crypto.randomUUID();
    return Date.now().toString(36) + "-" + Math.random().toString(36).slice(2);
  }

  /** One conversation's stored events, by seq. */
  class Transcript {
    constructor(conversationId) {
      this.conversationId = conversationId;
      this.events = new Map();
      this.lastSeq = 0; // every event with seq <= lastSeq is here
      this.maxSeq = 0;
    }

    /** Add a stored event; returns false when it was already here (same seq). */
    add(event) {
      if (!event || typeof event.seq !== "number" || this.events.has(event.seq)) return false;
      this.events.set(event.seq, event);
      this.maxSeq = Math.max(this.maxSeq, event.seq);
      while (this.events.has(this.lastSeq + 1)) this.lastSeq += 1;
      return true;
    }

    /** Add a stored event, or put it in place of the partial event of the same seq: a broadcast carries less than
     *  the stored event (e.g. `claimed`) and is kept as a partial one until `resume` brings the full one. Returns
     *  false when nothing changed. */
    merge(event) {
      const existing = event && this.events.get(event.seq);
      if (existing && existing.partial && !event.partial) {
        this.events.set(event.seq, event);
        return true;
      }
      return this.add(event);
    }

    /** Events seen beyond a gap: something in between is missing (ask `resume` for it). */
    hasGap() {
      return this.maxSeq > this.lastSeq;
    }

    /** When there is a gap, call `resume` in a moment (unless it is filled meanwhile): one resume for every event
     *  that arrives before then. */
    resumeGapSoon(resume) {
      if (!this.hasGap() || this.resumeTimer) return;
      this.resumeTimer = setTimeout(() => {
        this.resumeTimer = null;
        if (this.hasGap()) resume();
      }, 400);
    }

    sorted() {
      return Array.from(this.events.values()).sort((a, b) => a.seq - b.seq);
    }

    findByClientId(clientId) {
      for (const event of this.events.values()) if (event.client_id === clientId) return event;
      return null;
    }
  }

  /** Messages waiting for the server's ack, in the order they were written. The outbox is closed until the page
   *  has resumed its conversations after a (re)connect (`flush` opens it and sends what waits, in order; `hold`
   *  closes it when the connection drops), so a message written meanwhile cannot overtake an older one. Acks
   *  arrive through `onStored(entry, seq)`, refusals through `onFailed(entry, error)`. */
  class Outbox {
    constructor(options) {
      this.socket = options.socket;
      this.onStored = options.onStored;
      this.onFailed = options.onFailed;
      this.onChange = options.onChange || (() => {});
      this.entries = [];
      this.open = false;
    }

    add(conversationId, text, extra) {
      const entry = Object.assign({ conversation_id: conversationId, client_id: newClientId(), text, state: "sending",
        error: null, attempts: 0 }, extra || {});
      this.entries.push(entry);
      this.onChange();
      if (this.open && this.socket().connected) this._send(entry);
      return entry;
    }

    hold() {
      this.open = false;
    }

    pending(conversationId) {
      return this.entries.filter((e) => e.conversation_id === conversationId);
    }

    /** Open the outbox and send every waiting message again, in order (after a reconnect and its resume). */
    flush() {
      if (!this.socket().connected) return; // dropped again meanwhile: the next connect flushes
      this.open = true;
      for (const entry of this.entries) {
        if (entry.state === "sending") this._send(entry);
      }
    }

    /** The stored event for this client_id came back another way (e.g. in a resume): done with it. */
    settle(clientId) {
      const before = this.entries.length;
      this.entries = this.entries.filter((e) => e.client_id !== clientId);
      if (this.entries.length !== before) this.onChange();
    }

    discard(entry) {
      this.settle(entry.client_id);
    }

    async _send(entry) {
      if (entry.inFlight) return;
      entry.inFlight = true;
      entry.attempts += 1;
      const payload = { conversation_id: entry.conversation_id, client_id: entry.client_id, text: entry.text };
      if (entry.label) payload.label = entry.label;
      let ack;
      try {
        ack = await call(this.socket(), "message", payload);
      } catch (err) {
        entry.inFlight = false; // no ack: kept, and sent again with the same client_id after the reconnect
        this.onChange();
        return;
      }
      entry.inFlight = false;
      if (!this.entries.includes(entry)) return;
      if (ack && ack.ok) {
        this.entries = this.entries.filter((e) => e !== entry);
        this.onStored(entry, ack.seq);
        this.onChange();
        return;
      }
      const error = (ack && ack.error) || { code: "internal_error", message: "no answer" };
      if (error.code === "rate_limited" || error.code === "internal_error") {
        setTimeout(() => { if (this.open) this._send(entry); }, Math.max(200, error.retry_after_ms || 1000));
        return;
      }
      entry.state = "failed";
      entry.error = error;
      this.onFailed(entry, error);
      this.onChange();
    }
  }

  /** A signed-in page's live connection: the socket (see `connect`) and the Outbox of the page's messages, with the
   *  order every (re)connection follows: `connected` becomes true and `onConnection(true)` runs, then
   *  `await resume()` (the page resumes every conversation it follows from the last seq it holds), and only then is
   *  the outbox sent again (its resends are answered with their first seq), then `afterResume()`. A drop holds the
   *  outbox and runs `onConnection(false)`; a refused token is removed from sessionStorage (`tokenKey`) and the
   *  socket stopped before `onRefused(error)`. `handlers` are the page's server events; `onStored`, `onFailed` and
   *  `onOutboxChange` are the Outbox's. */
  class LiveSession {
    constructor(token, options) {
      this.connected = false;
      this.outbox = new Outbox({
        socket: () => this.socket, onStored: options.onStored, onFailed: options.onFailed,
        onChange: options.onOutboxChange,
      });
      const setConnected = (up) => {
        this.connected = up;
        options.onConnection(up);
      };
      this.socket = connect(token, options.handlers, {
        onConnect: async () => {
          setConnected(true);
          await options.resume();
          this.outbox.flush();
          if (options.afterResume) options.afterResume();
        },
        onDisconnect: () => {
          this.outbox.hold();
          setConnected(false);
        },
        onRefused: (error) => {
          global.sessionStorage.removeItem(options.tokenKey);
          this.socket.disconnect();
          options.onRefused(error);
        },
      });
    }

    /** Send `event` and resolve with its ack (see `call`). */
    call(event, payload) {
      return call(this.socket, event, payload);
    }

    /** Ask for every stored event of `transcript`'s conversation after the last one held without a gap (which also
     *  subscribes this socket to the conversation). Resolves with the ack, or null when not connected or no ack came:
     *  the next connect resumes again. */
    async resume(transcript) {
      if (!this.connected) return null;
      try {
        return await this.call("resume", { conversation_id: transcript.conversationId, after_seq: transcript.lastSeq });
      } catch (err) {
        return null;
      }
    }

    /** A typing indicator (a TypingSender's `send`); dropped when not connected, since the server ends an indicator
     *  itself. */
    typing(conversationId, typingState) {
      if (!this.connected) return;
      this.call("typing", { conversation_id: conversationId, state: typingState }).catch(() => {});
    }
  }

  /** Typing indicators from one input: `start` when typing begins and every `refreshMs` while it goes on (the
   *  server forwards at most one a second and stops an indicator by itself after 5 s of silence), `stop` after
   *  `idleMs` without a keystroke, on send, or when the input is emptied. */
  class TypingSender {
    constructor(send, options) {
      this.send = send;
      this.refreshMs = (options && options.refreshMs) || 2000;
      this.idleMs = (options && options.idleMs) || 3000;
      this.active = false;
      this.lastStart = 0;
      this.timer = null;
    }

    input(hasText) {
      if (!hasText) {
        this.stop();
        return;
      }
      const now = Date.now();
      if (!this.active || now - this.lastStart >= this.refreshMs) {
        this.active = true;
        this.lastStart = now;
        this.send("start");
      }
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.stop(), this.idleMs);
    }

    stop() {
      clearTimeout(this.timer);
      if (this.active) {
        this.active = false;
        this.send("stop");
      }
    }

    /** Forget the indicator without telling the server (it ends it itself on a message or a disconnect). */
    reset() {
      clearTimeout(this.timer);
      this.active = false;
    }
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "className") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  /** Put the item of event `seq` into `list` in seq order (`rendered`: seq -> item); `old` is its previous item. */
  function placeInOrder(list, rendered, seq, item, old) {
    if (old) {
      old.replaceWith(item);
    } else if (!rendered.size || seq > rendered.maxSeq) {
      list.append(item); // the usual case: the newest event
    } else {
      let after = null;
      for (const s of rendered.keys()) if (s > seq && (after === null || s < after)) after = s;
      if (after === null) list.append(item);
      else list.insertBefore(item, rendered.get(after));
    }
    rendered.set(seq, item);
    rendered.maxSeq = Math.max(rendered.maxSeq || 0, seq);
  }

  /** Bring `list` up to date with `events` (sorted by seq): an event without an item, or whose item was drawn from
   *  its partial version, gets a new one from `itemFor(event)` (items carry `data-partial`). A first render (e.g. a
   *  long transcript just loaded) is built off-document and inserted at once. */
  function renderEvents(list, rendered, events, itemFor) {
    const target = rendered.size ? list : document.createDocumentFragment();
    for (const e of events) {
      const old = rendered.get(e.seq);
      if (old && old.dataset.partial === String(Boolean(e.partial))) continue;
      placeInOrder(target, rendered, e.seq, itemFor(e), old);
    }
    if (target !== list) list.append(target);
  }

  /** Whether `scroller` shows the end of its content (within a line), so new content should keep it there. */
  function isAtEnd(scroller) {
    return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 40;
  }

  function scrollToEnd(scroller) {
    scroller.scrollTop = scroller.scrollHeight;
  }

  // One formatter for every timestamp: toLocaleTimeString builds a new one per call, which made opening a long
  // transcript several times slower.
  const TIME_FORMAT = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });

  function formatTime(iso) {
    if (!iso) return "";
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return "";
    return TIME_FORMAT.format(date);
  }

  function since(iso) {
    const date = new Date(iso);
    if (!iso || Number.isNaN(date.getTime())) return "";
    const seconds = Math.max(0, Math.round((Date.now() - date.getTime()) / 1000));
    if (seconds < 60) return seconds + " s";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min";
    return Math.floor(seconds / 3600) + " h " + Math.floor((seconds % 3600) / 60) + " min";
  }

  global.HandoffClient = {
    ApiError, readCredentials, api, connect, call, newClientId, Transcript, Outbox, LiveSession, TypingSender, el,
    renderEvents, isAtEnd, scrollToEnd, formatTime, since,
  };
})(window);
