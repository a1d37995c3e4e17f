// The phone's controller: a touch pad, two buttons and the phone's orientation, sent to the
// desktop this phone paired with. docs/protocol.md ("Remote control") is the contract.
//
// Pairing: the QR code's link carries a single-use secret in its fragment (#pair=...); without
// one, the person types the desktop's 8-letter code. The server then gives a session secret,
// kept in sessionStorage (this tab only), that every later connection uses to resume: socket.io's
// own reconnections, a reload, the phone waking up.
import { io } from "/vendor/socket.io.esm.min.js";
import { Connection, byId, refusalOf } from "/shared/connection.js";
import { NAMESPACE, SOCKET_PATH, tabStore } from "/remote/shared.js";

/** Our pairing's session, to resume it after a drop or a reload. */
const stored = tabStore("switchboard.remote.session");
/** The protocol's code alphabet (no vowels, no look-alikes) and length. */
const CODE_PATTERN = /^[BCDFGHJKLMNPQRSTVWXZ]{8}$/;
/** After this long without a real reading, we say the device has no motion sensor. */
const MOTION_PROBE_MS = 1_500;
/** How long a press waits for the server's ack (which waits for the screen's), and how many
 * times a press the screen did not confirm is sent. */
const PRESS_ACK_MS = 10_000;
const PRESS_TRIES = 3;

/** The header's one status: the pairing, unless the connection is what matters now. */
const PAIRING_TEXT = {
  paired: "Paired",
  away: "Screen away",
  unpaired: "Not paired",
  failed: "Pairing failed",
};

const UNPAIRED_TEXT = {
  desktop_unpaired: "The screen unpaired this phone. To pair again, scan its new code or type it below.",
  desktop_left: "The screen was closed or lost its connection. To pair again, scan its new code or type it below.",
  replaced: "Another tab or phone took over this pairing.",
};

const ui = {
  pairingState: byId("pairing-state"),
  pairingText: byId("pairing-text"),
  error: byId("error"),
  pairScreen: byId("pair-screen"),
  controlScreen: byId("control-screen"),
  codeForm: byId("code-form"),
  codeInput: byId("code-input"),
  codeSubmit: byId("code-submit"),
  pad: byId("pad"),
  padDot: byId("pad-dot"),
  padOverlayText: byId("pad-overlay-text"),
  buttons: [byId("button-a"), byId("button-b")],
  motion: byId("motion"),
  motionText: byId("motion-text"),
  fullscreen: byId("fullscreen"),
  fullscreenText: byId("fullscreen-text"),
};

const ctl = {
  /** The link's pairing secret (#pair=), until it is used (or refused). */
  pair: null,
  /** The typed code, until it is used (or refused). */
  code: null,
  /** The secret to resume our pairing with. */
  session: stored.load(),
  /** connecting | paired | away (the screen lost its connection) | unpaired | failed */
  pairing: "unpaired",
  /** Paired at least once since the page was opened. */
  everPaired: false,
  /** An old link was refused while this tab still had a pairing to resume. */
  linkRefused: false,
  /** The server ended our pairing (`unpaired`): do not reconnect by ourselves. */
  ended: false,
};

/** What waits for the next animation frame: at most one move and one orientation per frame. */
const outbox = { move: null, orientation: null, frame: 0 };
/** Each button's latest state sent: only that one is sent again. */
const latestPress = new Map();
/** The pointer steering on the pad (touch or pen; a mouse steers by hovering too). */
const pad = { pointer: null, rect: null };
/** Buttons held down: name -> the pointer id holding it ("key" for the keyboard). */
const held = new Map();
const motion = { on: false, probe: 0, seen: false };
let wakeLock = null;

const socket = io(NAMESPACE, {
  path: SOCKET_PATH,
  transports: ["websocket"],
  autoConnect: false,
  // A callback, not an object: socket.io calls it before every (re)connection, so each one
  // uses what we hold now (the session, once paired), never a link that was used up.
  auth: (cb) => cb(currentAuth()),
});

/** #status (hidden: #pairing-state says it); a retry needs something to pair or resume with. */
const connection = new Connection(socket, { canRetry: currentAuthUsable, onChange: showStatus });

start();

function start() {
  socket.on("connect", onConnect);
  socket.on("disconnect", onDisconnect);
  socket.on("connect_error", onConnectError);
  socket.on("paired", onPaired);
  socket.on("unpaired", onUnpaired);
  socket.on("desktop_left", onDesktopLeft);
  socket.on("desktop_back", onDesktopBack);
  socket.on("remote_error", onRemoteError);

  ui.codeForm.addEventListener("submit", onCodeSubmit);
  ui.codeInput.addEventListener("input", () => {
    ui.codeInput.removeAttribute("aria-invalid");
  });
  setUpPad();
  setUpButtons();
  setUpMotion();
  setUpFullscreen();

  document.addEventListener("visibilitychange", onVisibilityChange);
  window.addEventListener("pagehide", () => releaseAll());
  window.addEventListener("pageshow", (event) => {
    if (event.persisted) resumeIfNeeded();
  });
  window.addEventListener("hashchange", () => {
    if (takePairFromUrl()) pairAgain();
  });

  takePairFromUrl();
  connection.set("idle");
  if (ctl.pair || ctl.session) connect();
  else setPairing("unpaired");
}

/** Reads #pair=... and removes it from the address bar, so it is neither reused nor shared.
 * Anything else in the fragment (such as a sign-in #token=) is left for whoever reads it. */
function takePairFromUrl() {
  const params = new URLSearchParams(location.hash.slice(1));
  if (!params.has("pair")) return false;
  const pair = params.get("pair");
  params.delete("pair");
  const rest = params.toString();
  history.replaceState(
    history.state,
    "",
    location.pathname + location.search + (rest ? `#${rest}` : ""),
  );
  if (!pair) return false;
  ctl.pair = pair;
  return true;
}

function currentAuth() {
  if (ctl.pair) return { role: "controller", pair: ctl.pair };
  if (ctl.code) return { role: "controller", code: ctl.code };
  if (ctl.session) return { role: "controller", session: ctl.session };
  return { role: "controller" };
}

// --- Connection ------------------------------------------------------------------------------

function connect() {
  connection.cancelRetry();
  ctl.ended = false;
  setPairing("connecting");
  connection.set(connection.retrying());
  socket.connect();
}

/** A new link or code while this page may still be connected: start over with it. */
function pairAgain() {
  releaseAll();
  showMessage("");
  if (socket.connected || socket.active) socket.disconnect();
  connect();
}

function onConnect() {
  connection.connected();
  // `paired` comes with the connection (socket.io may deliver it just before this event).
}

function onDisconnect(reason) {
  releaseAll({ send: false });
  if (ctl.ended) {
    connection.set("idle");
    return;
  }
  if (socket.active) {
    // A network loss: socket.io reconnects by itself, with the session.
    connection.set("reconnecting");
    if (ctl.session) setPairing("connecting");
  } else if (reason === "io server disconnect" && ctl.session) {
    // The server closed us without ending our pairing (a restart, a deploy): resume.
    connection.set("reconnecting");
    setPairing("connecting");
    connection.retryLater();
  } else {
    connection.set("idle");
    if (ctl.pairing === "paired" || ctl.pairing === "connecting") setPairing("unpaired");
  }
}

function onConnectError(err) {
  if (socket.active) {
    // A network or transport failure: socket.io retries by itself.
    connection.set(connection.retrying());
    return;
  }
  // The server refused us: socket.io gives up, and err.data says why.
  const refusal = refusalOf(err);
  switch (refusal.error) {
    case "bad_pair":
      ctl.pair = null;
      if (ctl.session) {
        // An old link, but this tab is still paired: carry on with that pairing.
        ctl.linkRefused = true;
        connect();
      } else {
        fail("This link was used or has expired: scan the code again, or type the code shown on the screen.");
      }
      break;
    case "bad_code":
      ctl.code = null;
      fail("That code is wrong or has expired. Check the code on the screen and try again.");
      invalidCode();
      break;
    case "too_many_attempts":
      ctl.code = null;
      fail(refusal.message || "Too many wrong codes: wait a minute, then try again.");
      invalidCode();
      break;
    case "bad_session":
      forgetSession();
      if (ctl.linkRefused) {
        ctl.linkRefused = false;
        fail("This link was used or has expired: scan the code again, or type the code shown on the screen.");
        break;
      }
      fail("This pairing has ended: scan the code on the screen again, or type it below.");
      break;
    case "unavailable":
    case undefined:
      // Transient (the server's storage, or no refusal at all): try again later.
      connection.set("disconnected", refusal.message || err.message || "");
      connection.retryLater();
      break;
    default:
      ctl.pair = ctl.code = null;
      fail(refusal.message || "The server refused this controller.");
  }
}

function currentAuthUsable() {
  return Boolean(ctl.pair || ctl.code || ctl.session);
}

/** The phone woke up or the tab came back: if we gave up meanwhile, resume now. */
function resumeIfNeeded() {
  if (socket.connected || socket.active || ctl.ended) return;
  if (ctl.pairing === "failed" || !currentAuthUsable()) return;
  connect();
}

function onVisibilityChange() {
  if (document.visibilityState === "hidden") {
    // Nobody holds a button on a hidden page: let go, so the desktop does not see it stuck.
    releaseAll();
  } else {
    resumeIfNeeded();
    keepAwake();
  }
}

// --- Pairing ---------------------------------------------------------------------------------

function onPaired(event) {
  if (!event || typeof event.session !== "string") return;
  ctl.session = event.session;
  saveSession(event.session);
  ctl.pair = ctl.code = null;
  ctl.ended = false;
  ctl.everPaired = true;
  ui.codeInput.value = "";
  ui.codeInput.removeAttribute("aria-invalid");
  showMessage(
    ctl.linkRefused ? "That link was already used; you are still paired with your screen." : "",
    "info",
  );
  ctl.linkRefused = false;
  setPairing("paired");
  keepAwake();
}


/** The screen lost its connection (or its server): it may come back within `grace` seconds. */
function onDesktopLeft(event) {
  releaseAll({ send: false });
  setPairing("away");
  const grace = Math.round(Number(event && event.grace));
  const within = Number.isFinite(grace) && grace > 0 ? ` within ${grace} s` : "";
  showMessage(`The screen lost its connection. Waiting for it to come back${within}…`, "info");
}

function onDesktopBack() {
  setPairing("paired");
  showMessage("");
}

function onUnpaired(event) {
  // The server disconnects us right after this; socket.io will not reconnect by itself.
  ctl.ended = true;
  forgetSession();
  releaseAll({ send: false });
  setPairing("unpaired");
  const reason = event && event.reason;
  showMessage(UNPAIRED_TEXT[reason] || "The pairing has ended.", "info");
  releaseWakeLock();
}

function fail(text) {
  setPairing("failed");
  connection.set("idle");
  showMessage(text);
}

function onRemoteError(refusal) {
  if (!refusal) return;
  if (refusal.error === "not_delivered") return; // sendPress sends it again
  if (refusal.error === "desktop_away") {
    // Sent before we heard the screen was away: say so once.
    if (ctl.pairing === "paired") onDesktopLeft({});
    return;
  }
  // A refused move or press: worth a word, but it changes nothing else.
  showMessage(refusal.message || "The server refused a request.");
}

function onCodeSubmit(event) {
  event.preventDefault();
  const code = ui.codeInput.value.toUpperCase().replace(/[\s-]+/g, "");
  if (!CODE_PATTERN.test(code)) {
    invalidCode();
    showMessage(
      code.length !== 8
        ? "The code has 8 letters, like BCDF GHJK."
        : "Codes have no vowels and no Y: check the letters on the screen.",
    );
    return;
  }
  ctl.code = code;
  ctl.pair = null;
  showMessage("");
  pairAgain();
}

function invalidCode() {
  ui.codeInput.setAttribute("aria-invalid", "true");
  if (!ui.pairScreen.hidden) ui.codeInput.focus();
}


function setPairing(state) {
  ctl.pairing = state;
  ui.pairingState.dataset.state = state;
  document.body.dataset.pairing = state;
  showStatus();

  // The pad while paired (its screen there or away), or while resuming a pairing; the code
  // form otherwise.
  const control = state === "paired" || state === "away" || (state === "connecting" && !ctl.code);
  ui.controlScreen.hidden = !control;
  ui.pairScreen.hidden = control;
  document.body.dataset.screen = control ? "control" : "pair";
  ui.codeSubmit.disabled = state === "connecting";
  ui.codeSubmit.textContent = state === "connecting" ? "Pairing…" : "Pair";
  for (const button of ui.buttons) button.setAttribute("aria-disabled", String(state !== "paired"));
}

/**
 * The header's one status (#pairing-state), also over the pad: where the pairing is, and, while
 * the server cannot be reached, that. The connection's own words (#status) stay out of sight.
 */
function showStatus() {
  const state = ctl.pairing;
  let text = PAIRING_TEXT[state];
  if (state === "connecting") {
    if (connection.state === "disconnected") text = "Server unreachable, retrying…";
    else if (ctl.pair || ctl.code) text = "Pairing…";
    else text = ctl.everPaired ? "Reconnecting…" : "Resuming…";
  }
  ui.pairingState.dataset.connection = connection.state;
  ui.pairingText.textContent = text;
  ui.padOverlayText.textContent = text;
}

/** #error: a refusal (kind "error") or a plain notice such as why the pairing ended ("info"). */
function showMessage(text, kind = "error") {
  ui.error.textContent = text;
  ui.error.dataset.kind = kind;
  ui.error.hidden = !text;
}

function saveSession(session) {
  stored.save(session);
}

function forgetSession() {
  ctl.session = null;
  stored.forget();
}

// --- Sending -----------------------------------------------------------------------------------

function canSend() {
  return socket.connected && ctl.pairing === "paired";
}

/** Moves and orientation: the latest one goes at the next animation frame. */
function queue(kind, payload) {
  outbox[kind] = payload;
  if (!outbox.frame) outbox.frame = requestAnimationFrame(flush);
}

function flush() {
  outbox.frame = 0;
  sendMove();
  if (outbox.orientation) {
    if (canSend()) socket.emit("orientation", outbox.orientation);
    outbox.orientation = null;
  }
}

function sendMove() {
  if (!outbox.move) return;
  if (canSend()) socket.emit("update", outbox.move);
  outbox.move = null;
}

function sendPress(button, down, tries = PRESS_TRIES) {
  // The move waiting for its frame goes first, so the desktop sees them in order.
  sendMove();
  if (!canSend()) return;
  latestPress.set(button, down);
  socket.timeout(PRESS_ACK_MS).emit("press", { button, down }, (err, answer) => {
    if (answer?.ok) return;
    // Not confirmed by the screen (it was moving between servers): again, unless a newer
    // state of this button went meanwhile.
    const again = err || answer?.error === "not_delivered";
    if (again && tries > 1 && latestPress.get(button) === down) sendPress(button, down, tries - 1);
  });
}

// --- The pad -----------------------------------------------------------------------------------

function setUpPad() {
  const el = ui.pad;
  el.addEventListener("pointerdown", (event) => {
    if (pad.pointer !== null && pad.pointer !== event.pointerId) return; // one finger steers
    if (event.pointerType === "mouse" && event.button !== 0) return;
    event.preventDefault();
    pad.pointer = event.pointerId;
    pad.rect = el.getBoundingClientRect();
    try {
      el.setPointerCapture(event.pointerId);
    } catch {
      // the pointer is already gone
    }
    el.dataset.active = "true";
    move(event);
  });
  el.addEventListener("pointermove", (event) => {
    // A mouse steers by hovering too; a finger or pen only while it touches.
    const steering =
      pad.pointer === event.pointerId || (pad.pointer === null && event.pointerType === "mouse");
    if (!steering) return;
    if (pad.pointer === null) pad.rect = el.getBoundingClientRect();
    // The freshest position is enough: at most one goes per frame anyway.
    move(event);
  });
  const end = (event) => {
    if (event.pointerId !== pad.pointer) return;
    pad.pointer = null;
    delete el.dataset.active;
  };
  el.addEventListener("pointerup", end);
  el.addEventListener("pointercancel", end);
  el.addEventListener("lostpointercapture", end);
  el.addEventListener("pointerleave", (event) => {
    if (event.pointerType === "mouse" && pad.pointer === null) delete el.dataset.active;
  });
  el.addEventListener("contextmenu", (event) => event.preventDefault());
  new ResizeObserver(() => {
    pad.rect = null;
  }).observe(el);
}

function move(event) {
  const rect = pad.rect || (pad.rect = ui.pad.getBoundingClientRect());
  if (!rect.width || !rect.height) return;
  const x = clamp((event.clientX - rect.left) / rect.width);
  const y = clamp((event.clientY - rect.top) / rect.height);
  ui.pad.dataset.active = "true";
  ui.pad.dataset.seen = "true";
  ui.padDot.style.transform = `translate3d(${(x * rect.width).toFixed(1)}px, ${(y * rect.height).toFixed(1)}px, 0)`;
  queue("move", { x: round(x, 4), y: round(y, 4) });
}

// --- The buttons -------------------------------------------------------------------------------

function setUpButtons() {
  for (const button of ui.buttons) {
    const name = button.dataset.button;
    button.addEventListener("pointerdown", (event) => {
      if (event.pointerType === "mouse" && event.button !== 0) return;
      event.preventDefault(); // no focus ring flash, no text selection, no emulated mouse
      try {
        button.setPointerCapture(event.pointerId); // the release counts even off the button
      } catch {
        // the pointer is already gone
      }
      press(name, event.pointerId);
    });
    const up = (event) => {
      if (held.get(name) === event.pointerId) release(name);
    };
    button.addEventListener("pointerup", up);
    button.addEventListener("pointercancel", up);
    button.addEventListener("lostpointercapture", up);
    button.addEventListener("contextmenu", (event) => event.preventDefault());
    // Keyboards (and switch access): Space or Enter holds the button.
    button.addEventListener("keydown", (event) => {
      if ((event.key === " " || event.key === "Enter") && !event.repeat) {
        event.preventDefault();
        press(name, "key");
      }
    });
    button.addEventListener("keyup", (event) => {
      if ((event.key === " " || event.key === "Enter") && held.get(name) === "key") release(name);
    });
    button.addEventListener("blur", () => {
      if (held.get(name) === "key") release(name);
    });
  }
}

function press(name, holder) {
  if (held.has(name) || ctl.pairing !== "paired") return;
  held.set(name, holder);
  buttonOf(name).dataset.down = "true";
  if (navigator.vibrate) navigator.vibrate(8);
  sendPress(name, true);
}

function release(name, { send = true } = {}) {
  if (!held.has(name)) return;
  held.delete(name);
  delete buttonOf(name).dataset.down;
  if (send) sendPress(name, false);
}

function releaseAll(options) {
  for (const name of [...held.keys()]) release(name, options);
}

function buttonOf(name) {
  return ui.buttons.find((button) => button.dataset.button === name);
}

// --- Motion ------------------------------------------------------------------------------------

function setUpMotion() {
  if (typeof window.DeviceOrientationEvent === "undefined") {
    ui.motion.hidden = true;
    return;
  }
  ui.motion.addEventListener("click", toggleMotion);
}

async function toggleMotion() {
  if (motion.on) {
    stopMotion();
    return;
  }
  const Orientation = window.DeviceOrientationEvent;
  if (typeof Orientation.requestPermission === "function") {
    // iOS asks the person, and only from a tap: this click.
    try {
      const answer = await Orientation.requestPermission();
      if (answer !== "granted") {
        showMessage("Motion access was refused. You can allow it in the browser's settings for this site.");
        return;
      }
    } catch {
      showMessage("Motion access could not be requested on this device.");
      return;
    }
  }
  motion.on = true;
  motion.seen = false;
  window.addEventListener("deviceorientation", onDeviceOrientation);
  showMotion();
  clearTimeout(motion.probe);
  motion.probe = setTimeout(() => {
    if (motion.on && !motion.seen) {
      stopMotion();
      showMessage("This device does not report its orientation.", "info");
    }
  }, MOTION_PROBE_MS);
}

function stopMotion() {
  motion.on = false;
  clearTimeout(motion.probe);
  window.removeEventListener("deviceorientation", onDeviceOrientation);
  showMotion();
}

function showMotion() {
  ui.motion.setAttribute("aria-pressed", String(motion.on));
  ui.motionText.textContent = motion.on ? "Motion on" : "Use motion";
}

function onDeviceOrientation(event) {
  const angles = { alpha: angle(event.alpha), beta: angle(event.beta), gamma: angle(event.gamma) };
  // Without a sensor, browsers send one event with nothing in it: that is not a reading.
  if (angles.alpha === null && angles.beta === null && angles.gamma === null) return;
  motion.seen = true;
  queue("orientation", angles);
}

function angle(value) {
  return typeof value === "number" && Number.isFinite(value) ? round(value, 1) : null;
}

// --- Screen: full screen and staying awake ------------------------------------------------------

function setUpFullscreen() {
  if (!document.fullscreenEnabled) return;
  ui.fullscreen.hidden = false;
  ui.fullscreen.addEventListener("click", async () => {
    try {
      if (document.fullscreenElement) await document.exitFullscreen();
      else await document.documentElement.requestFullscreen({ navigationUI: "hide" });
    } catch {
      // refused by the browser: nothing to do
    }
  });
  document.addEventListener("fullscreenchange", () => {
    ui.fullscreenText.textContent = document.fullscreenElement ? "Exit full screen" : "Full screen";
  });
}

/** A controller's screen should not dim while it steers. */
async function keepAwake() {
  if (!("wakeLock" in navigator) || document.visibilityState !== "visible") return;
  if (ctl.pairing !== "paired" || (wakeLock && !wakeLock.released)) return;
  try {
    wakeLock = await navigator.wakeLock.request("screen");
  } catch {
    wakeLock = null; // refused (battery saver, permissions): the screen may dim, that is all
  }
}

function releaseWakeLock() {
  if (wakeLock && !wakeLock.released) wakeLock.release().catch(() => {});
  wakeLock = null;
}

function clamp(value) {
  return Math.min(1, Math.max(0, value));
}

function round(value, digits) {
  const factor = 10 ** digits;
  return Math.round(value * factor) / factor;
}
