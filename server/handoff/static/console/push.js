/* Web Push for the console: where the server offers a VAPID key and the browser supports the Push API, the
 * console registers its service worker (sw.js), subscribes, and registers the subscription as a device of the agent
 * (POST /api/v1/agents/me/devices, kind "webpush"). Everything else degrades to a short note and the in-page
 * notifications: a server without GET /api/v1/push/vapid-public-key (404), a page not in a secure context, a
 * browser without the Push API, or a browser whose push service cannot be reached.
 *
 * The key comes from GET /api/v1/push/vapid-public-key as `{public_key}`; signing out removes the device with
 * DELETE /api/v1/agents/me/devices/{device_id} (docs/protocol.md, "Push notifications").
 */
(function () {
  "use strict";

  const C = window.HandoffClient;
  const KEY_PATH = "/push/vapid-public-key";
  const DEVICE_KEY = "handoff.console.device.";
  const OPEN_NOTE = "Notifications on while this page is open.";

  function supported() {
    return window.isSecureContext && "serviceWorker" in navigator && "PushManager" in window;
  }

  function keyFrom(data) {
    return data && typeof data.public_key === "string" && data.public_key ? data.public_key : null;
  }

  function base64UrlToBytes(text) {
    const padded = text.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (text.length % 4)) % 4);
    const raw = atob(padded);
    return Uint8Array.from(raw, (ch) => ch.charCodeAt(0));
  }

  function sameKey(buffer, bytes) {
    if (!buffer) return false;
    const have = new Uint8Array(buffer);
    return have.length === bytes.length && have.every((b, i) => b === bytes[i]);
  }

  /** The server's VAPID public key, or null when it offers none (404: push is not built or not configured). */
  async function serverKey(token) {
    try {
      return keyFrom(await C.api(token, "GET", KEY_PATH));
    } catch (err) {
      if (err.status === 404 || err.status === 405 || err.status === 501) return null;
      throw err;
    }
  }

  /** Subscribe this browser to Web Push for the signed-in agent, or explain in `note` why not. Never throws. */
  async function enable(token, me, note) {
    if (!supported()) {
      note(OPEN_NOTE + " This browser cannot receive push notifications on this page (it needs HTTPS and the Push API).");
      return false;
    }
    let key;
    try {
      key = await serverKey(token);
    } catch (err) {
      note(OPEN_NOTE + " Push notifications could not be checked: " + err.message);
      return false;
    }
    if (!key) {
      note(OPEN_NOTE + " This server does not offer push notifications to devices.");
      return false;
    }
    try {
      const wanted = base64UrlToBytes(key);
      const registration = await navigator.serviceWorker.register("sw.js", { scope: "./" });
      await navigator.serviceWorker.ready;
      let subscription = await registration.pushManager.getSubscription();
      if (subscription && !sameKey(subscription.options.applicationServerKey, wanted)) {
        await subscription.unsubscribe(); // the server's key changed: the old subscription is useless
        subscription = null;
      }
      if (!subscription) {
        subscription = await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: wanted });
      }
      const json = subscription.toJSON();
      const body = { kind: "webpush", subscription: { endpoint: json.endpoint,
        keys: { p256dh: json.keys.p256dh, auth: json.keys.auth } } };
      if (json.expirationTime !== null && json.expirationTime !== undefined) {
        body.subscription.expirationTime = json.expirationTime;
      }
      const device = await C.api(token, "POST", "/agents/me/devices", body);
      localStorage.setItem(DEVICE_KEY + me.id, device.device_id);
      note("Push notifications on for this browser, also when the console is closed.");
      return true;
    } catch (err) {
      note(OPEN_NOTE + " Push notifications could not be set up in this browser (" + (err.message || err) + ").");
      return false;
    }
  }

  /** On sign-out: stop pushes to this browser (unsubscribe; remove the device where the server can). */
  async function disable(token, me) {
    if (!me) return;
    const deviceId = localStorage.getItem(DEVICE_KEY + me.id);
    localStorage.removeItem(DEVICE_KEY + me.id);
    try {
      if (supported()) {
        const registration = await navigator.serviceWorker.getRegistration("./");
        const subscription = registration && await registration.pushManager.getSubscription();
        if (subscription) await subscription.unsubscribe();
      }
      if (deviceId) {
        await C.api(token, "DELETE", "/agents/me/devices/" + encodeURIComponent(deviceId));
      }
    } catch (err) {
      // A server without device removal answers 404/405; the unsubscribed endpoint stops working anyway.
    }
  }

  window.HandoffPush = { enable, disable, supported };
})();
