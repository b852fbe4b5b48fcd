/* The agent console: the reference client of docs/protocol.md for agents.
 *
 * Signed in with an agent token, it shows the queue of waiting conversations (GET /conversations, then live
 * `escalation` and `claimed` events), the conversations the agent holds, and one open conversation: its transcript
 * with the bot's turns set apart, live chat with typing indicators both ways, the copilot's suggestions, claim,
 * hand back and resolve. After a network drop it reconnects and `resume`s every conversation it follows from the
 * last seq it holds, then sends again what was not acknowledged: nothing missed, nothing twice.
 */
(function () {
  "use strict";

  const TOOL_FIELDS_SHOWN = 3; // request fields on a lookup card; the rest is elided

  const C = window.HandoffClient;
  const el = C.el;
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = "handoff.console.token";
  const TAKEN_VISIBLE_MS = 30000; // how long "claimed by NAME" stays in the queue before the entry goes
  const TYPING_VISIBLE_MS = 6000; // the server stops an indicator after 5 s; a lost `stop` never sticks here

  const state = {
    token: null,
    me: null,
    live: null, // the LiveSession: socket, outbox, connected
    queue: new Map(), // conversation_id -> queue entry (waiting, or just taken by someone else)
    mine: new Map(), // conversation_id -> entry of a conversation this agent holds
    convs: new Map(), // conversation_id -> view of a conversation this page follows
    selected: null,
    feedbackQueue: [], // suggestion_feedback events waiting for a connection
    notifications: new Map(),
    pendingOpen: null, // a conversation to open once signed in (a notification's link: #open=<id>)
  };

  // ---------------------------------------------------------------------------------------------------------
  // Conversations this page follows
  function conv(id) {
    let c = state.convs.get(id);
    if (!c) {
      c = {
        id, botId: null, status: null, holderId: null, holderName: null, transcript: new C.Transcript(id),
        loaded: false, loading: null, suggestions: null, picked: null, customerTyping: false, typingTimer: null,
        unread: 0, alert: "", alertKind: "error",
        typing: new C.TypingSender((s) => state.live.typing(id, s)),
      };
      state.convs.set(id, c);
    }
    return c;
  }

  function holdsIt(c) {
    return c.status === "claimed" && c.holderId === state.me.id;
  }

  /** Status and holder from the stored events (the latest claim, hand back, resolve...). */
  function derive(c) {
    for (const e of c.transcript.sorted()) {
      if (e.kind === "message") continue;
      if (e.status) c.status = e.status;
      if (e.kind === "claimed") {
        c.holderId = e.sender || e.agent_id || null;
        c.holderName = e.agent_name || c.holderId;
      } else if (e.kind === "handed_back" || e.kind === "resolved" || e.kind === "reopened" || e.kind === "escalated") {
        c.holderId = null;
        c.holderName = null;
      }
    }
  }

  /** Add stored events to a conversation; returns how many were new. */
  function addEvents(c, events) {
    let added = 0;
    for (const e of events) {
      if (!c.transcript.merge(e)) continue;
      added += 1;
      // Suggestions computed for an older state are stale once a newer message or lookup is here.
      if ((e.kind === "message" || e.kind === "tool") && c.suggestions && c.suggestions.for_seq < e.seq) {
        c.suggestions = null;
        c.picked = null;
      }
      if (e.kind === "message") {
        if (e.role === "agent" && e.sender === state.me.id && e.client_id) state.live.outbox.settle(e.client_id);
        if (e.role === "customer") setCustomerTyping(c, false);
        // Unread: customer messages that arrive after the first load of a held conversation not on screen.
        if (c.loaded && state.selected !== c.id && e.role === "customer" && state.mine.has(c.id)) c.unread += 1;
      }
    }
    if (added) {
      const before = c.status;
      derive(c);
      if (before !== c.status) syncLists(c);
      c.transcript.resumeGapSoon(() => resume(c));
    }
    return added;
  }

  /** Ask for every stored event after the last one held without a gap; subscribes this socket to the conversation. */
  async function resume(c) {
    const ack = await state.live.resume(c.transcript);
    if (!ack) return; // not connected: the next connect resumes again
    if (!ack.ok) {
      setAlert(c, ack.error.message);
      render();
      return;
    }
    addEvents(c, ack.events);
    c.status = ack.status;
    c.loaded = true;
    derive(c);
    syncLists(c);
    render();
  }

  function syncLists(c) {
    if (holdsIt(c)) {
      state.queue.delete(c.id);
      if (!state.mine.has(c.id)) state.mine.set(c.id, { conversation_id: c.id, bot_id: c.botId, preview: null });
    } else {
      state.mine.delete(c.id);
      if (c.status !== "waiting") {
        const q = state.queue.get(c.id);
        if (q && !q.takenBy) state.queue.delete(c.id);
      }
    }
  }

  // ---------------------------------------------------------------------------------------------------------
  // Sign in, connection
  async function signIn(token) {
    $("signin-error").textContent = "";
    let me;
    try {
      me = await C.api(token, "GET", "/agents/me");
    } catch (err) {
      $("signin-error").textContent = err.status === 401 ? "This token is not known to the server." : err.message;
      showSignIn();
      return;
    }
    if (me.role !== "agent") {
      $("signin-error").textContent = "This is a " + me.role + " credential; the console needs an agent token.";
      showSignIn();
      return;
    }
    state.token = token;
    state.me = me;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("who").textContent = "Signed in as " + me.name;
    $("signin-view").hidden = true;
    $("desk").hidden = false;
    $("signout").hidden = false;
    setConnection(false, "Connecting…");
    state.live = new C.LiveSession(token, {
      tokenKey: TOKEN_KEY,
      handlers: {
        escalation: onEscalation,
        claimed: onClaimed,
        message: (e) => onStoredEvent(e),
        tool_event: (e) => onStoredEvent(e),
        status: onStatus,
        typing: onTyping,
        suggestions: onSuggestions,
      },
      resume: resumeAll,
      afterResume: afterResume,
      onConnection: (up) => setConnection(up, up ? "Connected" : "Connection lost: reconnecting…"),
      onRefused: (error) => {
        $("signin-error").textContent = "The server refused this token: " + error.message;
        showSignIn();
      },
      onStored: onMessageStored,
      onFailed: (entry, error) => {
        const c = conv(entry.conversation_id);
        setAlert(c, "Not sent: " + error.message);
      },
      onOutboxChange: () => renderOutbox(),
    });
    setUpNotifications();
    render();
    if (state.pendingOpen) {
      const id = state.pendingOpen;
      state.pendingOpen = null;
      open(id);
    }
  }

  function showSignIn() {
    $("signin-view").hidden = false;
    $("desk").hidden = true;
    $("signout").hidden = true;
    $("notify").hidden = true;
    $("token").focus();
  }

  /** After a (re)connect: the queue may have moved while this page was away; then every conversation it follows is
   *  resumed from the last seq it holds (the LiveSession sends the outbox again after this). */
  async function resumeAll() {
    await refreshLists();
    const follow = new Set([...state.mine.keys()]);
    if (state.selected) follow.add(state.selected);
    for (const c of state.convs.values()) if (c.loaded) follow.add(c.id);
    await Promise.all(Array.from(follow, (id) => resume(conv(id))));
  }

  function afterResume() {
    flushFeedback();
    const c = state.selected && state.convs.get(state.selected);
    if (c && holdsIt(c)) fetchSuggestions(c);
    render();
  }

  function setConnection(up, text) {
    const node = $("connection");
    node.textContent = text;
    node.classList.toggle("down", !up);
  }

  async function refreshLists() {
    let waiting, claimed;
    try {
      [waiting, claimed] = await Promise.all([
        C.api(state.token, "GET", "/conversations?status=waiting"),
        C.api(state.token, "GET", "/conversations?status=claimed"),
      ]);
    } catch (err) {
      setConnection(state.live.connected, "Connected (the queue could not be loaded: " + err.message + ")");
      return;
    }
    const taken = new Map([...state.queue].filter(([, q]) => q.takenBy));
    state.queue = new Map(waiting.conversations.map((q) => [q.conversation_id, q]));
    for (const [id, q] of taken) if (!state.queue.has(id)) state.queue.set(id, q);
    state.mine = new Map(claimed.conversations.filter((q) => q.agent_id === state.me.id)
      .map((q) => [q.conversation_id, q]));
    for (const q of [...waiting.conversations, ...claimed.conversations]) {
      const c = state.convs.get(q.conversation_id);
      if (c) c.botId = q.bot_id;
    }
    render();
  }

  // ---------------------------------------------------------------------------------------------------------
  // Server events
  function onEscalation(e) {
    state.queue.set(e.conversation_id, Object.assign({}, e, { status: "waiting", takenBy: null }));
    const c = state.convs.get(e.conversation_id);
    if (c) c.botId = e.bot_id;
    notifyEscalation(e);
    render();
  }

  function onClaimed(e) {
    const mineNow = e.agent_id === state.me.id;
    const q = state.queue.get(e.conversation_id);
    if (mineNow) {
      state.queue.delete(e.conversation_id);
      state.mine.set(e.conversation_id, q || { conversation_id: e.conversation_id, preview: null });
    } else if (q) {
      q.takenBy = e.agent_name;
      setTimeout(() => {
        const still = state.queue.get(e.conversation_id);
        if (still && still.takenBy) {
          state.queue.delete(e.conversation_id);
          render();
        }
      }, TAKEN_VISIBLE_MS);
    }
    closeNotification(e.conversation_id);
    const c = state.convs.get(e.conversation_id);
    if (c) {
      addEvents(c, [{ conversation_id: e.conversation_id, seq: e.seq, kind: "claimed", role: "agent",
        sender: e.agent_id, agent_name: e.agent_name, status: "claimed", partial: true }]);
      // A lost claim's own answer ("Too late: ...") says more than the broadcast: keep it.
      if (!mineNow && c.id === state.selected && !c.alert) setAlert(c, "Claimed by " + e.agent_name);
    }
    render();
  }

  function onStatus(e) {
    const c = state.convs.get(e.conversation_id);
    if (!c) return;
    const event = { conversation_id: e.conversation_id, seq: e.seq, kind: e.kind, status: e.status,
      agent_name: e.agent_name, reason: e.reason, note: e.note, partial: true };
    addEvents(c, [event]);
    c.status = e.status;
    derive(c);
    syncLists(c);
    if (e.status !== "claimed") {
      c.suggestions = null;
      c.picked = null;
    }
    render();
  }

  function onStoredEvent(e) {
    const c = state.convs.get(e.conversation_id);
    if (!c) return;
    if (addEvents(c, [e])) render();
  }

  function onTyping(e) {
    const c = state.convs.get(e.conversation_id);
    if (!c || e.role !== "customer") return;
    setCustomerTyping(c, e.state === "start");
    renderTyping();
  }

  function setCustomerTyping(c, on) {
    clearTimeout(c.typingTimer);
    c.customerTyping = on;
    if (on) {
      c.typingTimer = setTimeout(() => {
        c.customerTyping = false;
        renderTyping();
      }, TYPING_VISIBLE_MS);
    }
  }

  function onSuggestions(e) {
    const c = conv(e.conversation_id);
    if (c.suggestions && c.suggestions.for_seq > e.for_seq) return;
    if (lastMessageSeq(c) > e.for_seq) return; // computed before the latest message shown here: stale
    c.suggestions = Object.assign({ reported: false }, e);
    c.picked = null;
    renderSuggestions();
  }

  function lastMessageSeq(c) {
    let seq = 0;
    for (const e of c.transcript.events.values()) if (e.kind === "message" && e.seq > seq) seq = e.seq;
    return seq;
  }

  async function fetchSuggestions(c) {
    try {
      const current = await C.api(state.token, "GET",
        "/conversations/" + encodeURIComponent(c.id) + "/suggestions");
      if (current.items.length) onSuggestions(current);
    } catch (err) {
      // Only a convenience after a reload or a drop: the next customer message brings suggestions again.
    }
  }

  // ---------------------------------------------------------------------------------------------------------
  // Agent actions
  async function open(id) {
    const previous = state.selected && state.convs.get(state.selected);
    if (previous && previous.id !== id) previous.typing.stop();
    state.selected = id;
    const c = conv(id);
    const q = state.queue.get(id) || state.mine.get(id);
    if (q) c.botId = q.bot_id || c.botId;
    c.unread = 0;
    if (!/claimed by/i.test(c.alert)) setAlert(c, "");
    $("desk").classList.add("show-conv");
    const taken = state.queue.get(id) && state.queue.get(id).takenBy;
    if (taken && !c.alert) setAlert(c, "Claimed by " + taken);
    renderConversation(true);
    if (!c.loaded) await resume(c);
    if (holdsIt(c)) fetchSuggestions(c);
    render();
    $("conv-title").focus();
  }

  async function claim(c) {
    $("claim").disabled = true;
    let ack;
    try {
      ack = await state.live.call("claim", { conversation_id: c.id });
    } catch (err) {
      setAlert(c, "No answer from the server; try again.");
      $("claim").disabled = false;
      render();
      return;
    }
    $("claim").disabled = false;
    if (!ack.ok) {
      if (ack.error.code === "already_claimed") {
        const name = ack.error.claimed_by ? ack.error.claimed_by.name : "";
        const q = state.queue.get(c.id);
        if (q) q.takenBy = name;
        setAlert(c, "Too late: claimed by " + name + ".");
      } else {
        setAlert(c, ack.error.message);
      }
      render();
      return;
    }
    addEvents(c, ack.transcript);
    c.status = "claimed";
    c.holderId = state.me.id;
    c.holderName = state.me.name;
    c.loaded = true;
    syncLists(c);
    setAlert(c, "");
    render();
    $("reply").focus();
  }

  async function handBack(c) {
    const note = $("note").value.trim();
    const payload = { conversation_id: c.id };
    if (note) payload.note = note;
    await stateChange(c, "hand_back", payload, "Handed back to the bot.", () => { $("note").value = ""; });
  }

  async function resolve(c) {
    await stateChange(c, "resolve", { conversation_id: c.id }, "Resolved.", null);
  }

  async function stateChange(c, event, payload, done, after) {
    c.typing.reset();
    let ack;
    try {
      ack = await state.live.call(event, payload);
    } catch (err) {
      setAlert(c, "No answer from the server; try again once connected.");
      render();
      return;
    }
    if (!ack.ok) {
      setAlert(c, ack.error.message);
      render();
      return;
    }
    const kind = event === "hand_back" ? "handed_back" : "resolved";
    addEvents(c, [{ conversation_id: c.id, seq: ack.seq, kind, status: ack.status, role: "agent",
      sender: state.me.id, note: payload.note, partial: true }]);
    c.status = ack.status;
    derive(c);
    syncLists(c);
    c.suggestions = null;
    c.picked = null;
    setAlert(c, done, "info");
    if (after) after();
    render();
  }

  function send(c) {
    const reply = $("reply");
    const text = reply.value.trim();
    if (!text || !holdsIt(c)) return;
    const extra = {};
    const set = c.suggestions && !c.suggestions.reported ? c.suggestions : null;
    const picked = set && c.picked ? set.items.find((i) => i.suggestion_id === c.picked) : null;
    // Sent unchanged: the message carries the template's label (the protocol's label: 1-200 non-space characters).
    if (picked && text === picked.text.trim() && /^\S{1,200}$/.test(picked.label || "")) extra.label = picked.label;
    if (set) {
      set.reported = true;
      extra.feedback = set.items.map((item) => ({
        suggestion_id: item.suggestion_id,
        action: item === picked ? (text === picked.text.trim() ? "sent" : "edited") : "ignored",
      }));
    }
    c.typing.reset(); // the server ends the indicator when the message arrives
    state.live.outbox.add(c.id, text, extra);
    reply.value = "";
    c.picked = null;
    renderSuggestions();
    C.scrollToEnd($("scroll"));
  }

  function onMessageStored(entry, seq) {
    const c = conv(entry.conversation_id);
    const event = { conversation_id: entry.conversation_id, seq, kind: "message", role: "agent",
      sender: state.me.id, text: entry.text, client_id: entry.client_id, at: new Date().toISOString() };
    if (entry.label) event.label = entry.label;
    addEvents(c, [event]);
    // The feedback follows the message it describes.
    for (const fb of entry.feedback || []) {
      state.feedbackQueue.push(Object.assign({ conversation_id: entry.conversation_id }, fb));
    }
    flushFeedback();
    render();
  }

  let flushingFeedback = false;

  async function flushFeedback() {
    if (flushingFeedback) return; // one sender at a time: each report goes once, in order
    flushingFeedback = true;
    try {
      while (state.live.connected && state.feedbackQueue.length) {
        const fb = state.feedbackQueue[0];
        let ack;
        try {
          ack = await state.live.call("suggestion_feedback", fb);
        } catch (err) {
          return; // kept for the next connection
        }
        if (!ack.ok && (ack.error.code === "rate_limited" || ack.error.code === "internal_error")) {
          setTimeout(flushFeedback, ack.error.retry_after_ms || 1000);
          return;
        }
        state.feedbackQueue.shift(); // stored, or refused for good (e.g. not_found): not sent again
      }
    } finally {
      flushingFeedback = false;
    }
  }

  function takeSuggestion(c, item) {
    const reply = $("reply");
    reply.value = item.text;
    c.picked = item.suggestion_id;
    renderSuggestions();
    reply.focus();
    reply.setSelectionRange(reply.value.length, reply.value.length);
  }

  function setAlert(c, text, kind) {
    c.alert = text;
    c.alertKind = kind || "error";
  }

  // ---------------------------------------------------------------------------------------------------------
  // Notifications: a browser notification for a new escalation while the page is hidden; Web Push where the
  // server offers a VAPID key and the browser can subscribe.
  function setUpNotifications() {
    if (!window.isSecureContext) {
      note("Browser notifications need the console over HTTPS (or on this computer); keep this page in view.");
      return;
    }
    if (!("Notification" in window)) {
      note("This browser cannot show notifications; keep this page in view.");
      return;
    }
    renderNotifyButton();
    if (Notification.permission === "granted") window.HandoffPush.enable(state.token, state.me, note);
  }

  function renderNotifyButton() {
    const button = $("notify");
    button.hidden = !("Notification" in window) || Notification.permission !== "default";
    if (Notification.permission === "denied") note("Notifications are blocked for this site in the browser.");
  }

  async function askNotifications() {
    const permission = await Notification.requestPermission();
    renderNotifyButton();
    if (permission === "granted") {
      note("Notifications on while this page is open.");
      window.HandoffPush.enable(state.token, state.me, note);
    }
  }

  function note(text) {
    const node = $("notify-note");
    node.textContent = text;
    node.hidden = !text;
  }

  function notifyEscalation(e) {
    if (!("Notification" in window) || Notification.permission !== "granted") return;
    if (document.visibilityState !== "hidden") return;
    // Same tag as the service worker's push notification: the browser shows one, not both.
    const n = new Notification("Customer waiting (" + e.bot_id + ")", {
      body: e.preview || e.reason || "A conversation was escalated.",
      tag: "handoff-" + e.conversation_id,
    });
    n.onclick = () => {
      window.focus();
      open(e.conversation_id);
      n.close();
    };
    state.notifications.set(e.conversation_id, n);
  }

  function closeNotification(id) {
    const n = state.notifications.get(id);
    if (n) n.close();
    state.notifications.delete(id);
  }

  // ---------------------------------------------------------------------------------------------------------
  // Rendering
  function render() {
    renderLists();
    renderConversation(false);
    renderSuggestions();
  }

  /** Re-render a list without losing the keyboard focus of an item in it (events re-render lists any time). */
  function keepFocus(list, key, build) {
    const active = document.activeElement;
    const focused = active && list.contains(active) && active.closest("[data-" + key + "]");
    const id = focused ? focused.dataset[key] : null;
    build();
    if (id === null) return;
    const again = list.querySelector("[data-" + key + '="' + CSS.escape(id) + '"]');
    const target = again && (again.matches("button") ? again : again.querySelector("button"));
    if (target) target.focus();
  }

  function renderLists() {
    keepFocus($("queue"), "conversation", renderQueue);
    keepFocus($("mine"), "conversation", renderMine);
    const waiting = [...state.queue.values()].filter((q) => !q.takenBy).length;
    document.title = (waiting ? "(" + waiting + ") " : "") + "Handoff console";
  }

  function renderQueue() {
    const queue = [...state.queue.values()].sort((a, b) => String(a.waiting_since).localeCompare(String(b.waiting_since)));
    $("queue").replaceChildren(...queue.map((q) => listItem(q, false)));
    $("queue-count").textContent = String(queue.filter((q) => !q.takenBy).length);
    $("queue-empty").hidden = queue.length > 0;
  }

  function renderMine() {
    const mine = [...state.mine.values()];
    $("mine").replaceChildren(...mine.map((q) => listItem(q, true)));
    $("mine-count").textContent = String(mine.length);
    $("mine-empty").hidden = mine.length > 0;
  }

  function listItem(q, mine) {
    const c = state.convs.get(q.conversation_id);
    const unread = mine && c && c.unread ? el("span", { className: "unread", "aria-label": c.unread + " new" },
      String(c.unread)) : null;
    const button = el("button", {
      type: "button", "aria-current": state.selected === q.conversation_id ? "true" : "false",
      onclick: () => open(q.conversation_id),
    },
    el("span", { className: "line1" }, el("span", {}, q.bot_id || "conversation"),
      q.waiting_since && !mine ? el("span", { className: "since" }, C.since(q.waiting_since)) : null, unread),
    el("span", { className: "preview" }, (c && lastCustomerText(c)) || q.preview || q.reason || q.conversation_id),
    q.takenBy ? el("span", { className: "taken" }, "claimed by " + q.takenBy) : null);
    return el("li", { className: q.takenBy ? "is-taken" : "", dataset: { conversation: q.conversation_id } }, button);
  }

  function lastCustomerText(c) {
    let last = null;
    for (const e of c.transcript.events.values()) {
      if (e.kind === "message" && e.role === "customer" && (!last || e.seq > last.seq)) last = e;
    }
    return last ? last.text : null;
  }

  let shown = null; // the conversation whose transcript is in the DOM
  const rendered = new Map(); // seq -> li of the shown transcript

  function renderConversation(reset) {
    const c = state.selected && state.convs.get(state.selected);
    $("no-conv").hidden = Boolean(c);
    $("conv").hidden = !c;
    if (!c) return;
    if (reset || shown !== c.id) {
      shown = c.id;
      rendered.clear();
      rendered.maxSeq = 0;
      $("transcript").replaceChildren();
    }
    $("conv-title").textContent = (c.botId ? c.botId + " · " : "") + c.id;
    $("conv-status").textContent = statusText(c);
    const mine = holdsIt(c);
    $("claim").hidden = c.status !== "waiting";
    $("resolve").hidden = !mine;
    $("handback").hidden = !mine;
    $("composer").hidden = !mine;
    const alert = $("conv-alert");
    alert.textContent = c.alert;
    alert.classList.toggle("info", c.alertKind === "info");
    const atEnd = C.isAtEnd($("scroll"));
    C.renderEvents($("transcript"), rendered, c.transcript.sorted(), (e) => eventItem(c, e));
    renderOutbox();
    renderTyping();
    if (atEnd) C.scrollToEnd($("scroll"));
  }

  function statusText(c) {
    switch (c.status) {
      case "waiting": return "Waiting for an agent";
      case "claimed": return holdsIt(c) ? "You hold this conversation" : "Claimed by " + (c.holderName || "another agent");
      case "bot": return "With the bot";
      case "resolved": return "Resolved";
      default: return c.loaded ? "" : "Loading…";
    }
  }

  function senderName(c, e) {
    if (e.role === "bot") return "Bot";
    if (e.role === "customer") return "Customer";
    if (e.sender === state.me.id) return "You";
    for (const other of c.transcript.events.values()) {
      if (other.kind === "claimed" && other.sender === e.sender && other.agent_name) return other.agent_name;
    }
    return "Agent " + e.sender;
  }

  function eventItem(c, e) {
    const partial = { partial: String(Boolean(e.partial)), seq: String(e.seq) };
    if (e.kind === "message") {
      return el("li", { className: "msg from-" + e.role, dataset: partial },
        el("span", { className: "who" }, senderName(c, e),
          e.at ? el("time", { datetime: e.at }, C.formatTime(e.at)) : null,
          e.label ? el("span", { className: "tag" }, "template " + e.label) : null),
        e.text);
    }
    if (e.kind === "tool") return toolCard(c, e, partial);
    let text;
    switch (e.kind) {
      case "escalated": text = "The bot escalated to a human" + (e.reason ? ": " + e.reason : ""); break;
      case "claimed": text = (e.sender === state.me.id ? "You" : e.agent_name || "An agent") + " claimed the conversation"; break;
      case "handed_back": text = "Handed back to the bot" + (e.note ? ": " + e.note : ""); break;
      case "resolved": text = "Resolved"; break;
      case "reopened": text = "The customer wrote again: back with the bot"; break;
      default: text = e.kind;
    }
    return el("li", { className: "sys", dataset: partial }, text);
  }

  /** A lookup the bot or an agent made, as a compact card: the tool, the main request fields, the outcome. */
  function toolCard(c, e, dataset) {
    const request = Object.entries(e.request || {}).slice(0, TOOL_FIELDS_SHOWN)
      .map(([k, v]) => k + ": " + shortValue(v)).join(" · ");
    const more = Object.keys(e.request || {}).length > TOOL_FIELDS_SHOWN ? " · …" : "";
    const outcome = toolOutcome(e);
    return el("li", { className: "tool " + outcome.kind, dataset },
      el("span", { className: "who" }, "Lookup by " + (e.role === "bot" ? "the bot"
        : e.sender === state.me.id ? "you" : senderName(c, e)),
        e.at ? el("time", { datetime: e.at }, C.formatTime(e.at)) : null),
      el("span", { className: "tool-name" }, e.name),
      request ? el("span", { className: "tool-request" }, request + more) : null,
      el("span", { className: "tool-outcome" }, outcome.text));
  }

  function toolOutcome(e) {
    if (e.error) return { kind: "failed", text: "Failed: " + e.error };
    const result = e.result || {};
    const list = Object.values(result).find((v) => Array.isArray(v));
    if (list) {
      if (!list.length) return { kind: "empty", text: "Nothing found" };
      const first = list[0] && typeof list[0] === "object" ? Object.entries(list[0]).slice(0, 3)
        .map(([k, v]) => k + ": " + shortValue(v)).join(", ") : shortValue(list[0]);
      return { kind: "found", text: list.length + (list.length === 1 ? " result: " : " results, first: ") + first };
    }
    const keys = Object.keys(result);
    if (!keys.length) return { kind: "empty", text: "Nothing found" };
    return { kind: "found", text: keys.slice(0, 3).map((k) => k + ": " + shortValue(result[k])).join(", ") };
  }

  function shortValue(v) {
    const text = typeof v === "string" ? v : JSON.stringify(v);
    return text.length > 60 ? text.slice(0, 59) + "…" : text;
  }

  function renderOutbox() {
    const c = state.selected && state.convs.get(state.selected);
    if (!c || !state.live) return;
    const outbox = state.live.outbox;
    $("outbox").replaceChildren(...outbox.pending(c.id).map((entry) => {
      const failed = entry.state === "failed";
      return el("li", { className: "msg from-agent pending" + (failed ? " failed" : "") },
        el("span", { className: "who" }, "You"),
        entry.text,
        el("span", { className: "state" }, failed ? "Not sent: " + entry.error.message
          : state.live.connected ? "Sending…" : "Waiting for the connection…"),
        failed ? el("button", { type: "button", onclick: () => { outbox.discard(entry); } }, "Dismiss") : null);
    }));
  }

  function renderTyping() {
    const c = state.selected && state.convs.get(state.selected);
    $("typing").textContent = c && c.customerTyping ? "The customer is typing…" : "";
  }

  function renderSuggestions() {
    const c = state.selected && state.convs.get(state.selected);
    const list = $("suggestions");
    const noteNode = $("sugg-note");
    if (!c || !holdsIt(c)) {
      list.replaceChildren();
      noteNode.textContent = "Suggestions appear here for conversations you hold.";
      return;
    }
    const set = c.suggestions;
    if (!set || !set.items.length) {
      list.replaceChildren();
      noteNode.textContent = "No suggestion for the latest message.";
      return;
    }
    noteNode.textContent = "Click one to put it in the reply box, edit it if you like, then send.";
    keepFocus(list, "suggestion", () => list.replaceChildren(...set.items.map((item, index) => el("li", {},
      el("button", {
        type: "button", "aria-pressed": c.picked === item.suggestion_id ? "true" : "false",
        "aria-keyshortcuts": index < 3 ? "Alt+" + (index + 1) : null,
        dataset: { suggestion: item.suggestion_id },
        onclick: () => takeSuggestion(c, item),
      }, item.text, el("span", { className: "meta" }, (index < 3 ? "Alt+" + (index + 1) + " · " : "")
        + (item.label ? "template " + item.label + " · " : "") + "score " + Number(item.score).toFixed(2)))))));
  }

  // ---------------------------------------------------------------------------------------------------------
  // Wiring
  function selectedConv() {
    return state.selected ? state.convs.get(state.selected) : null;
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("signin").addEventListener("submit", (event) => {
      event.preventDefault();
      const token = $("token").value.trim();
      if (!token) {
        $("signin-error").textContent = "Enter your agent token.";
        return;
      }
      $("token").value = "";
      signIn(token);
    });
    $("signout").addEventListener("click", async () => {
      sessionStorage.removeItem(TOKEN_KEY);
      await window.HandoffPush.disable(state.token, state.me);
      window.location.reload();
    });
    $("notify").addEventListener("click", askNotifications);
    $("claim").addEventListener("click", () => selectedConv() && claim(selectedConv()));
    $("resolve").addEventListener("click", () => selectedConv() && resolve(selectedConv()));
    $("handback").addEventListener("submit", (event) => {
      event.preventDefault();
      if (selectedConv()) handBack(selectedConv());
    });
    $("composer").addEventListener("submit", (event) => {
      event.preventDefault();
      if (selectedConv()) send(selectedConv());
    });
    const reply = $("reply");
    reply.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        if (selectedConv()) send(selectedConv());
      }
    });
    // Only keystrokes in the reply box count as typing; a suggestion put there by a click does not, and neither
    // does the hand-back note, which the customer never sees.
    reply.addEventListener("input", () => {
      const c = selectedConv();
      if (c && holdsIt(c)) c.typing.input(reply.value.trim() !== "");
    });
    reply.addEventListener("blur", () => {
      const c = selectedConv();
      if (c) c.typing.stop();
    });
    document.addEventListener("keydown", (event) => {
      if (!event.altKey || !/^Digit[1-9]$/.test(event.code)) return;
      const c = selectedConv();
      if (!c || !holdsIt(c) || !c.suggestions) return;
      const item = c.suggestions.items[Number(event.code.slice(5)) - 1];
      if (item) {
        event.preventDefault();
        takeSuggestion(c, item);
      }
    });
    $("back").addEventListener("click", () => {
      $("desk").classList.remove("show-conv");
      const button = document.querySelector('[aria-current="true"]');
      if (button) button.focus();
    });
    // The service worker asks the page to open a conversation when its notification is clicked.
    if ("serviceWorker" in navigator) {
      navigator.serviceWorker.addEventListener("message", (event) => {
        if (event.data && event.data.open && state.me) open(event.data.open);
      });
    }
    setInterval(() => { if (state.me) renderLists(); }, 30000); // the "waiting for" times

    state.pendingOpen = new URLSearchParams(window.location.hash.replace(/^#/, "")).get("open");
    const credentials = C.readCredentials();
    const token = credentials.token || sessionStorage.getItem(TOKEN_KEY);
    if (token) signIn(token);
    else showSignIn();
  });
})();
