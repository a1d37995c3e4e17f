// Sign-in (docs/auth.md). The operator's own page opens ours with `#token=<JWT>` in the address's
// fragment, which browsers never send to a server. We move the token to this tab's session
// storage and out of the address bar (history, bookmarks and shared links would keep it), send
// it as socket.io's `auth.token`, and show whom it names in #signed-in. The server checks it;
// the page only reads its `name` and `exp` to show them.
//
// Before the token expires the server says `token_expiring`: the page says so in #signed-in. A
// page of the operator's on our origin can hand us a fresh one with
// `window.switchboard.refresh(token)`, sent on the same connection (`refresh`); without one the
// server disconnects us with `token_expired`, which the page's connection status shows.

import { byId, tabStore } from "/shared/connection.js";

const stored = tabStore("switchboard.token");

/** The token this tab was given: from the address's `#token=` (then kept), else kept before. */
export function takeToken() {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token");
  if (token) {
    stored.save(token);
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", `${location.pathname}${location.search}${rest ? `#${rest}` : ""}`);
  }
  return stored.load();
}

/** `auth` with this tab's token, when it has one. */
export function withToken(auth) {
  const token = stored.load();
  return token ? { ...auth, token } : auth;
}

/** What the token says of its user, unchecked: {name, sub, expires} (expires in ms), or null. */
export function claimsOf(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
    return { name: claims.name || null, sub: String(claims.sub), expires: claims.exp * 1000 };
  } catch {
    return null;
  }
}

/**
 * Shows in #signed-in whom this tab's token names, and follows `socket`'s token: the notice
 * before it expires, and a fresh one handed over with window.switchboard.refresh(token).
 * Returns the claims shown, or null (no token: #signed-in stays hidden).
 */
export function followSignIn(socket) {
  const token = takeToken();
  const claims = token ? claimsOf(token) : null;
  const pill = byId("signed-in");
  const show = (state, text) => {
    if (!pill) return;
    pill.hidden = false;
    pill.dataset.state = state;
    pill.textContent = text;
  };
  if (claims) show("signed-in", `Signed in as ${claims.name || claims.sub}`);
  socket.on("token_expiring", ({ expires }) => {
    const minutes = Math.max(0, Math.round((expires * 1000 - Date.now()) / 60_000));
    show("expiring", `Sign-in ends ${minutes ? `in ${minutes} min` : "now"}: sign in again`);
  });
  window.switchboard = {
    refresh(fresh) {
      stored.save(fresh);
      socket.emit("refresh", fresh, (answer) => {
        const renewed = answer && answer.ok ? claimsOf(fresh) : null;
        if (renewed) show("signed-in", `Signed in as ${renewed.name || renewed.sub}`);
        else show("expiring", (answer && answer.message) || "The fresh sign-in was refused.");
      });
    },
  };
  return claims;
}
