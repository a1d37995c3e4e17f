// What the two remote-control pages (desktop.js, controller.js) share: where the server is, and
// how each keeps its session secret (tabStore, from /shared/connection.js). The connection status they share with every page is in
// /shared/connection.js. docs/protocol.md ("Remote control") is the contract.

/** The remote control's namespace and path on the cursors service. */
export const NAMESPACE = "/remote";
export const SOCKET_PATH = "/api/cursors/socket.io";

export { tabStore } from "/shared/connection.js";
