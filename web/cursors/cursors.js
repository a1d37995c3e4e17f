// The shared cursors page: everyone in a room sees everyone else's pointer move. The contract is
// docs/protocol.md ("Cursors"). The server sends what changed once a tick (100 ms); we draw the
// cursors one tick in the past, gliding between the positions of two frames, so they move
// smoothly at the screen's frame rate. Names other people chose go into the page with
// textContent, never innerHTML. The server gives each person in a room a look (a colour, and past
// the palette a pattern) and a name nobody else there has (a second Ann is "Ann (2)"): the
// `look` event tells us ours.
import { io } from "/vendor/socket.io.esm.min.js";
import { Connection, byId, element, reasonOf } from "/shared/connection.js";
import { followSignIn, withToken } from "/shared/signin.js";

const DEFAULT_ROOM = "lobby";
/** The server's tick (CURSORS_TICK_MS) until the frames' times tell us better. */
const DEFAULT_TICK_MS = 100;
/** Drawn this much later than one tick, so a frame a little late on the network stalls nothing. */
const JITTER_MS = 20;
/** A slower clock offset than the fastest frame seen decays towards the frames at this rate. */
const CLOCK_DECAY = 0.05;
/** The server allows 60 updates a second: on a 120 Hz screen we send every other frame. */
const MIN_SEND_INTERVAL_MS = 15;
/** Positions are kept to 4 decimals by the server: finer changes are not worth a message. */
const PRECISION = 1e4;
/** Samples a cursor keeps at most (a hidden tab draws nothing, but frames keep coming). */
const MAX_SAMPLES = 16;
const SNAPSHOT_TIMEOUT_MS = 5_000;
const SNAPSHOT_RETRY_MS = 1_000;
/** How long a cursor that left takes to fade out (matches .cursor.leaving in the CSS). */
const FADE_MS = 200;
/** The name rules of the server (protocol, "Connecting"): 1 to 32 characters, no controls. */
const NAME_MAX = 32;
const CONTROL_CHARACTERS = /[\p{Cc}\u2028\u2029]/u;
const NAME_ERRORS = new Set(["invalid_type", "empty", "too_long", "control_characters"]);
const NAME_KEY = "switchboard.cursors.name";
/** Colours come from the server; anything but #rrggbb is replaced, never put into the CSS. */
const COLOR_PATTERN = /^#[0-9a-f]{6}$/i;
const FALLBACK_COLOR = "#5f6773";
/** What tells apart two people of one colour (protocol, "Cursors"); cursors.css draws them. */
const PATTERNS = new Set(["solid", "ring", "outline", "striped"]);
/** The number a name is shown with when someone in the room shows it already: "Ann (2)". */
const NUMBER_SUFFIX = / \(\d+\)$/;
const SVG_NS = "http://www.w3.org/2000/svg";
const ARROW_PATH = "M5 3 L5 19 L9.5 14.8 L12.6 21.4 L15.3 20.1 L12.3 13.6 L18.5 13.4 Z";

const ui = {
  room: byId("room"),
  count: byId("count"),
  nameForm: byId("name-form"),
  nameInput: byId("name-input"),
  nameError: byId("name-error"),
  nameNote: byId("name-note"),
  ownLook: byId("own-look"),
  ownName: byId("own-name"),
  surface: byId("surface"),
  hintCard: byId("hint-card"),
  layer: byId("cursors"),
  aloneText: byId("alone-text"),
  copyLink: byId("copy-link"),
};

const params = new URLSearchParams(location.search);
const room = params.get("room") || DEFAULT_ROOM;

const page = {
  /** The display name we connect with; "" for none. */
  name: initialName(),
  /** Our socket ids, one per connection: frames can still hold an old one of ours. */
  ownIds: new Set(),
  /** Everyone else's cursor: socket id -> cursor (see createCursor). */
  cursors: new Map(),
  /** The seq of the room state we hold; null while we wait for a snapshot. */
  seq: null,
  /** The pending `snapshot` request, 0 when none: deltas wait until it is answered. */
  snapshotRequest: 0,
  snapshotRequests: 0,
  snapshotRetryTimer: 0,
  /** Server time minus performance.now(), from the frames' `t`; null until the first frame. */
  clockOffset: null,
  /** The tick, as the shortest gap between two consecutive deltas; null until seen. */
  tickMs: null,
  lastDelta: null,
  /** Our pointer, as fractions of the viewport, and what the server last got from us. */
  pointer: { x: 0, y: 0, known: false, dirty: false, sentX: NaN, sentY: NaN, sentAt: -Infinity },
  viewport: { width: innerWidth, height: innerHeight },
  frame: 0,
  /** The hint card's box on the page, for telling whether a cursor is over it; null: measure. */
  hintBox: null,
  /** Our sign-in names us: the name field is not ours to change. */
  signedIn: false,
};

const socket = io({
  path: "/api/cursors/socket.io",
  transports: ["websocket"],
  // A callback, not an object: socket.io calls it before every (re)connection, so the server
  // always gets the current name.
  auth: (cb) => cb(withToken(page.name ? { room, name: page.name } : { room })),
});

const connection = new Connection(socket);
followSignIn(socket, {
  connection,
  errorEvent: "cursor_error",
  app: "the shared cursors",
  room,
  defaultRoom: DEFAULT_ROOM,
});

start();

function start() {
  ui.room.textContent = room;
  document.title = `#${room} · Switchboard cursors`;
  ui.nameInput.value = page.name;

  document.addEventListener("pointermove", onPointer, { passive: true });
  document.addEventListener("pointerdown", onPointerDown, { passive: true });
  document.documentElement.addEventListener("pointerleave", (event) => {
    if (event.pointerType === "mouse") onPointerGone();
  });
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) onPointerGone();
  });
  window.addEventListener("resize", onResize);
  new ResizeObserver(() => {
    page.hintBox = null;
  }).observe(ui.hintCard);
  ui.nameForm.addEventListener("submit", onNameSubmit);
  ui.nameInput.addEventListener("change", commitName);
  ui.nameInput.addEventListener("input", () => {
    showNameError("");
    showNameNote("");
  });
  ui.copyLink.addEventListener("click", copyInviteLink);

  socket.on("connect", onConnect);
  socket.on("disconnect", onDisconnect);
  socket.on("connect_error", onConnectError);

  socket.on("look", onLook);
  socket.on("snapshot", onSnapshot);
  socket.on("delta", onDelta);
  socket.on("cursor_error", onCursorError);

  connection.set("connecting");
  updateCount();
}

// --- Connection ------------------------------------------------------------------------------

// socket.io hands us the events that came with the connection (our `snapshot`) before
// `connect`: nothing here may reset the room state.
function onConnect() {
  page.ownIds.add(socket.id);
  forgetCursor(socket.id);
  connection.connected();
  // Our cursor left the room with our last connection: put it back where the pointer is.
  page.pointer.sentX = page.pointer.sentY = NaN;
  if (page.pointer.known) markPointerDirty();
}

function onDisconnect(reason) {
  // What we hold is now out of date: the next connection starts with a fresh snapshot.
  page.seq = null;
  cancelSnapshotRequest();
  page.clockOffset = null;
  page.tickMs = null;
  page.lastDelta = null;
  connection.disconnected(reason);
}

function onConnectError(err) {
  // bad_room, bad_auth, or the name's are final; `unavailable` is retried.
  const refusal = connection.connectError(err);
  if (refusal && NAME_ERRORS.has(refusal.error)) showNameError(reasonOf(err));
}

/** A new name needs a new connection: the server takes it only when we connect. */
function reconnect() {
  connection.cancelRetry();
  connection.resetBackoff();
  socket.disconnect();
  socket.connect();
  connection.set(connection.retrying());
}

/**
 * How the others see us, sent as we connect: our colour and pattern, and the name shown, which
 * is the one we asked for with a number after it when someone here shows that name already. A
 * sign-in names us: then the name field shows its name and cannot be changed.
 */
function onLook(look) {
  if (!look || typeof look !== "object") return;
  const name = typeof look.name === "string" ? look.name : "";
  const asked = typeof look.asked === "string" ? look.asked : "";
  setLook({ el: ui.ownLook, nameEl: ui.ownName, color: "", pattern: "", name: null }, look);
  ui.ownLook.hidden = false;
  page.signedIn = look.signed_in === true;
  ui.nameInput.readOnly = page.signedIn;
  ui.nameForm.dataset.signedIn = String(page.signedIn);
  if (page.signedIn) {
    ui.nameInput.value = asked;
    ui.nameInput.title = "Your sign-in gives your name";
  }
  showNameNote(
    asked && name !== asked ? `Someone here is already called “${asked}”: others see you as “${name}”.` : "",
  );
}

function onCursorError(refusal) {
  // We send at most one update a frame, so rate_limited only happens on very fast screens and
  // costs one position; anything else is a bug of ours worth seeing in the console.
  if (refusal?.error !== "rate_limited") console.warn("cursors: refused", refusal);
}

// --- Room state: snapshots and deltas ----------------------------------------------------------

function onSnapshot(snapshot) {
  // Pushed by the server (on connecting, or after we read too slowly): it replaces everything,
  // including the answer to a snapshot request of ours still on its way.
  cancelSnapshotRequest();
  applySnapshot(snapshot);
}

function applySnapshot(snapshot) {
  if (!isFrame(snapshot)) return;
  observeServerTime(snapshot.t);
  const present = new Set();
  for (const [id, wire] of Object.entries(objectOr(snapshot.cursors))) {
    if (isOwn(id) || !isCursor(wire)) continue;
    present.add(id);
    upsertCursor(id, wire, snapshot.t);
  }
  for (const id of [...page.cursors.keys()]) {
    if (!present.has(id)) removeCursor(id);
  }
  page.seq = snapshot.seq;
  page.lastDelta = null;
  updateCount();
  wake();
}

function onDelta(delta) {
  if (!isFrame(delta)) return;
  if (page.seq === null || page.snapshotRequest) return; // a snapshot is on its way
  if (delta.seq <= page.seq) return; // already part of the state we hold
  if (delta.seq !== page.seq + 1) {
    requestSnapshot(); // we missed frames: deltas cannot be applied to what we hold
    return;
  }
  page.seq = delta.seq;
  observeServerTime(delta.t);
  observeTick(delta);

  for (const [id, wire] of Object.entries(objectOr(delta.joined))) {
    if (!isOwn(id) && isCursor(wire)) upsertCursor(id, wire, delta.t);
  }
  let lost = false;
  for (const [id, position] of Object.entries(objectOr(delta.moved))) {
    if (isOwn(id) || !Array.isArray(position)) continue;
    const cursor = page.cursors.get(id);
    const [x, y] = position;
    if (!cursor) lost = true;
    else if (isPosition(x, y)) place(cursor, x, y, delta.t);
  }
  for (const id of Array.isArray(delta.left) ? delta.left : []) removeCursor(id);
  updateCount();
  wake();
  // A move of a cursor we never saw: our state and the server's differ. Start again from theirs.
  if (lost) requestSnapshot();
}

function requestSnapshot() {
  if (page.snapshotRequest || !socket.connected) return;
  const request = ++page.snapshotRequests;
  page.snapshotRequest = request;
  socket.timeout(SNAPSHOT_TIMEOUT_MS).emit("snapshot", (err, reply) => {
    if (page.snapshotRequest !== request) return; // superseded: a pushed snapshot, a reconnect
    page.snapshotRequest = 0;
    if (!err && reply?.ok) {
      applySnapshot(reply);
    } else {
      // Deltas stay ignored (they would apply to the wrong state) until a snapshot comes.
      page.seq = null;
      page.snapshotRetryTimer = setTimeout(requestSnapshot, SNAPSHOT_RETRY_MS);
    }
  });
}

function cancelSnapshotRequest() {
  page.snapshotRequest = 0;
  clearTimeout(page.snapshotRetryTimer);
}

function isOwn(id) {
  return id === socket.id || page.ownIds.has(id);
}

// --- Cursors -------------------------------------------------------------------------------------

function upsertCursor(id, wire, t) {
  const existing = page.cursors.get(id);
  if (existing) {
    setLook(existing, wire);
    place(existing, wire.x, wire.y, t);
    return existing;
  }
  const cursor = createCursor(id);
  setLook(cursor, wire);
  page.cursors.set(id, cursor);
  ui.layer.append(cursor.el);
  place(cursor, wire.x, wire.y, t);
  return cursor;
}

/**
 * Moves a cursor, or hides it: null and null mean its owner is here but their pointer is not
 * on the page (it left the window, or they have not moved yet). A cursor that shows again
 * appears where it is, rather than gliding from where it was hidden.
 */
function place(cursor, x, y, t) {
  if (x === null) {
    cursor.samples.length = 0;
    cursor.el.hidden = true;
    coverHint();
    return;
  }
  if (cursor.el.hidden || !cursor.samples.length) {
    cursor.samples.length = 0;
    cursor.samples.push({ x, y, t });
    cursor.el.hidden = false;
    drawCursor(cursor, x, y, true);
    return;
  }
  addSample(cursor, x, y, t);
}

function createCursor(id) {
  const el = element("div", "cursor");
  el.dataset.id = id;
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("class", "arrow");
  svg.setAttribute("viewBox", "0 0 24 24");
  const path = document.createElementNS(SVG_NS, "path");
  path.setAttribute("d", ARROW_PATH);
  svg.append(path);
  const nameEl = element("span", "name label");
  el.append(svg, nameEl);
  return {
    id,
    el,
    nameEl,
    color: "",
    pattern: "",
    name: null,
    samples: [],
    drawnX: NaN,
    drawnY: NaN,
    /** The name label's size, measured once it shows; null: not yet. */
    label: null,
  };
}

/** A cursor's (or our own chip's) colour, pattern and name, as the server gave them. */
function setLook(cursor, { color, pattern, name }) {
  const safeColor = COLOR_PATTERN.test(color) ? color : FALLBACK_COLOR;
  if (safeColor !== cursor.color) {
    cursor.color = safeColor;
    const ink = inkFor(safeColor);
    cursor.el.dataset.color = safeColor;
    cursor.el.style.setProperty("--cursor-color", safeColor);
    cursor.el.style.setProperty("--cursor-ink", ink);
    // The stripes of the striped pattern: the colour, darker under white text, lighter under
    // dark text, so that the text stays as readable as on the plain colour.
    cursor.el.style.setProperty("--cursor-shade", ink === "#ffffff" ? "#000000" : "#ffffff");
  }
  const safePattern = PATTERNS.has(pattern) ? pattern : "solid";
  if (safePattern !== cursor.pattern) {
    cursor.pattern = safePattern;
    cursor.el.dataset.pattern = safePattern;
  }
  const shown = typeof name === "string" ? name : "";
  if (shown !== cursor.name) {
    cursor.name = shown;
    showName(cursor.nameEl, shown);
    cursor.label = null;
  }
}

/**
 * A name into its label: a long one is cut with an ellipsis, but never its number, which is
 * what tells it from the other person of that name ("Alexandra Pet… (2)").
 */
function showName(nameEl, name) {
  const number = name.match(NUMBER_SUFFIX);
  const base = number ? name.slice(0, number.index) : name;
  const text = element("span", "name-text", base || "Anonymous");
  nameEl.replaceChildren(text);
  if (number) nameEl.append(element("span", "name-number", number[0]));
  nameEl.classList.toggle("anonymous", !name);
}

/** Fades the cursor out; it no longer counts at once. */
function removeCursor(id) {
  const cursor = page.cursors.get(id);
  if (!cursor) return;
  page.cursors.delete(id);
  cursor.el.classList.add("leaving");
  setTimeout(() => cursor.el.remove(), FADE_MS);
  coverHint();
}

/** Gone at once, no fade: an id of ours that a frame still held. */
function forgetCursor(id) {
  const cursor = page.cursors.get(id);
  if (!cursor) return;
  page.cursors.delete(id);
  cursor.el.remove();
  updateCount();
}

function updateCount() {
  const others = page.cursors.size;
  const people = others + 1; // and you
  ui.count.textContent = String(people);
  ui.count.parentElement.title = people === 1 ? "Only you" : `You and ${others} more`;
  ui.aloneText.textContent =
    others === 0
      ? "Nobody else is here yet. Share this page to invite someone."
      : `${others === 1 ? "1 other person is" : `${others} other people are`} here with you.`;
}

// --- Interpolation -------------------------------------------------------------------------------

/**
 * A position of a cursor at server time `t`. The server's `moved` is where the pointer was at
 * the tick: it got there during the tick before. A cursor that stood still for a while was,
 * one tick before this frame, still where we last saw it: that sample is added first, so it
 * glides over one tick instead of crossing the screen for as long as it stood still.
 */
function addSample(cursor, x, y, t) {
  const samples = cursor.samples;
  const last = samples.at(-1);
  if (!last || t <= last.t) {
    // Out of order (another server's clock, after a reconnect): start again from here.
    samples.length = 0;
  } else {
    const before = t - tick();
    if (last.t < before) samples.push({ x: last.x, y: last.y, t: before });
  }
  samples.push({ x, y, t });
  trimSamples(samples, renderTime());
}

/** Samples older than the one just before `time` are not needed any more. */
function trimSamples(samples, time) {
  while (samples.length > 1 && (samples[1].t <= time || samples.length > MAX_SAMPLES)) {
    samples.shift();
  }
}

/** Where a cursor is at `time`: between the samples around it, never past the newest. */
function positionAt(samples, time) {
  const first = samples[0];
  if (time <= first.t) return first;
  for (let i = 1; i < samples.length; i += 1) {
    const b = samples[i];
    if (time < b.t) {
      const a = samples[i - 1];
      const f = (time - a.t) / (b.t - a.t); // in [0, 1): no overshoot
      return { x: a.x + (b.x - a.x) * f, y: a.y + (b.y - a.y) * f };
    }
  }
  return samples.at(-1); // nothing newer yet: hold
}

/**
 * The server's clock, seen from ours: the frame that came fastest gives the offset (server
 * time = performance.now() + offset), and slower ones pull it back a little, so a change of
 * network delay is followed without one slow frame shaking every cursor.
 */
function observeServerTime(t) {
  const offset = t - performance.now();
  if (page.clockOffset === null || offset > page.clockOffset) page.clockOffset = offset;
  else page.clockOffset += (offset - page.clockOffset) * CLOCK_DECAY;
}

/** Frames only come when something moved: the shortest gap between two in a row is a tick. */
function observeTick(delta) {
  const last = page.lastDelta;
  if (last && delta.seq === last.seq + 1 && delta.t > last.t) {
    const gap = delta.t - last.t;
    page.tickMs = page.tickMs === null ? gap : Math.min(page.tickMs, gap);
  }
  page.lastDelta = { seq: delta.seq, t: delta.t };
}

function tick() {
  return page.tickMs ?? DEFAULT_TICK_MS;
}

/** The server time we draw: one tick (and a little) behind the newest frame. */
function renderTime() {
  if (page.clockOffset === null) return Infinity; // no frame yet: show the newest positions
  return performance.now() + page.clockOffset - tick() - JITTER_MS;
}

// --- Drawing -----------------------------------------------------------------------------------------

function wake() {
  if (!page.frame) page.frame = requestAnimationFrame(onFrame);
}

function onFrame(now) {
  page.frame = 0;
  const sending = sendPointer(now);
  const moving = drawCursors();
  if (sending || moving) wake(); // else sleep until a frame or the pointer wakes us
}

/** Draws every cursor at the render time; true while some of them still have a way to go. */
function drawCursors(force = false) {
  const time = renderTime();
  let moving = false;
  for (const cursor of page.cursors.values()) {
    if (!cursor.samples.length) continue; // hidden
    trimSamples(cursor.samples, time);
    const { x, y } = positionAt(cursor.samples, time);
    drawCursor(cursor, x, y, force);
    if (cursor.samples.at(-1).t > time) moving = true;
  }
  coverHint();
  return moving;
}

/**
 * The hint card fades out while someone's cursor (its arrow or its name) is over it, and comes
 * back when they move on: neither the card's text nor their name is drawn over the other.
 */
function coverHint() {
  if (ui.hintCard.hidden) return;
  const box = page.hintBox ?? (page.hintBox = ui.hintCard.getBoundingClientRect());
  let covered = false;
  for (const cursor of page.cursors.values()) {
    if (cursor.el.hidden || !cursor.samples.length || Number.isNaN(cursor.drawnX)) continue;
    if (cursorBoxes(cursor).some((part) => overlaps(part, box))) {
      covered = true;
      break;
    }
  }
  if (covered !== (ui.hintCard.dataset.covered === "true")) {
    ui.hintCard.dataset.covered = String(covered);
  }
}

/** Where a drawn cursor is on the page: its arrow's box and its name's (see cursors.css). */
function cursorBoxes(cursor) {
  const x = cursor.drawnX;
  const y = cursor.drawnY;
  if (!cursor.label) {
    const width = cursor.nameEl.offsetWidth;
    if (width) cursor.label = { width, height: cursor.nameEl.offsetHeight };
  }
  const { width, height } = cursor.label ?? { width: 0, height: 0 };
  const flipX = cursor.el.classList.contains("flip-x");
  const flipY = cursor.el.classList.contains("flip-y");
  const left = flipX ? x - 4 - width : x + 12;
  const top = flipY ? y - 6 - height : y + 19;
  return [
    { left: x - 12, top: y - 12, right: x + 20, bottom: y + 22 }, // the arrow, and a ring
    { left, top, right: left + width, bottom: top + height },
  ];
}

function overlaps(a, b) {
  return a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
}

function drawCursor(cursor, x, y, force = false) {
  const px = Math.round(x * page.viewport.width * 10) / 10;
  const py = Math.round(y * page.viewport.height * 10) / 10;
  if (!force && px === cursor.drawnX && py === cursor.drawnY) return;
  cursor.drawnX = px;
  cursor.drawnY = py;
  cursor.el.style.transform = `translate3d(${px}px, ${py}px, 0)`;
  // Near the right or bottom edge the name goes on the other side, so it stays on screen.
  cursor.el.classList.toggle("flip-x", x > 0.8);
  cursor.el.classList.toggle("flip-y", y > 0.9);
}

function onResize() {
  page.viewport = { width: innerWidth, height: innerHeight };
  page.hintBox = null;
  drawCursors(true);
}

// --- Our pointer -------------------------------------------------------------------------------------

function onPointer(event) {
  if (!event.isPrimary) return; // a second finger does not move our cursor
  const x = fraction(event.clientX / innerWidth);
  const y = fraction(event.clientY / innerHeight);
  if (page.pointer.known && x === page.pointer.x && y === page.pointer.y) return;
  page.pointer.x = x;
  page.pointer.y = y;
  page.pointer.known = true;
  markPointerDirty();
}

/** A tap moves our cursor too; on touch screens it also leaves a ripple, since no pointer shows. */
function onPointerDown(event) {
  onPointer(event);
  if (event.pointerType !== "mouse" && event.isPrimary && event.target.closest("#surface")) {
    showTap(event.clientX, event.clientY);
  }
}

/** The mouse left the window, or the page was hidden: others stop seeing our cursor. */
function onPointerGone() {
  const pointer = page.pointer;
  if (!pointer.known || pointer.x === null) return;
  pointer.x = null;
  pointer.y = null;
  // At once, not on the next animation frame: a hidden page gets none.
  if (socket.connected) {
    socket.emit("update", null);
    pointer.sentX = pointer.sentY = null;
    pointer.dirty = false;
  } else {
    markPointerDirty();
  }
}

function markPointerDirty() {
  const { x, y, sentX, sentY } = page.pointer;
  page.pointer.dirty = x !== sentX || y !== sentY;
  if (page.pointer.dirty) wake();
}

/** Sends the newest position, once a frame at most; true while one still waits to go out. */
function sendPointer(now) {
  const pointer = page.pointer;
  if (!pointer.dirty || !socket.connected) return false; // nothing new, or sent on connecting
  if (now - pointer.sentAt < MIN_SEND_INTERVAL_MS) return true;
  socket.emit("update", pointer.x === null ? null : { x: pointer.x, y: pointer.y });
  pointer.sentX = pointer.x;
  pointer.sentY = pointer.y;
  pointer.sentAt = now;
  pointer.dirty = false;
  return false;
}

function showTap(clientX, clientY) {
  const tap = element("span", "tap");
  tap.style.translate = `${clientX}px ${clientY}px`; // the animation scales it
  tap.addEventListener("animationend", () => tap.remove(), { once: true });
  ui.surface.append(tap);
  setTimeout(() => tap.remove(), 1_000); // in case animations are off
}

// --- Name ------------------------------------------------------------------------------------------

function initialName() {
  const fromUrl = params.get("name");
  if (fromUrl !== null) return fromUrl.normalize("NFC").trim();
  try {
    return localStorage.getItem(NAME_KEY) ?? "";
  } catch {
    return ""; // storage blocked: no remembered name
  }
}

function onNameSubmit(event) {
  event.preventDefault();
  commitName();
  ui.nameInput.blur();
}

/** A changed name reconnects: the others see our cursor leave and come back with it. */
function commitName() {
  if (page.signedIn) return; // the sign-in names us
  const name = ui.nameInput.value.normalize("NFC").trim();
  const problem = nameProblem(name);
  if (problem) {
    showNameError(problem);
    return;
  }
  showNameError("");
  ui.nameInput.value = name;
  if (name === page.name && connection.state !== "disconnected") return;
  page.name = name;
  try {
    if (name) localStorage.setItem(NAME_KEY, name);
    else localStorage.removeItem(NAME_KEY);
  } catch {
    // Storage blocked: the name holds for this page only.
  }
  reconnect();
}

/** The server's rules, checked first so a typo does not cost the connection. */
function nameProblem(name) {
  if ([...name].length > NAME_MAX) return `A name has at most ${NAME_MAX} characters.`;
  if (CONTROL_CHARACTERS.test(name)) return "A name cannot contain control characters.";
  return "";
}

function showNameError(message) {
  ui.nameError.textContent = message;
  if (message) ui.nameInput.setAttribute("aria-invalid", "true");
  else ui.nameInput.removeAttribute("aria-invalid");
}

/** Not an error: how the room shows our name, when it is not quite the name we asked for. */
function showNameNote(message) {
  ui.nameNote.textContent = message;
}

// --- Invite ------------------------------------------------------------------------------------------

async function copyInviteLink() {
  const url = new URL(location.pathname, location.origin);
  url.searchParams.set("room", room);
  try {
    await navigator.clipboard.writeText(url.href);
    flashButton("Link copied");
  } catch {
    flashButton("Copy failed");
  }
}

function flashButton(text) {
  ui.copyLink.textContent = text;
  setTimeout(() => {
    ui.copyLink.textContent = "Copy link";
  }, 2_000);
}

// --- Helpers -------------------------------------------------------------------------------------------

/** Clamped to [0, 1] and rounded as the server keeps it, so equal positions compare equal. */
function fraction(value) {
  if (!Number.isFinite(value)) return 0;
  return Math.round(Math.min(1, Math.max(0, value)) * PRECISION) / PRECISION;
}

function isFraction(value) {
  return typeof value === "number" && Number.isFinite(value);
}

function isFrame(frame) {
  return (
    frame !== null &&
    typeof frame === "object" &&
    Number.isInteger(frame.seq) &&
    typeof frame.t === "number" &&
    Number.isFinite(frame.t)
  );
}

function isCursor(wire) {
  return wire !== null && typeof wire === "object" && isPosition(wire.x, wire.y);
}

/** A place on the page, or null and null for a cursor that is hidden. */
function isPosition(x, y) {
  return (isFraction(x) && isFraction(y)) || (x === null && y === null);
}

function objectOr(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value) ? value : {};
}

/** Dark text on light colours, white on dark ones: the better contrast (WCAG luminance). */
function inkFor(hex) {
  const [r, g, b] = [1, 3, 5].map((i) => {
    const c = parseInt(hex.slice(i, i + 2), 16) / 255;
    return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  });
  const luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b;
  // 0.19: where white and #111418 have the same contrast with the colour; past it, dark wins.
  return luminance > 0.19 ? "#111418" : "#ffffff";
}
