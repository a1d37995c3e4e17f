// The chat page: screen 1 picks a name, screen 2 is the room. docs/protocol.md ("Chat") is the
// contract. Every text another person chose (names, messages) goes into the page with
// textContent, never innerHTML.
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
  userCount: byId("user-count"),
  messages: byId("messages"),
  messageForm: byId("message-form"),
  messageInput: byId("message-input"),
  messageSubmit: byId("message-submit"),
  chatError: byId("chat-error"),
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
  /** Our member ids (a socket id per connection; our user's id when signed in), to tell our own
   * messages and entry apart. */
  ownIds: new Set(),
  unread: 0,
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
  document.addEventListener("visibilitychange", onVisibilityChange);

  socket.on("connect", onConnect);
  socket.on("disconnect", onDisconnect);
  // bad_room, bad_auth, bad_last_id are final; `unavailable` is retried.
  socket.on("connect_error", (err) => connection.connectError(err));

  socket.on("name", (name, me) => nameAccepted(name, me?.id));
  socket.on("name_error", (refusal) => {
    // Replaced: this tab's name went to a newer connection of ours (a copy of this tab).
    if (refusal.error === "replaced") rememberNameToken(null);
    nameRefused(refusal.message);
  });
  socket.on("chat_error", (refusal) => showChatError(refusal.message));
  socket.on("users", onUsers);
  socket.on("user_joined", onMember);
  socket.on("user_updated", onMember);
  socket.on("user_left", onUserLeft);
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
 * sign-in gives it); `id` is our id as a member of the room.
 */
function nameAccepted(name, id) {
  if (id) chat.ownIds.add(id);
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

function onUsers(list) {
  chat.users = new Map(list.map((m) => [m.id, member(m)]));
  renderUsers();
}

/** `user_joined`, or `user_updated` (a signed-in user's count of connections changed). */
function onMember(m) {
  chat.users.set(m.id, member(m));
  renderUsers();
}

function onUserLeft({ id, name }) {
  // A rename sends user_left for the old name before user_joined for the new one; compare the
  // name so that a late user_left never removes a newer entry.
  if (chat.users.get(id)?.name === name) chat.users.delete(id);
  renderUsers();
}

function renderUsers() {
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
  item.append(meta, element("p", "text", text));
  return item;
}

/** Ids sort by time; a message usually belongs at the end, so search from there. */
function insertInOrder(item) {
  for (let other = ui.messages.lastElementChild; other; other = other.previousElementSibling) {
    if (other.dataset.id && compareIds(other.dataset.id, item.dataset.id) < 0) {
      other.after(item);
      return;
    }
  }
  ui.messages.prepend(item);
}

/** Consecutive messages from one person, close in time, show the name and time once. */
function groupWithPrevious(item) {
  const previous = item.previousElementSibling;
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
  const list = ui.messages;
  return list.scrollHeight - list.scrollTop - list.clientHeight < FOLLOW_PX;
}

function scrollToBottom() {
  ui.messages.scrollTop = ui.messages.scrollHeight;
}

// --- Sending ---------------------------------------------------------------------------------

function onMessageSubmit(event) {
  event.preventDefault();
  const text = ui.messageInput.value;
  if (!text.trim()) return;
  if (!canSend()) {
    showChatError("Not connected: your message is kept here until we are back.");
    return;
  }
  // Clear at once so the next message can be typed; put the text back if it is refused.
  ui.messageInput.value = "";
  socket.timeout(ACK_TIMEOUT_MS).emit("message", text, (err, reply) => {
    if (err) {
      sendFailed(text, "No answer from the server: your message may not have been sent.");
    } else if (!reply?.ok) {
      sendFailed(text, reply?.message ?? "Your message was refused.");
    } else {
      showChatError("");
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

function updateComposer() {
  const ready = canSend();
  ui.messageSubmit.disabled = !ready;
  ui.messageForm.dataset.ready = String(ready);
  ui.messageInput.placeholder = ready ? "Write a message…" : "Waiting for the connection…";
}

function showChatError(message) {
  ui.chatError.textContent = message;
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
