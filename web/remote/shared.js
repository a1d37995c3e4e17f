// What the two remote-control pages share: the socket.io options and the connection status
// indicator (#status[data-state], as on the chat page). docs/protocol.md ("Remote control") is
// the contract.

/** The remote control's namespace and path on the cursors service. */
export const NAMESPACE = "/remote";
export const SOCKET_PATH = "/api/cursors/socket.io";
/** How long we wait for the server's ack of `renew` or `unpair`. */
export const ACK_TIMEOUT_MS = 10_000;
/** socket.io does not retry a connection the server refused or closed; we do, for some. */
export const RETRY_FIRST_MS = 2_000;
export const RETRY_MAX_MS = 30_000;

export function byId(id) {
  const element = document.getElementById(id);
  if (!element) throw new Error(`#${id} is missing from the page`);
  return element;
}

/**
 * Shows the connection state in #status: connecting | connected | reconnecting | disconnected
 * (plus `idle` on the controller, before it has anything to connect with).
 */
export function setStatus(state, reason = "") {
  const status = byId("status");
  status.dataset.state = state;
  document.body.dataset.connection = state;
  byId("status-text").textContent = statusLabel(state, reason);
}

function statusLabel(state, reason) {
  switch (state) {
    case "connecting":
      return "Connecting…";
    case "connected":
      return "Connected";
    case "reconnecting":
      return "Reconnecting…";
    case "idle":
      return "Not connected";
    default:
      return reason ? `Disconnected: ${reason}` : "Disconnected";
  }
}

/** The refusal object the server put in a `connect_error` (protocol, "Errors"), or {}. */
export function refusalOf(err) {
  return err && err.data && typeof err.data === "object" ? err.data : {};
}

/** Seconds as m:ss. */
export function clock(seconds) {
  const s = Math.max(0, Math.ceil(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}
