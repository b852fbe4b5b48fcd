/* The customer chat widget: one conversation, with its customer token (docs/protocol.md).
 *
 * It talks to the bot and then to the agent over the same conversation, shows who is typing, sends typing
 * indicators itself, and says in its status line where the conversation stands ("an agent joined", "you are back
 * with the assistant"). After a drop it resumes from the last seq it holds and sends again what was not
 * acknowledged, so nothing is lost or shown twice.
 */
(function () {
  "use strict";

  const C = window.HandoffClient;
  const el = C.el;
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = "handoff.widget.token";
  const TYPING_VISIBLE_MS = 6000;

  const state = {
    token: null,
    conversationId: null,
    live: null, // the LiveSession: socket, outbox, connected
    transcript: null,
    status: null,
    agentNames: new Map(), // agent id -> name, from the claims in the transcript
    agentTyping: false,
    typingTimer: null,
    typing: null,
  };

  async function start(token, conversationId) {
    $("start-error").textContent = "";
    let me;
    try {
      me = await C.api(token, "GET", "/agents/me");
    } catch (err) {
      fail(err.status === 401 ? "This chat token is not known; ask for a new link." : err.message);
      return;
    }
    if (me.role !== "customer") {
      fail("This is not a chat token (it belongs to a " + me.role + ").");
      return;
    }
    if (conversationId && conversationId !== me.conversation_id) {
      fail("This chat token belongs to another conversation.");
      return;
    }
    state.token = token;
    state.conversationId = me.conversation_id;
    state.transcript = new C.Transcript(me.conversation_id);
    sessionStorage.setItem(TOKEN_KEY, token);
    $("start").hidden = true;
    $("chat").hidden = false;
    setStatus("Connecting…");
    state.typing = new C.TypingSender((s) => state.live.typing(state.conversationId, s));
    state.live = new C.LiveSession(token, {
      tokenKey: TOKEN_KEY,
      handlers: {
        message: (e) => onEvent(e),
        status: (e) => onEvent({ conversation_id: e.conversation_id, seq: e.seq, kind: e.kind, status: e.status,
          agent_name: e.agent_name, partial: true }),
        claimed: (e) => onEvent({ conversation_id: e.conversation_id, seq: e.seq, kind: "claimed", status: "claimed",
          role: "agent", sender: e.agent_id, agent_name: e.agent_name, partial: true }),
        typing: onTyping,
      },
      resume: resume,
      onConnection: (up) => setConnection(up, up ? "" : "Connection lost: reconnecting…"),
      onRefused: (error) => fail("The server refused this chat token: " + error.message),
      onStored: (entry, seq) => {
        add([{ conversation_id: entry.conversation_id, seq, kind: "message", role: "customer", text: entry.text,
          client_id: entry.client_id, at: new Date().toISOString() }]);
      },
      onFailed: (entry, error) => { $("chat-error").textContent = "Not sent: " + error.message; },
      onOutboxChange: renderOutbox,
    });
    $("text").focus();
  }

  function fail(message) {
    $("chat").hidden = true;
    $("start").hidden = false;
    $("start-error").textContent = message;
    setStatus("Not connected");
    $("token").focus();
  }

  async function resume() {
    const ack = await state.live.resume(state.transcript);
    if (!ack) return; // not connected: the next connect resumes again
    if (!ack.ok) {
      $("chat-error").textContent = ack.error.message;
      return;
    }
    add(ack.events);
    state.status = ack.status;
    render();
  }

  function setConnection(up, text) {
    const node = $("connection");
    node.textContent = text;
    node.classList.toggle("down", !up);
    renderOutbox();
  }

  function onEvent(e) {
    if (e.conversation_id !== state.conversationId) return;
    add([e]);
  }

  function add(events) {
    let changed = false;
    for (const e of events) {
      if (!state.transcript.merge(e)) continue;
      changed = true;
      if (e.kind === "claimed" && e.agent_name) state.agentNames.set(e.sender, e.agent_name);
      if (e.kind === "message" && e.role === "customer" && e.client_id) state.live.outbox.settle(e.client_id);
      if (e.kind === "message" && e.role === "agent") setAgentTyping(false);
    }
    if (!changed) return;
    state.transcript.resumeGapSoon(resume);
    render();
  }

  function onTyping(e) {
    if (e.conversation_id !== state.conversationId || e.role !== "agent") return;
    setAgentTyping(e.state === "start");
    renderTyping();
  }

  function setAgentTyping(on) {
    clearTimeout(state.typingTimer);
    state.agentTyping = on;
    if (on) {
      state.typingTimer = setTimeout(() => {
        state.agentTyping = false;
        renderTyping();
      }, TYPING_VISIBLE_MS);
    }
  }

  function send() {
    const input = $("text");
    const text = input.value.trim();
    if (!text) return;
    $("chat-error").textContent = "";
    state.typing.reset(); // the server ends the indicator when the message arrives
    state.live.outbox.add(state.conversationId, text);
    input.value = "";
    C.scrollToEnd($("scroll"));
  }

  // ---------------------------------------------------------------------------------------------------------
  // Rendering
  function latestStateEvent() {
    const events = state.transcript.sorted();
    for (let i = events.length - 1; i >= 0; i -= 1) if (events[i].kind !== "message") return events[i];
    return null;
  }

  function agentName(id) {
    return state.agentNames.get(id) || "An agent";
  }

  function statusLine() {
    // The latest state change by seq (events may arrive out of order around a reconnect), else what resume said.
    const last = latestStateEvent();
    switch (last ? last.status : state.status) {
      case "waiting": return "Waiting for an agent to join…";
      case "claimed": {
        const name = last && last.kind === "claimed" ? last.agent_name : null;
        return "An agent joined" + (name ? ": " + name : "") + ".";
      }
      case "resolved": return "This conversation is closed. Write again to reopen it.";
      case "bot":
        if (last && last.kind === "handed_back") return "You are back with the assistant.";
        return "You are chatting with the assistant.";
      default: return "Connecting…";
    }
  }

  function setStatus(text) {
    if ($("status").textContent !== text) $("status").textContent = text;
  }

  const rendered = new Map();

  function render() {
    setStatus(statusLine());
    const atEnd = C.isAtEnd($("scroll"));
    C.renderEvents($("transcript"), rendered, state.transcript.sorted(), item);
    renderOutbox();
    renderTyping();
    if (atEnd) C.scrollToEnd($("scroll"));
  }

  function item(e) {
    const data = { seq: String(e.seq), partial: String(Boolean(e.partial)) };
    if (e.kind === "message") {
      const who = e.role === "customer" ? "You" : e.role === "bot" ? "Assistant" : agentName(e.sender);
      return el("li", { className: "msg from-" + e.role, dataset: data },
        el("span", { className: "who" }, who, e.at ? el("time", { datetime: e.at }, C.formatTime(e.at)) : null),
        e.text);
    }
    let text;
    switch (e.kind) {
      case "escalated": text = "Looking for an agent to help you…"; break;
      case "claimed": text = (e.agent_name || "An agent") + " joined the chat"; break;
      case "handed_back": text = "You are back with the assistant"; break; // the agent's note is for the bot
      case "resolved": text = "Conversation closed"; break;
      case "reopened": text = "Conversation reopened"; break;
      default: text = "";
    }
    return el("li", { className: "sys", dataset: data }, text);
  }

  function renderOutbox() {
    if (!state.live) return;
    const outbox = state.live.outbox;
    $("outbox").replaceChildren(...outbox.pending(state.conversationId).map((entry) => {
      const failed = entry.state === "failed";
      return el("li", { className: "msg from-customer pending" + (failed ? " failed" : "") },
        el("span", { className: "who" }, "You"), entry.text,
        el("span", { className: "state" }, failed ? "Not sent: " + entry.error.message
          : state.live.connected ? "Sending…" : "Waiting for the connection…"),
        failed ? el("button", { type: "button", onclick: () => outbox.discard(entry) }, "Dismiss") : null);
    }));
  }

  function renderTyping() {
    let name = "The agent";
    const last = latestStateEvent();
    if (last && last.kind === "claimed" && last.agent_name) name = last.agent_name;
    $("typing").textContent = state.agentTyping ? name + " is typing…" : "";
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("start").addEventListener("submit", (event) => {
      event.preventDefault();
      const token = $("token").value.trim();
      if (!token) {
        $("start-error").textContent = "Enter your chat token.";
        return;
      }
      start(token, $("conversation").value.trim() || null);
    });
    $("composer").addEventListener("submit", (event) => {
      event.preventDefault();
      send();
    });
    const input = $("text");
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        send();
      }
    });
    input.addEventListener("input", () => state.typing && state.typing.input(input.value.trim() !== ""));
    input.addEventListener("blur", () => state.typing && state.typing.stop());

    const credentials = C.readCredentials();
    const token = credentials.token || sessionStorage.getItem(TOKEN_KEY);
    if (credentials.conversation) $("conversation").value = credentials.conversation;
    if (token) {
      start(token, credentials.conversation || null);
    } else {
      $("start").hidden = false;
      setStatus("Not connected");
      $("token").focus();
    }
  });
})();
