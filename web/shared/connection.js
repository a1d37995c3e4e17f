// What every page's script shares: the connection status in the header (#status[data-state],
// #status-text, body[data-connection]), the retry of connections socket.io gives up on, and two
// DOM helpers. One copy, so that the chat, cursors and remote pages report their connection the
// same way. docs/protocol.md ("Errors") describes the refusals.

/** socket.io does not retry a connection the server refused or closed; we do, for some. */
export const RETRY_FIRST_MS = 2_000;
export const RETRY_MAX_MS = 30_000;

const STATUS_TEXT = {
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  disconnected: "Disconnected",
  idle: "Not connected", // the remote controller, before it has anything to connect with
};

/**
 * A socket's connection as the page shows it in #status: connecting | connected | reconnecting |
 * disconnected | idle. Follows socket.io's own reconnection attempts, and retries with backoff
 * (2 s doubling to 30 s) when the page calls retryLater().
 *
 * `onChange(state)` runs after every change; `canRetry()` is asked before each retry.
 */
export class Connection {
  constructor(socket, { onChange = () => {}, canRetry = () => true } = {}) {
    this.socket = socket;
    this.onChange = onChange;
    this.canRetry = canRetry;
    this.state = "connecting";
    this.everConnected = false;
    this.retryDelay = RETRY_FIRST_MS;
    this.retryTimer = 0;
    /** Why the page gave up on its connection (stop()), or "" while it has not. */
    this.stopped = "";
    this.statusEl = byId("status");
    this.statusText = byId("status-text");
    socket.io.on("reconnect_attempt", () => this.set(this.retrying()));
  }

  /** Shows `state`; `reason` is said after "Disconnected: ". */
  set(state, reason = "") {
    if (!(state in STATUS_TEXT)) throw new Error(`unknown connection state: ${state}`);
    this.state = state;
    this.statusEl.dataset.state = state;
    document.body.dataset.connection = state;
    this.statusText.textContent =
      state === "disconnected" && reason ? `Disconnected: ${reason}` : STATUS_TEXT[state];
    this.onChange(state);
  }

  /** The state while a connection is being tried: "reconnecting" once we have been connected. */
  retrying() {
    return this.everConnected ? "reconnecting" : "connecting";
  }

  /** On `connect`. */
  connected() {
    this.stopped = "";
    this.cancelRetry();
    this.resetBackoff();
    this.everConnected = true;
    this.set("connected");
  }

  /**
   * On `disconnect`: socket.io reconnects by itself after a network loss; a server that closed
   * us (a restart, a deploy) holds nothing against us, so we retry; anything else was us. After
   * stop(), nothing is retried.
   */
  disconnected(reason) {
    if (this.stopped) {
      this.set("disconnected", this.stopped);
    } else if (this.socket.active) {
      this.set("reconnecting");
    } else if (reason === "io server disconnect") {
      this.set("reconnecting");
      this.retryLater();
    } else {
      this.set("disconnected", "the connection was closed.");
    }
  }

  /**
   * On `connect_error`. A network failure: socket.io retries by itself, and this returns null.
   * A refusal: socket.io gives up; an `unavailable` one is transient and retried later, any
   * other would get the same answer again. Returns the refusal ({} when the server sent none).
   */
  connectError(err) {
    if (this.socket.active) {
      this.set(this.retrying());
      return null;
    }
    const refusal = refusalOf(err);
    const reason = reasonOf(err);
    if (refusal.error === "unavailable") {
      this.set("disconnected", `${reason} Retrying in ${Math.round(this.retryDelay / 1000)} s.`);
      this.retryLater();
    } else {
      this.set("disconnected", reason);
    }
    return refusal;
  }

  /**
   * Gives up on the connection for a reason the server would only give again (an expired
   * sign-in): closes it, says `reason`, and retries nothing until the page connects again.
   */
  stop(reason) {
    this.stopped = reason;
    this.cancelRetry();
    this.socket.disconnect(); // its `disconnect` comes back through disconnected()
    this.set("disconnected", reason);
  }

  /** Connects again after the backoff delay, which then doubles. */
  retryLater() {
    this.cancelRetry();
    this.retryTimer = setTimeout(() => {
      if (this.stopped || !this.canRetry()) return;
      this.set(this.retrying());
      this.socket.connect();
    }, this.retryDelay);
    this.retryDelay = Math.min(this.retryDelay * 2, RETRY_MAX_MS);
  }

  /** Drops a pending retry (the backoff delay stays). */
  cancelRetry() {
    clearTimeout(this.retryTimer);
  }

  /** The next retry waits the shortest delay again. */
  resetBackoff() {
    this.retryDelay = RETRY_FIRST_MS;
  }
}

/** The refusal object the server put in a `connect_error` (protocol, "Errors"), or {}. */
export function refusalOf(err) {
  return err && err.data && typeof err.data === "object" ? err.data : {};
}

/** Why a connection was refused, in words. */
export function reasonOf(err) {
  return refusalOf(err).message || err.message || "the server refused the connection.";
}

export function byId(id) {
  const found = document.getElementById(id);
  if (!found) throw new Error(`the page has no #${id}`);
  return found;
}

/** A new element; `text`, when given, is set as text, never parsed as HTML. */
export function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/**
 * A value kept in this tab's sessionStorage (a session secret, a sign-in token): it survives a
 * reload of the page, not the tab. With storage disabled or full, it lives only as long as the
 * page.
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
