// The chat page: screen 1 picks a name, screen 2 is the room. docs/protocol.md ("Chat") is the
// contract. Every text another person chose (names, messages, the links in them) goes into the
// page as text nodes and attributes set one by one, never innerHTML.
import { io } from "/vendor/socket.io.esm.min.js";
import { Connection, byId, element } from "/shared/connection.js";
import { followSignIn, withToken } from "/shared/signin.js";

const DEFAULT_ROOM = "lobby";
/** Where this tab keeps the token of its name (per tab: another tab is another person). */
const NAME_TOKEN_KEY = "switchboard.chat.nameToken";
/** How long we wait for the server's ack of `name` or `message`. */
const ACK_TIMEOUT_MS = 10_000;
/** Closer than this to the bottom, the message list follows new messages. */
const FOLLOW_PX = 120;
/** Messages from one person closer together than this share one header. */
const GROUP_MS = 5 * 60_000;
/**
 * Joins and leaves are told in the conversation, coalesced (issue 16): what happens within
 * NOTICE_WINDOW_MS of the first one is one notice ("Ann, Bob and 3 others joined"), told once
 * nothing more came for NOTICE_SETTLE_MS (the server's `presence` comes once a tick, about
 * every 0.2 s, from each replica), and at the latest NOTICE_MAX_MS after the first. A room too
 * big to list (issue 17) tells none.
 */
const NOTICE_WINDOW_MS = 1_000;
const NOTICE_SETTLE_MS = 300;
const NOTICE_MAX_MS = 5_000;
/** A leave waits this long for its person to come back (a reloaded tab, a phone changing
 * networks): then neither is told. */
const LEAVE_GRACE_MS = 3_000;
/** More names than this in one notice: the first ones, then "and N others". */
const NOTICE_NAMES = 3;
/** What a link in a message may be: http(s) only, never javascript:, data: and the like. */
const LINK_PATTERN = /\bhttps?:\/\/[^\s<>"]+/gi;
/** Said by the composer while a message cannot be sent, by why (waitingReason()). */
const WAITING = {
  offline: "Not connected: your message will be sendable when we reconnect.",
  stopped: "Not connected (see why at the top): what you typed stays here.",
  naming: "Rejoining the room: your message will be sendable in a moment.",
};
const EMPTY_MESSAGE = "A message needs at least one character.";

const ui = {
  room: byId("room"),
  me: byId("me"),
  myName: byId("my-name"),
  nameScreen: byId("name-screen"),
  nameForm: byId("name-form"),
  nameInput: byId("name-input"),
  nameSubmit: byId("name-submit"),
  nameError: byId("name-error"),
  chatScreen: byId("chat-screen"),
  users: byId("users"),
  crowd: byId("crowd"),
  userCount: byId("user-count"),
  log: byId("log"),
  messages: byId("messages"),
  messageForm: byId("message-form"),
  messageInput: byId("message-input"),
  messageSubmit: byId("message-submit"),
  composerNote: byId("composer-note"),
};

const room = new URLSearchParams(location.search).get("room") || DEFAULT_ROOM;

const chat = {
  screen: "name",
  /** The name the server accepted; claimed again on every reconnect. */
  name: null,
  /** True once the server holds our name on the current connection. */
  nameConfirmed: false,
  /** Only the answer to the latest `name` request counts. */
  nameRequest: 0,
  /** The newest message id we hold, sent as `last_id` so a reconnect brings only what we missed. */
  lastId: null,
  messageIds: new Set(),
  /** Who is online: member id -> {name, connections, signedIn} (docs/protocol.md, "Members"). */
  users: new Map(),
  /**
   * The room's presence as the server told it (docs/protocol.md, "Members"): whether it is
   * listed (small enough for the server to say who is in it) or only counted; how many are
   * here; `rev`, the rev of those figures; `base`, the rev of the `users` we hold; `revs`,
   * member id -> the rev of its newest change we applied since. A change no newer than these
   * is skipped: diffs of different replicas may come in any order, and `users` may already
   * hold what a diff says. `since`: the rev of our taking our name; what changed before it is
   * not told (it may reach us after we are in, from another replica's tick).
   */
  presence: { listed: true, count: 0, rev: 0, base: 0, revs: new Map(), since: 0 },
  /** Our member ids (a socket id per connection; our user's id when signed in), to tell our own
   * messages and entry apart. */
  ownIds: new Set(),
  /**
   * The joins, leaves and renames not told yet: {started, timer, changes, place}, with changes:
   * member id -> {before: the name it had before the first of them (null: it was not here),
   * leftAt: when it left, while it may come back}; `place`, the hidden item the notices will
   * replace. The name it has after is read from `users` when told: the notice says what
   * changed in all.
   */
  pending: null,
  unread: 0,
  /** What the composer says of the last attempt to send (a refusal, empty): {text, kind}. */
  composerError: null,
};

const socket = io({
  path: "/api/chat/socket.io",
  transports: ["websocket"],
  // A callback, not an object: socket.io calls it before every (re)connection, so the server
  // always gets the current room and last message id.
  auth: (cb) => cb(connectAuth()),
});

/** #status; the composer waits while we are not connected. */
const connection = new Connection(socket, { onChange: updateComposer });
/** Who this tab's sign-in token names (docs/auth.md), or null. */
const signedIn = followSignIn(socket, {
  connection,
  errorEvent: "chat_error",
  app: "the chat",
  room,
  defaultRoom: DEFAULT_ROOM,
});

start();

function start() {
  ui.room.textContent = room;
  for (const ref of document.querySelectorAll(".room-ref")) ref.textContent = `#${room}`;
  updateTitle();
  // Signed in: the token names us (the server says so with `name` as we connect); the name
  // screen only says who we join as, until then.
  if (signedIn) showSignedInName(signedIn.name || signedIn.sub);

  ui.nameForm.addEventListener("submit", onNameSubmit);
  ui.nameInput.addEventListener("input", () => showNameError(""));
  ui.messageForm.addEventListener("submit", onMessageSubmit);
  ui.messageInput.addEventListener("input", () => showChatError(null));
  document.addEventListener("visibilitychange", onVisibilityChange);

  socket.on("connect", onConnect);
  socket.on("disconnect", onDisconnect);
  // bad_room, bad_auth, bad_last_id are final; `unavailable` is retried.
  socket.on("connect_error", (err) => connection.connectError(err));

  socket.on("name", (name, me) => nameAccepted(name, me?.id, me?.rev));
  socket.on("name_error", (refusal) => {
    // Replaced: this tab's name went to a newer connection of ours (a copy of this tab).
    if (refusal.error === "replaced") rememberNameToken(null);
    nameRefused(refusal.message);
  });
  socket.on("chat_error", (refusal) => showChatError(refusal.message));
  socket.on("users", onUsers);
  socket.on("presence", onPresence);
  socket.on("history", onHistory);
  socket.on("message", (sender, text, meta) => onMessage({ ...meta, sender, text }));

  connection.set("connecting");
}

// --- Connection ------------------------------------------------------------------------------

function onConnect() {
  chat.ownIds.add(socket.id);
  connection.connected();
  // The server forgets our name when the connection drops: claim it again (signed in, the
  // server names us itself).
  if (chat.name && !signedIn) requestName(chat.name);
}

function onDisconnect(reason) {
  chat.nameConfirmed = false;
  connection.disconnected(reason);
}

// --- Screens ---------------------------------------------------------------------------------

function showScreen(screen) {
  if (screen === chat.screen) return;
  chat.screen = screen;
  switch (screen) {
    case "name":
      ui.chatScreen.hidden = true;
      ui.nameScreen.hidden = false;
      ui.me.hidden = true;
      ui.nameInput.focus();
      ui.nameInput.select();
      break;
    case "chat":
      ui.nameScreen.hidden = true;
      ui.chatScreen.hidden = false;
      ui.me.hidden = false;
      scrollToBottom(); // the list had no size while hidden
      ui.messageInput.focus();
      break;
    default:
      throw new Error(`unknown screen: ${screen}`);
  }
}

// --- Name ------------------------------------------------------------------------------------

function onNameSubmit(event) {
  event.preventDefault();
  if (connection.state === "disconnected") {
    showNameError("Not connected to the chat; see the status above.");
    return;
  }
  // While still connecting, socket.io buffers the request and sends it once connected.
  requestName(ui.nameInput.value);
}

function requestName(name) {
  const request = ++chat.nameRequest;
  ui.nameSubmit.disabled = true;
  socket.timeout(ACK_TIMEOUT_MS).emit("name", name, (err, reply) => {
    if (request !== chat.nameRequest) return;
    ui.nameSubmit.disabled = false;
    if (err) {
      // Cut off before the answer came: the next `connect` claims the name again.
      if (chat.name && !socket.connected) return;
      nameRefused("The server did not answer; try again.");
    } else if (reply?.ok) {
      if (reply.token) rememberNameToken(reply.token);
      nameAccepted(reply.name, reply.id);
    } else {
      nameRefused(reply?.message ?? "That name was refused; pick another.");
    }
  });
}

/**
 * What the server gets on every (re)connection: the room, the last message we hold (to get
 * only what we missed), and the token our name came with, which lets us take the name back
 * from our own old connection when the server has not yet seen it drop (a phone that changed
 * networks).
 */
function connectAuth() {
  const auth = { room };
  if (chat.lastId) auth.last_id = chat.lastId;
  const token = sessionStorage.getItem(NAME_TOKEN_KEY);
  if (token) auth.name_token = token;
  return withToken(auth);
}

function rememberNameToken(token) {
  if (token) sessionStorage.setItem(NAME_TOKEN_KEY, token);
  else sessionStorage.removeItem(NAME_TOKEN_KEY);
}

/** The name screen of a signed-in person: no choice to make, only who they join as. */
function showSignedInName(name) {
  ui.nameInput.value = name;
  ui.nameInput.readOnly = true;
  ui.nameSubmit.hidden = true;
  ui.nameForm.querySelector("p.muted").textContent = `Signed in: you join as ${name}.`;
}

/**
 * The server holds `name` for us, as typed by us or after trimming and normalising (or as our
 * sign-in gives it); `id` is our id as a member of the room, `rev` that of our taking the name
 * (not in the ack).
 */
function nameAccepted(name, id, rev) {
  if (id) chat.ownIds.add(id);
  if (rev) chat.presence.since = Math.max(chat.presence.since, rev);
  chat.name = name;
  chat.nameConfirmed = true;
  ui.myName.textContent = name;
  showNameError("");
  renderUsers(); // marks our own entry
  updateComposer();
  showScreen("chat");
}

/**
 * A name refused: a fresh pick, our name claimed again after a reconnect, or a name taken
 * from us while our replica was cut off (`name_error` with no request of ours).
 */
function nameRefused(message) {
  const lost = chat.name;
  chat.name = null;
  chat.nameConfirmed = false;
  updateComposer();
  if (lost) ui.nameInput.value = lost;
  showNameError(message);
  showScreen("name");
}

function showNameError(message) {
  ui.nameError.textContent = message;
  ui.nameInput.setAttribute("aria-invalid", message ? "true" : "false");
}

// --- People online ---------------------------------------------------------------------------

/** A member as we keep it, from the server's {id, name, connections?, signed_in?}. */
function member({ name, connections = 1, signed_in: signedIn = false }) {
  return { name, connections, signedIn };
}

/**
 * `users`: who is in the room, all of it (none when it is too big to list: `info.listed`
 * false): on joining, after a reconnect, after our replica was cut off, when the room is small
 * enough to list again. Not a join nor a leave of anyone: what changed while we were away is
 * not told. Changes we hold that are newer than it stay; an older `users` (another replica's,
 * overtaken) is skipped.
 */
function onUsers(list, info = {}) {
  const presence = chat.presence;
  const rev = info.rev ?? 0;
  if (rev < presence.base) return;
  const users = new Map(list.map((m) => [m.id, member(m)]));
  const revs = new Map();
  for (const [id, changed] of presence.revs) {
    if (changed <= rev) continue;
    revs.set(id, changed);
    if (chat.users.has(id)) users.set(id, chat.users.get(id));
    else users.delete(id);
  }
  chat.users = users;
  presence.revs = revs;
  presence.base = rev;
  if (rev >= presence.rev) {
    presence.rev = rev;
    presence.count = info.count ?? users.size;
    presence.listed = info.listed ?? true;
  }
  renderUsers();
}

/**
 * `presence`, a tick's changes: `joined` (someone took a name, renamed, a signed-in user's
 * first connection came, or a replica taken for dead wrote its people back), `updated` (a
 * signed-in user's count of connections), `left`; with the room's `count` and whether it is
 * `listed`. A room that became too big to list has no lists: we keep its count (a `users`
 * lists it again).
 */
function onPresence(diff) {
  const presence = chat.presence;
  if (diff.rev !== undefined && diff.rev >= presence.rev) {
    presence.rev = diff.rev;
    presence.count = diff.count;
    if (!diff.listed && presence.listed) countOnly();
  }
  for (const m of diff.left ?? []) {
    if (!newer(m) || !chat.users.has(m.id)) continue;
    noteChange(m, false);
    chat.users.delete(m.id);
  }
  for (const m of diff.joined ?? []) {
    if (!newer(m)) continue;
    // Someone who left a moment ago under this name is back, on another connection.
    comeBack(m.name);
    noteChange(m, true);
    chat.users.set(m.id, member(m));
  }
  for (const m of diff.updated ?? []) {
    if (newer(m)) chat.users.set(m.id, member(m));
  }
  renderUsers();
}

/** Whether member `m`'s change is newer than what we hold of it; noted if it is. */
function newer({ id, rev = 0 }) {
  const presence = chat.presence;
  if (rev <= presence.base || rev <= (presence.revs.get(id) ?? 0)) return false;
  presence.revs.set(id, rev);
  return true;
}

/** The room is too big to list: its count only, and no notices (those pending go untold). */
function countOnly() {
  chat.presence.listed = false;
  chat.users.clear();
  chat.presence.revs.clear();
  if (chat.pending) {
    clearTimeout(chat.pending.timer);
    chat.pending.place.remove();
    chat.pending = null;
  }
}

function renderUsers() {
  const { listed, count } = chat.presence;
  ui.users.hidden = !listed;
  ui.crowd.hidden = listed;
  if (!listed) {
    ui.users.replaceChildren();
    ui.crowd.textContent = `${count} ${count === 1 ? "person" : "people"} here: too many to list.`;
    ui.userCount.textContent = String(count);
    return;
  }
  const people = [...chat.users].sort(([, a], [, b]) =>
    a.name.localeCompare(b.name, undefined, { sensitivity: "base" }),
  );
  const items = people.map(([id, { name, connections, signedIn: isUser }]) => {
    const item = element("li", "user");
    item.append(element("span", "user-name", name));
    if (isUser) item.append(badge("✓", "signed in", "Signed in"));
    if (connections > 1) {
      const what = `${connections} connections`;
      item.append(badge(`×${connections}`, what, `${what} (tabs or devices)`));
    }
    item.dataset.id = id;
    if (chat.ownIds.has(id)) item.classList.add("me");
    return item;
  });
  ui.users.replaceChildren(...items);
  ui.userCount.textContent = String(items.length);
}

// --- Joins and leaves -------------------------------------------------------------------------

/**
 * Member `id` is about to join (`came`) or leave: kept for the next notice, with the name it
 * had before. Not told: ourselves (our own joining, our other tabs), anything before we are
 * in the room ourselves (from before we took our name: its `rev`), and anything in a room too
 * big to list.
 */
function noteChange({ id, rev }, came) {
  if (chat.screen !== "chat" || !chat.presence.listed || chat.ownIds.has(id)) return;
  if (rev <= chat.presence.since) return;
  const now = Date.now();
  // Its place in the conversation is kept now, so that what is said meanwhile comes after it.
  chat.pending ??= { started: now, timer: 0, changes: new Map(), place: noticePlace() };
  const { changes } = chat.pending;
  if (!changes.has(id)) changes.set(id, { before: chat.users.get(id)?.name ?? null, leftAt: 0 });
  // A leave waits for its person to come back, unless they already have (on a new connection,
  // whose join can come first).
  changes.get(id).leftAt = came || isBack(id) ? 0 : now;
  scheduleNotice(now);
}

/** The pending notice is told NOTICE_WINDOW_MS after its first change, once nothing came for
 * NOTICE_SETTLE_MS and nobody who left may still come back (LEAVE_GRACE_MS); at the latest
 * NOTICE_MAX_MS after its first change. */
function scheduleNotice(now) {
  const batch = chat.pending;
  let wanted = Math.max(batch.started + NOTICE_WINDOW_MS, now + NOTICE_SETTLE_MS);
  for (const { leftAt } of batch.changes.values()) {
    if (leftAt) wanted = Math.max(wanted, leftAt + LEAVE_GRACE_MS);
  }
  const deadline = Math.min(wanted, batch.started + NOTICE_MAX_MS);
  clearTimeout(batch.timer);
  batch.timer = setTimeout(tellChanges, Math.max(0, deadline - now));
}

/** Whether member `id`, leaving, is here already under the same name on another connection. */
function isBack(id) {
  const name = chat.users.get(id)?.name;
  for (const [other, change] of chat.pending.changes) {
    if (other !== id && change.before === null && chat.users.get(other)?.name === name) return true;
  }
  return false;
}

/** A leave of `name` pending is no longer waited on: its person is back. */
function comeBack(name) {
  for (const change of chat.pending?.changes.values() ?? []) {
    if (change.before === name) change.leftAt = 0;
  }
}

/** Tells the pending joins, leaves and renames: one notice for each kind. */
function tellChanges() {
  const batch = chat.pending;
  chat.pending = null;
  if (!batch) return;
  const joined = [];
  const left = [];
  const renamed = [];
  for (const [id, { before }] of batch.changes) {
    const after = chat.users.get(id)?.name ?? null;
    if (before === after) continue; // came and went, went and came back, or nothing changed
    if (before === null) joined.push(after);
    else if (after === null) left.push(before);
    else renamed.push([before, after]);
  }
  // The same name gone from one connection and come on another: someone's new connection
  // (a reloaded page, a phone that changed networks), not a leave and a join.
  for (let i = joined.length - 1; i >= 0; i--) {
    const back = left.indexOf(joined[i]);
    if (back >= 0) {
      left.splice(back, 1);
      joined.splice(i, 1);
    }
  }
  const follow = isNearBottom();
  const notices = [];
  if (joined.length) notices.push(notice("joined", `${namesList(joined)} joined`, joined));
  if (left.length) notices.push(notice("left", `${namesList(left)} left`, left));
  for (const [before, after] of renamed) {
    notices.push(notice("renamed", `${before} is now ${after}`));
  }
  const next = batch.place.nextElementSibling;
  batch.place.replaceWith(...notices);
  if (next?.classList.contains("message")) groupWithPrevious(next);
  if (follow) scrollToBottom();
}

/** "Ann", "Ann and Bob", "Ann, Bob and Cy", "Ann, Bob and 3 others": sorted, for a stable text. */
function namesList(names) {
  const sorted = [...names].sort((a, b) => a.localeCompare(b, undefined, { sensitivity: "base" }));
  if (sorted.length === 1) return sorted[0];
  if (sorted.length <= NOTICE_NAMES) {
    return `${sorted.slice(0, -1).join(", ")} and ${sorted.at(-1)}`;
  }
  const shown = NOTICE_NAMES - 1;
  return `${sorted.slice(0, shown).join(", ")} and ${sorted.length - shown} others`;
}

/**
 * The place of notices to come, at the end of the conversation as it is now (messages go by
 * id, notices where they happened): hidden, and so not announced, until they are told.
 */
function noticePlace() {
  const place = element("li", "notice");
  place.hidden = true;
  ui.messages.append(place);
  return place;
}

/** A notice of `kind` (joined, left, renamed); `names`, when some are not in the text, are
 * its tooltip, with the time. */
function notice(kind, text, names = []) {
  const item = element("li", "notice", text);
  item.dataset.kind = kind;
  const time = new Date().toLocaleTimeString();
  item.title = names.length > NOTICE_NAMES ? `${names.join(", ")} · ${time}` : time;
  return item;
}

// --- Messages --------------------------------------------------------------------------------

function onHistory(messages, info) {
  const follow = isNearBottom();
  for (const message of messages) addMessage(message);
  if (info && info.complete === false) {
    // Put the notice where the gap is: just before the oldest message we were sent. A newcomer
    // to a busy room only learns there was more; someone coming back learns they missed some.
    const text = info.after
      ? "Some messages you missed are no longer available."
      : "Earlier messages are not shown.";
    const notice = element("li", "notice", text);
    notice.dataset.kind = "gap";
    const first = messages.length ? findMessage(messages[0].id) : null;
    if (first) first.before(notice);
    else ui.messages.append(notice);
  }
  if (follow) scrollToBottom();
}

function onMessage(message) {
  const follow = isNearBottom();
  const item = addMessage(message);
  if (!item) return;
  if (follow || item.classList.contains("mine")) scrollToBottom();
  if (document.hidden) {
    chat.unread += 1;
    updateTitle();
  }
}

/** Adds a message unless we already hold it (it can come both in `history` and as `message`). */
function addMessage({ id, ts, sender, text }) {
  if (chat.messageIds.has(id)) return null;
  chat.messageIds.add(id);
  if (!chat.lastId || compareIds(id, chat.lastId) > 0) chat.lastId = id;

  const item = renderMessage({ id, ts, sender, text });
  insertInOrder(item);
  groupWithPrevious(item);
  const next = item.nextElementSibling;
  if (next?.classList.contains("message")) groupWithPrevious(next);
  return item;
}

function renderMessage({ id, ts, sender, text }) {
  const item = element("li", "message");
  item.dataset.id = id;
  item.dataset.ts = String(ts);
  item.dataset.sender = sender.name;
  if (chat.ownIds.has(sender.id)) item.classList.add("mine");

  const when = new Date(ts);
  const time = element("time", "time", formatTime(when));
  time.dateTime = when.toISOString();
  time.title = when.toLocaleString();

  const meta = element("div", "meta");
  const from = element("span", "sender", sender.name);
  if (sender.signed_in) from.append(badge("✓", "signed in", "Signed in"));
  meta.append(from, time);
  const body = element("p", "text");
  appendWithLinks(body, text);
  item.append(meta, body);
  return item;
}

/**
 * `text` into `parent` as text nodes, with its http(s) addresses as links that open in a new
 * tab without giving it our page (`noopener`) nor our address (`noreferrer`). Nothing else
 * becomes a link: not javascript:, data: or any other scheme, nor an address the URL parser
 * does not take.
 */
function appendWithLinks(parent, text) {
  let at = 0;
  for (const found of text.matchAll(LINK_PATTERN)) {
    const shown = trimLink(found[0]);
    const href = httpHref(shown);
    if (!href) continue;
    parent.append(text.slice(at, found.index));
    const link = element("a", "", shown);
    link.href = href;
    link.rel = "noopener noreferrer";
    link.target = "_blank";
    parent.append(link);
    at = found.index + shown.length;
  }
  parent.append(text.slice(at));
}

/** An address as written in a sentence: without the punctuation after it ("see x.com/a)."),
 * keeping the brackets it opened itself (en.wikipedia.org/wiki/Foo_(bar)). */
function trimLink(candidate) {
  let link = candidate;
  const count = (char) => link.split(char).length - 1;
  const opener = { ")": "(", "]": "[", "}": "{" };
  while (link) {
    const last = link.at(-1);
    if (".,;:!?'\"*".includes(last)) link = link.slice(0, -1);
    else if (last in opener && count(opener[last]) < count(last)) link = link.slice(0, -1);
    else break;
  }
  return link;
}

/** The address to link to, when `candidate` is an http(s) URL with a host; else null. */
function httpHref(candidate) {
  try {
    const url = new URL(candidate);
    const web = url.protocol === "http:" || url.protocol === "https:";
    return web && url.hostname ? url.href : null;
  } catch {
    return null;
  }
}

/**
 * Ids sort by time: a message newer than every one we hold goes at the end, after the notices
 * told since; an older one (history that came late) right after the message before it.
 */
function insertInOrder(item) {
  const held = ui.messages.querySelectorAll(":scope > .message");
  const id = item.dataset.id;
  for (let i = held.length - 1; i >= 0; i--) {
    if (compareIds(held[i].dataset.id, id) > 0) continue;
    if (i === held.length - 1) ui.messages.append(item);
    else held[i].after(item);
    return;
  }
  if (held.length) held[0].before(item);
  else ui.messages.append(item);
}

/**
 * Consecutive messages from one person, close in time, show the name and time once; a notice
 * between them parts them (the place of one not told yet does not).
 */
function groupWithPrevious(item) {
  let previous = item.previousElementSibling;
  while (previous?.hidden) previous = previous.previousElementSibling;
  const continued =
    previous?.classList.contains("message") &&
    previous.dataset.sender === item.dataset.sender &&
    Number(item.dataset.ts) - Number(previous.dataset.ts) < GROUP_MS;
  item.classList.toggle("continued", Boolean(continued));
}

function findMessage(id) {
  return [...ui.messages.children].find((item) => item.dataset.id === id) ?? null;
}

/** Message ids are Redis stream ids, `<ms>-<seq>`: compare them as numbers, not strings. */
function compareIds(a, b) {
  const [msA, seqA] = a.split("-").map(Number);
  const [msB, seqB] = b.split("-").map(Number);
  return msA - msB || seqA - seqB;
}

function formatTime(when) {
  const sameDay = when.toDateString() === new Date().toDateString();
  const options = sameDay
    ? { hour: "2-digit", minute: "2-digit" }
    : { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" };
  return when.toLocaleString(undefined, options);
}

function isNearBottom() {
  const log = ui.log;
  return log.scrollHeight - log.scrollTop - log.clientHeight < FOLLOW_PX;
}

function scrollToBottom() {
  ui.log.scrollTop = ui.log.scrollHeight;
}

// --- Sending ---------------------------------------------------------------------------------

function onMessageSubmit(event) {
  event.preventDefault();
  // What the server would do (it refuses `empty`), said here at once.
  const text = ui.messageInput.value.trim();
  if (!text) {
    showChatError(EMPTY_MESSAGE, "empty");
    ui.messageInput.focus();
    return;
  }
  if (!canSend()) {
    // The note already says why; said again as a failed attempt, and what was typed stays.
    showChatError(waitingReason(), "waiting");
    return;
  }
  // Clear at once so the next message can be typed; put the text back if it is refused.
  ui.messageInput.value = "";
  showChatError(null);
  socket.timeout(ACK_TIMEOUT_MS).emit("message", text, (err, reply) => {
    if (err) {
      sendFailed(text, "No answer from the server: your message may not have been sent.");
    } else if (!reply?.ok) {
      sendFailed(text, reply?.message ?? "Your message was refused.");
    }
  });
}

function sendFailed(text, message) {
  if (!ui.messageInput.value) ui.messageInput.value = text;
  showChatError(message);
}

function canSend() {
  return connection.state === "connected" && chat.nameConfirmed;
}

/** Why a message cannot be sent now, in words (WAITING). */
function waitingReason() {
  if (connection.state === "connected") return WAITING.naming;
  if (connection.state === "disconnected") return WAITING.stopped;
  return WAITING.offline;
}

/**
 * The composer as the connection allows: Send stays focusable (aria-disabled, so that trying
 * it says why), and the note under the conversation says what stops a message, or what became
 * of the last one.
 */
function updateComposer() {
  const ready = canSend();
  ui.messageSubmit.setAttribute("aria-disabled", String(!ready));
  ui.messageForm.dataset.ready = String(ready);
  // A failed attempt to send while away is over once we are back.
  if (ready && chat.composerError?.kind === "waiting") chat.composerError = null;
  const error = chat.composerError;
  const note = error ? error.text : ready ? "" : waitingReason();
  ui.composerNote.textContent = note;
  ui.composerNote.dataset.tone = error ? "error" : "waiting";
  const empty = error?.kind === "empty";
  ui.messageInput.setAttribute("aria-invalid", String(empty));
}

/** What became of the last attempt to send (`kind`: "empty", "waiting", "refused"), or null. */
function showChatError(text, kind = "refused") {
  chat.composerError = text ? { text, kind } : null;
  updateComposer();
}

// --- Page ------------------------------------------------------------------------------------

function onVisibilityChange() {
  if (!document.hidden) {
    chat.unread = 0;
    updateTitle();
  }
}

function updateTitle() {
  const unread = chat.unread ? `(${chat.unread}) ` : "";
  document.title = `${unread}#${room} · Switchboard chat`;
}

/** A small mark after a name: `shown`, said as `said` to screen readers, `title` on hover. */
function badge(shown, said, title) {
  const mark = element("span", "badge");
  mark.title = title;
  const visible = element("span", "", shown);
  visible.setAttribute("aria-hidden", "true");
  mark.append(visible, element("span", "visually-hidden", ` (${said})`));
  return mark;
}
