// Sign-in (docs/auth.md). The operator's own page opens ours with `#token=<JWT>` in the address's
// fragment, which browsers never send to a server. We move the token to this tab's session
// storage and out of the address bar (history, bookmarks and shared links would keep it), send
// it as socket.io's `auth.token`, and show whom it names in #signed-in. The server checks it;
// the page only reads its `name` and `exp` to show them.
//
// Before the token expires the server says `token_expiring`: the page says so in #signed-in. A
// page of the operator's on our origin can hand us a fresh one with
// `window.switchboard.refresh(token)`, sent on the same connection (`refresh`); without one the
// server tells us `token_expired` on the page's error event and disconnects us.
//
// A connection refused for its sign-in (AUTH_REFUSALS), when connecting or by `token_expired`
// while connected, shows the sign-in card (#sign-in-card, in the page's main area): what
// happened and what to do, in words. It is not retried: the server would only refuse again.

import { byId, element, refusalOf, tabStore } from "/shared/connection.js";

const stored = tabStore("switchboard.token");
/** The operator's page that linked to us with `#token=`, when the browser said (a referrer). */
const signedInFrom = tabStore("switchboard.signin.from");

/** The refusals that are about the sign-in (docs/auth.md, "Refusals"). */
export const AUTH_REFUSALS = new Set([
  "token_required",
  "token_invalid",
  "token_expired",
  "room_forbidden",
  "app_forbidden",
  // Chat, signed in: the token has no name, or another signed-in user has its name here.
  "name_required",
  "taken",
]);
/** A room whose name starts so needs a sign-in that grants it, even in AUTH_MODE=open. */
const PRIVATE_PREFIX = "private-";
const SVG_NS = "http://www.w3.org/2000/svg";
/** The card's icons: a padlock (sign in), a clock (expired), a no-entry sign (refused). */
const ICONS = {
  lock: ["M7 10.5V8a5 5 0 0 1 10 0v2.5", "M5.5 10.5h13v10h-13z", "M12 14.5v2.5"],
  clock: ["M12 3.5a8.5 8.5 0 1 0 0 17a8.5 8.5 0 1 0 0-17z", "M12 7.5V12l3 2"],
  blocked: ["M12 3.5a8.5 8.5 0 1 0 0 17a8.5 8.5 0 1 0 0-17z", "M6 6l12 12"],
};

/** The token this tab was given: from the address's `#token=` (then kept), else kept before. */
export function takeToken() {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token");
  if (token) {
    stored.save(token);
    rememberWhereFrom();
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
 * The page that gave us the token (document.referrer, when the browser tells it: the operator's
 * site), so that the sign-in card can send the person back there to sign in again.
 */
function rememberWhereFrom() {
  try {
    const from = new URL(document.referrer);
    if (/^https?:$/.test(from.protocol) && from.origin !== location.origin) {
      signedInFrom.save(from.href);
      return;
    }
  } catch {
    // no referrer, or not an address
  }
  signedInFrom.forget();
}

/**
 * Shows in #signed-in whom this tab's token names, and follows `socket`'s sign-in: the notice
 * before it expires, a fresh token handed over with window.switchboard.refresh(token), and the
 * sign-in card (showSignInCard) when the server refuses the connection for its sign-in, on
 * connecting or on `errorEvent` (the page's error event: `chat_error`, ...) while connected.
 *
 * `place` says where the page is, for the card: {app, room, defaultRoom} (app: "the chat", ...;
 * room and defaultRoom for the pages that have rooms). `connection` (its Connection) is stopped
 * when the sign-in expires while connected, so that nothing retries it.
 *
 * Returns the claims shown, or null (no token: #signed-in stays hidden).
 */
export function followSignIn(socket, { connection = null, errorEvent = "error", ...place } = {}) {
  const token = takeToken();
  let claims = token ? claimsOf(token) : null;
  const pill = byId("signed-in");
  const show = (state, text) => {
    pill.hidden = false;
    pill.dataset.state = state;
    pill.textContent = text;
  };
  const signedInAs = (shown) => {
    claims = shown;
    if (shown) show("signed-in", `Signed in as ${shown.name || shown.sub}`);
  };
  /** A refusal for the sign-in: the card, and #signed-in says what became of the sign-in. */
  const refused = (refusal, { whileConnected = false } = {}) => {
    if (refusal.error === "token_expired") {
      stored.forget(); // useless now: a reload must not send it again
      show("ended", "Sign-in expired");
    } else if (refusal.error === "token_invalid" && claims) {
      show("ended", "Sign-in not valid");
    }
    showSignInCard(refusal, { ...place, claims, whileConnected });
  };

  /** `refresh` requests without their answer yet. */
  let refreshing = 0;

  signedInAs(claims);
  socket.on("connect", () => {
    refreshing = 0; // the answers of a connection that is gone never come
    hideSignInCard();
  });
  socket.on("connect_error", (err) => {
    if (socket.active) return; // a network failure: socket.io tries again by itself
    const refusal = refusalOf(err);
    if (AUTH_REFUSALS.has(refusal.error)) refused(refusal);
  });
  socket.on(errorEvent, (refusal) => {
    // A fresh token refused as expired comes this way too, before its answer: not ours.
    if (refusal?.error !== "token_expired" || refreshing > 0) return;
    refused(refusal, { whileConnected: true });
    // The server closes the connection next; closed here first, so that no retry sends the
    // connection again without a sign-in (a public room would take it, as someone else).
    if (connection) connection.stop(refusal.message || "your sign-in expired.");
    else socket.disconnect();
  });
  socket.on("token_expiring", ({ expires }) => {
    const minutes = Math.max(0, Math.round((expires * 1000 - Date.now()) / 60_000));
    show("expiring", `Sign-in ends ${minutes ? `in ${minutes} min` : "now"}: sign in again`);
  });
  window.switchboard = {
    refresh(fresh) {
      stored.save(fresh);
      if (!socket.connected) {
        // Signed out, or refused: the fresh token goes with a new connection.
        signedInAs(claimsOf(fresh));
        if (!socket.active) {
          connection?.cancelRetry();
          socket.connect();
          connection?.set(connection.retrying());
        }
        return;
      }
      refreshing += 1;
      socket.emit("refresh", fresh, (answer) => {
        refreshing = Math.max(0, refreshing - 1);
        const renewed = answer && answer.ok ? claimsOf(fresh) : null;
        if (renewed) signedInAs(renewed);
        else show("expiring", (answer && answer.message) || "The fresh sign-in was refused.");
      });
    },
  };
  return claims;
}

/**
 * Shows a refusal of the sign-in in #sign-in-card: what happened, in words, and what to do.
 * `refusal` is the server's {error, message}; `place` says where the page is and who is signed
 * in: {app, room, defaultRoom, claims, whileConnected}.
 */
export function showSignInCard(refusal, place = {}) {
  const card = byId("sign-in-card");
  const text = cardText(refusal, place);
  const title = element("h2", "sign-in-title", text.title);
  title.id = "sign-in-title";
  const body = element("div", "sign-in-body");
  body.append(
    title,
    element("p", "sign-in-what", text.what),
    element("p", "sign-in-todo", text.todo),
  );

  const actions = element("p", "sign-in-actions");
  if (text.lobby) actions.append(link(text.lobby.label, text.lobby.href, "button"));
  const from = text.signIn ? signInPage() : null;
  if (from) {
    const label = `Sign in ${text.signIn === "again" ? "again " : ""}at ${from.host}`;
    actions.append(link(label, from.href, text.lobby ? "button secondary" : "button"));
  }
  if (actions.childElementCount) body.append(actions);
  // The server's own words, when ours cannot be as precise (which check a token failed).
  if (text.detail && refusal.message) {
    body.append(element("p", "sign-in-detail", `The server said: ${refusal.message}`));
  }

  card.replaceChildren(icon(text.icon), body);
  card.dataset.error = refusal.error;
  card.setAttribute("aria-labelledby", "sign-in-title");
  card.hidden = false;
  document.body.dataset.signIn = "refused";
}

/** Takes the card away (the page connected). */
export function hideSignInCard() {
  const card = byId("sign-in-card");
  card.hidden = true;
  card.replaceChildren();
  delete card.dataset.error;
  delete document.body.dataset.signIn;
}

/** The card's words for `refusal`: {icon, title, what, todo, lobby?, signIn?, detail?}. */
function cardText(refusal, place) {
  const { app = "this page", room = null, defaultRoom = null } = place;
  const { claims = null, whileConnected = false } = place;
  const here = room ? `#${room}` : app;
  const as = claims ? ` as ${claims.name || claims.sub}` : "";
  // A way out of a room: the page's default room (whether the sign-in grants it, we cannot
  // know before trying).
  const lobby =
    room && defaultRoom && room !== defaultRoom
      ? { label: `Go to #${defaultRoom}`, href: withoutRoom() }
      : null;
  switch (refusal.error) {
    case "token_required":
      return room?.startsWith(PRIVATE_PREFIX)
        ? {
            icon: "lock",
            title: "This room is private",
            what: `${here} is only open to people signed in with access to it, and you are not signed in.`,
            todo: "Sign in on the site that sent you here, then open the room from there: its link signs you in.",
            lobby,
            signIn: "first",
          }
        : {
            icon: "lock",
            title: "Sign-in needed",
            what: `To use ${app} here you need to be signed in, and you are not.`,
            todo: "Sign in on the site that sent you here, then open this page from there: its link signs you in.",
            signIn: "first",
          };
    case "token_invalid":
      return {
        icon: "blocked",
        title: "Your sign-in link is not valid",
        what: "This page was opened with a sign-in it cannot accept: the link may be cut short, made for another site, or not valid yet.",
        todo: "Open this page again from the site that signed you in, to get a fresh link.",
        signIn: "again",
        detail: true,
      };
    case "token_expired":
      return {
        icon: "clock",
        title: "Your sign-in has expired",
        what: whileConnected
          ? `Your sign-in ran out, so you were disconnected from ${here}.`
          : "The sign-in this page was opened with has run out.",
        todo: "Sign in again on the site that signed you in, then open this page from there.",
        signIn: "again",
      };
    case "room_forbidden":
      return {
        icon: "blocked",
        title: `You can't enter ${here}`,
        what: `You are signed in${as}, but not allowed into ${here}.`,
        todo: lobby
          ? `Go to #${defaultRoom} instead, or ask whoever gave you access to add this room to your sign-in.`
          : "Ask whoever gave you access to add this room to your sign-in.",
        lobby,
      };
    case "app_forbidden":
      return {
        icon: "blocked",
        title: `You can't use ${app}`,
        what: `You are signed in${as}, but your sign-in does not include ${app}.`,
        todo: "Ask whoever gave you access to add it to your sign-in, then sign in again.",
        signIn: "again",
      };
    case "name_required":
      return {
        icon: "blocked",
        title: "Your sign-in has no name",
        what: `${app[0].toUpperCase()}${app.slice(1)} shows everyone by name, and your sign-in gives none.`,
        todo: "Ask whoever gave you access to add your name to your sign-in, then sign in again.",
        signIn: "again",
      };
    case "taken":
      return {
        icon: "blocked",
        title: "Your name is in use here",
        what: `Another signed-in person is called ${claims?.name || claims?.sub || "the same"} here.`,
        todo: "Ask whoever gave you access to give you a name of your own, or try again once they have left.",
        detail: true,
      };
    default:
      return {
        icon: "blocked",
        title: "You can't connect",
        what: "The server refused this page's sign-in.",
        todo: "Sign in again on the site that sent you here.",
        signIn: "again",
        detail: true,
      };
  }
}

/** This page without ?room: its default room, with the rest of its address kept. */
function withoutRoom() {
  const url = new URL(location.href);
  url.searchParams.delete("room");
  url.hash = "";
  return `${url.pathname}${url.search}`;
}

/** The operator's page the token came from, when known: a URL, or null. */
function signInPage() {
  try {
    const from = signedInFrom.load();
    return from ? new URL(from) : null;
  } catch {
    return null;
  }
}

function link(text, href, className) {
  const anchor = element("a", className, text);
  anchor.href = href;
  return anchor;
}

function icon(name) {
  const badge = element("span", "sign-in-icon");
  badge.setAttribute("aria-hidden", "true");
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  for (const d of ICONS[name] || ICONS.blocked) {
    const path = document.createElementNS(SVG_NS, "path");
    path.setAttribute("d", d);
    svg.append(path);
  }
  badge.append(svg);
  return badge;
}
