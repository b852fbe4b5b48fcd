/* The console's service worker: shows Web Push notifications for escalations and opens the console on a click.
 *
 * It has no fetch handler on purpose: the console's files are not cached here, so an upgraded server is never
 * served yesterday's page. The push payload is read leniently: a JSON object with `title`/`body`, or the
 * `escalation` event's fields (conversation_id, bot_id, reason, preview), or plain text.
 */
"use strict";

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("push", (event) => {
  let data = {};
  if (event.data) {
    try {
      data = event.data.json();
    } catch (err) {
      data = { body: event.data.text() };
    }
  }
  const id = data.conversation_id || (data.data && data.data.conversation_id) || null;
  const title = data.title || (data.bot_id ? "Customer waiting (" + data.bot_id + ")" : "Customer waiting");
  const body = data.body || data.preview || data.reason || "A conversation was escalated.";
  // The same tag as the page's own notification: one notification per conversation, not two.
  event.waitUntil(self.registration.showNotification(title, {
    body,
    tag: id ? "handoff-" + id : "handoff",
    data: { conversation_id: id },
  }));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const id = event.notification.data && event.notification.data.conversation_id;
  event.waitUntil((async () => {
    const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
    for (const client of windows) {
      if (new URL(client.url).pathname.startsWith(new URL("./", self.registration.scope).pathname)) {
        if (id) client.postMessage({ open: id });
        return client.focus();
      }
    }
    return self.clients.openWindow("./" + (id ? "#open=" + encodeURIComponent(id) : ""));
  })());
});
