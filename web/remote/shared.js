// What the two remote-control pages (desktop.js, controller.js) share: where the server is, and
// how each keeps its session secret. The connection status they share with every page is in
// /shared/connection.js. docs/protocol.md ("Remote control") is the contract.

/** The remote control's namespace and path on the cursors service. */
export const NAMESPACE = "/remote";
export const SOCKET_PATH = "/api/cursors/socket.io";

/**
 * A session secret kept in this tab's sessionStorage: it survives a reload of the page, not the
 * tab. With storage disabled or full, the secret lives only as long as the page.
 */
export function tabStore(key) {
  return {
    load() {
      try {
        return sessionStorage.getItem(key);
      } catch {
        return null;
      }
    },
    save(value) {
      try {
        sessionStorage.setItem(key, value);
      } catch {
        // kept by the page until it is reloaded
      }
    },
    forget() {
      try {
        sessionStorage.removeItem(key);
      } catch {
        // nothing stored
      }
    },
  };
}
