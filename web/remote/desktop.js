// The remote control's desktop page: shows a QR code, a link and a short code; the phone that
// opens the link (or types the code) steers the ball. docs/protocol.md ("Remote control") is
// the contract. Server data goes into the page with textContent and attributes, never innerHTML.
import { io } from "/vendor/socket.io.esm.min.js";
import { Connection, byId, element, reasonOf, refusalOf } from "/shared/connection.js";
import { NAMESPACE, SOCKET_PATH, tabStore } from "/remote/shared.js";
import { followSignIn, withToken } from "/shared/signin.js";

/** This desktop's session, to resume its pairing after a drop or a reload. */
const stored = tabStore("switchboard.remote.desktop");
/** How long we wait for the server's ack of `renew` or `unpair`. */
const ACK_TIMEOUT_MS = 10_000;

/** The protocol's default CURSORS_PAIRING_TTL, used only when our clock disagrees with the server's. */
const DEFAULT_TTL_MS = 300_000;
/** A renewal that failed (timeout, refusal) is tried again after this long. */
const RENEW_RETRY_MS = 5_000;
/** The ball eases towards each new position with this time constant. */
const EASE_MS = 45;

const STATE_TEXT = {
  waiting: "Waiting for a controller",
  paired: "Controller paired",
  away: "Controller away",
  unpaired: "Not paired",
};

const ui = {
  pairingState: byId("pairing-state"),
  pairingText: byId("pairing-text"),
  unpair: byId("unpair"),
  stage: byId("stage"),
  ball: byId("ball"),
  lastPress: byId("last-press"),
  orientation: byId("orientation"),
  panel: byId("pairing-panel"),
  qr: byId("qr"),
  code: byId("code"),
  link: byId("link"),
  manualUrl: byId("manual-url"),
  countdown: byId("countdown"),
  expiryFill: byId("expiry-fill"),
  renew: byId("renew"),
  error: byId("desktop-error"),
  awayNote: byId("away-note"),
  hostWarning: byId("host-warning"),
  hostName: byId("host-name"),
};

const reducedMotion = matchMedia("(prefers-reduced-motion: reduce)");

const desk = {
  /** The desktop id of the current pairing; kept while we resume it. */
  desktop: null,
  /** The secret that resumes this desktop's pairing on a new connection. */
  session: stored.load(),
  /** waiting | paired | away | unpaired */
  state: "waiting",
  /** Local time (ms) the shown link and code expire at, and how long they lived. */
  deadline: 0,
  lifetime: DEFAULT_TTL_MS,
  /** Local time (ms) a controller that left can no longer resume. */
  awayUntil: 0,
  /** An ack we wait for (renew or unpair): one at a time. */
  busy: false,
  /** No renew/unpair before this time (after a failed one). */
  renewAfter: 0,
  /** The shown link and code were used by a controller: they no longer pair anyone. */
  spent: false,
  /** A controller has paired with this page at least once. */
  pairedOnce: false,
  /** Buttons the controller holds down, in the order they went down. */
  pressed: [],
};

const ball = {
  target: { x: 0.5, y: 0.5 },
  shown: { x: 0.5, y: 0.5 },
  size: { width: 0, height: 0 },
  frame: 0,
  lastFrame: 0,
};

const socket = io(NAMESPACE, {
  path: SOCKET_PATH,
  transports: ["websocket"],
  // Called at every (re)connection: a desktop that has a session resumes its pairing.
  auth: (cb) =>
    cb(withToken(desk.session ? { role: "desktop", session: desk.session } : { role: "desktop" })),
});

/** #status; renew and unpair wait while we are not connected. */
const connection = new Connection(socket, { onChange: updateControls });
followSignIn(socket, { connection, errorEvent: "remote_error", app: "the remote control" });

start();

function start() {
  socket.on("connect", onConnect);
  socket.on("disconnect", onDisconnect);
  socket.on("connect_error", onConnectError);

  socket.on("pairing", onPairing);
  socket.on("controller_joined", onControllerJoined);
  socket.on("controller_left", onControllerLeft);
  socket.on("update", onUpdate);
  socket.on("press", onPress);
  socket.on("orientation", onOrientation);
  socket.on("remote_error", onRemoteError);

  ui.unpair.addEventListener("click", unpair);
  ui.renew.addEventListener("click", () => renew());
  ui.link.addEventListener("click", (event) => {
    if (!desk.desktop || desk.spent) event.preventDefault(); // a dead link
  });
  document.addEventListener("visibilitychange", () => {
    // Timers are slowed down in background tabs: catch up at once when we are seen again.
    if (document.visibilityState === "visible") tick();
  });

  new ResizeObserver(() => {
    ball.size = { width: ui.stage.clientWidth, height: ui.stage.clientHeight };
    placeBall();
  }).observe(ui.stage);

  connection.set("connecting");
  setPairingState("waiting");
  setInterval(tick, 250);
}

// --- Connection ------------------------------------------------------------------------------

function onConnect() {
  connection.connected();
  // The server sends `pairing` on every connection (socket.io may deliver it just before this).
}

function onDisconnect(reason) {
  // The pairing waits for us (CURSORS_RESUME_GRACE): the next connection resumes it with our
  // session, and the controller is told meanwhile that the screen is away.
  desk.busy = false;
  releaseAll();
  tick();
  connection.disconnected(reason);
}

function onConnectError(err) {
  if (socket.active) {
    connection.set(connection.retrying());
    return;
  }
  const refusal = refusalOf(err);
  if (refusal.error === "bad_session") {
    // Our pairing ended while we were away: start afresh, with a new code.
    forgetSession();
    desk.desktop = null;
    if (desk.state === "paired" || desk.state === "away") setPairingState("unpaired");
    socket.connect();
    return;
  }
  // Unlike the other pages, a refusal without an error code is retried too.
  connection.set("disconnected", reasonOf(err));
  if (refusal.error === "unavailable" || !refusal.error) connection.retryLater();
}

function saveSession(session) {
  desk.session = session;
  stored.save(session);
}

function forgetSession() {
  desk.session = null;
  stored.forget();
}

// --- Pairing ---------------------------------------------------------------------------------

/** A new link and code: on connecting, after renew/unpair, or when the server replaced it. */
function onPairing(pairing) {
  if (pairing && typeof pairing.session === "string") saveSession(pairing.session);
  const fresh = pairing.desktop !== desk.desktop;
  showPairing(pairing);
  // A new desktop id is a new connection: whatever was paired before is gone.
  if (fresh && (desk.state === "paired" || desk.state === "away")) setPairingState("unpaired");
}

function showPairing(pairing) {
  if (!pairing || typeof pairing.url !== "string" || typeof pairing.code !== "string") return;
  desk.desktop = pairing.desktop;
  showError("");

  // Only an <img> src: the server's data: URI is never parsed as markup by us.
  if (typeof pairing.qr === "string" && pairing.qr.startsWith("data:image/")) ui.qr.src = pairing.qr;
  ui.link.href = pairing.url;
  ui.link.textContent = pairing.url;
  const manual = new URL(pairing.url);
  ui.manualUrl.textContent = `${manual.host}${manual.pathname}`;
  // A link to this computer's loopback address only works on this computer.
  ui.hostWarning.hidden = !isLoopback(manual.hostname);
  ui.hostName.textContent = manual.hostname;
  showCode(pairing.code);

  // `expires` is the server's clock: if ours disagrees badly, trust the usual lifetime instead.
  const now = Date.now();
  const left = Number(pairing.expires) - now;
  const plausible = Number.isFinite(left) && left > 5_000 && left <= 86_400_000;
  desk.lifetime = plausible ? left : DEFAULT_TTL_MS;
  desk.deadline = now + desk.lifetime;
  desk.renewAfter = 0;
  desk.spent = false;
  updateControls();
  tick();
}

/** The code in two groups of four, large: "BCDF GHJK". */
function showCode(code) {
  const clean = code.replace(/\s+/g, "").toUpperCase();
  const groups = clean.match(/.{1,4}/g) || [];
  ui.code.replaceChildren();
  groups.forEach((group, index) => {
    if (index) ui.code.append(" ");
    ui.code.append(element("span", "code-group", group));
  });
  ui.code.setAttribute("aria-label", `Code: ${clean.split("").join(" ")}`);
}

function onControllerJoined() {
  desk.awayUntil = 0;
  desk.spent = true;
  desk.pairedOnce = true;
  setPairingState("paired");
}

function onControllerLeft(event) {
  releaseAll();
  const grace = Number(event && event.grace);
  desk.awayUntil = Date.now() + (Number.isFinite(grace) && grace > 0 ? grace * 1000 : 0);
  setPairingState("away");
  tick();
}

/** The controller did not come back in time: its pairing is over; tick() gets a fresh code. */
function awayExpired() {
  desk.awayUntil = 0;
  setPairingState("unpaired");
}

/**
 * A usable link and code after a controller used ours: `unpair`, not `renew`, because it also
 * forgets the old controller's session on the server, so that the new code can pair (protocol:
 * unpair acks with a fresh pairing).
 */
function freshPairing() {
  request("unpair", (answer) => {
    if (answer.ok) showPairing(answer);
    else if (answer.error === "not_paired") renew();
    else desk.renewAfter = Date.now() + RENEW_RETRY_MS;
  });
}

function unpair() {
  if (desk.state !== "paired" && desk.state !== "away") return;
  request("unpair", (answer) => {
    if (answer.ok) {
      desk.awayUntil = 0;
      releaseAll();
      showPairing(answer);
      setPairingState("unpaired");
    } else if (answer.error === "not_paired") {
      setPairingState("unpaired");
      renew();
    }
  });
}

function renew() {
  if (desk.state === "paired" || desk.state === "away") return;
  request("renew", (answer) => {
    if (answer.ok) showPairing(answer);
    // `paired`: a controller paired meanwhile; its controller_joined is on its way.
    else if (answer.error !== "paired") desk.renewAfter = Date.now() + RENEW_RETRY_MS;
  });
}

/** Emits a desktop event with an ack; `done` gets the answer, or {ok: false} on a timeout. */
function request(event, done) {
  if (desk.busy || !socket.connected) return;
  desk.busy = true;
  updateControls();
  socket.timeout(ACK_TIMEOUT_MS).emit(event, (err, answer) => {
    desk.busy = false;
    updateControls();
    if (err || !answer || typeof answer !== "object") {
      desk.renewAfter = Date.now() + RENEW_RETRY_MS;
      if (socket.connected) showError(`No answer from the server to "${event}"; trying again.`);
      done({ ok: false, error: "timeout" });
      return;
    }
    if (!answer.ok && answer.error !== "paired" && answer.error !== "not_paired") {
      desk.renewAfter = Date.now() + RENEW_RETRY_MS;
      showError(answer.message || `The server refused "${event}".`);
    }
    done(answer);
  });
}

function onRemoteError(refusal) {
  // Refusals of renew/unpair come with their ack; anything else is worth a word.
  if (!refusal || refusal.event === "renew" || refusal.event === "unpair") return;
  showError(refusal.message || "The server refused a request.");
}

function showError(text) {
  ui.error.textContent = text;
}


function setPairingState(state) {
  desk.state = state;
  ui.pairingState.dataset.state = state;
  document.body.dataset.pairing = state;
  ui.pairingText.textContent = STATE_TEXT[state];
  if (state === "away") ui.pairingText.textContent = awayText();
  ui.panel.querySelector("h2").textContent =
    state === "unpaired" && desk.pairedOnce
      ? "Pair a phone again"
      : "Steer the ball from your phone";
  ui.panel.inert = state === "paired" || state === "away";
  ui.awayNote.hidden = state !== "away";
  // No controller any more: what it last pressed or how it was turned is no one's now.
  if (state === "waiting" || state === "unpaired") clearInput();
  updateControls();
}

function awayText() {
  const seconds = Math.max(0, Math.ceil((desk.awayUntil - Date.now()) / 1000));
  return `Controller away · ${seconds} s to come back`;
}

function updateControls() {
  const connected = connection.state === "connected";
  ui.unpair.hidden = desk.state !== "paired" && desk.state !== "away";
  ui.unpair.disabled = !connected || desk.busy;
  ui.renew.disabled = !connected || desk.busy || !desk.desktop || desk.spent;
}

/** Every 250 ms: the code's countdown, its renewal, and the away controller's grace. */
function tick() {
  const now = Date.now();

  if (desk.state === "away") {
    if (desk.awayUntil <= now) awayExpired();
    else ui.pairingText.textContent = awayText();
  }

  // Dead code (disconnected, or used up): blur it until a fresh one comes.
  ui.panel.classList.toggle("stale", !desk.desktop || desk.spent);
  const unpaired = desk.state === "waiting" || desk.state === "unpaired";
  if (unpaired && desk.spent && desk.desktop && now >= desk.renewAfter) freshPairing();

  if (!desk.desktop || desk.spent) {
    ui.countdown.textContent = connection.state === "connected" ? "Getting a code…" : "Waiting for the server…";
    ui.expiryFill.style.transform = "scaleX(0)";
    return;
  }
  const left = desk.deadline - now;
  const fraction = Math.max(0, Math.min(1, left / desk.lifetime));
  ui.expiryFill.style.transform = `scaleX(${fraction})`;
  ui.expiryFill.parentElement.dataset.low = String(left < 30_000);
  if (left > 0) {
    ui.countdown.textContent = `Code expires in ${clock(left / 1000)}`;
    return;
  }
  ui.countdown.textContent = "Getting a new code…";
  // Expired while nobody is paired: ask for a new one (paired desktops have no code to renew).
  if (unpaired && now >= desk.renewAfter) renew();
}

// --- The ball ----------------------------------------------------------------------------------

function onUpdate(position) {
  const x = Number(position && position.x);
  const y = Number(position && position.y);
  if (!Number.isFinite(x) || !Number.isFinite(y)) return;
  ball.target = { x: clamp(x), y: clamp(y) };
  ui.ball.dataset.x = String(ball.target.x);
  ui.ball.dataset.y = String(ball.target.y);
  if (reducedMotion.matches) {
    ball.shown = { ...ball.target };
    placeBall();
  } else if (!ball.frame) {
    ball.lastFrame = performance.now();
    ball.frame = requestAnimationFrame(animateBall);
  }
}

/** Eases the ball towards its target, independent of the frame rate. */
function animateBall(now) {
  const dt = Math.min(100, now - ball.lastFrame);
  ball.lastFrame = now;
  const k = 1 - Math.exp(-dt / EASE_MS);
  ball.shown.x += (ball.target.x - ball.shown.x) * k;
  ball.shown.y += (ball.target.y - ball.shown.y) * k;
  const close =
    Math.abs(ball.target.x - ball.shown.x) * ball.size.width < 0.2 &&
    Math.abs(ball.target.y - ball.shown.y) * ball.size.height < 0.2;
  if (close) ball.shown = { ...ball.target };
  placeBall();
  ball.frame = close ? 0 : requestAnimationFrame(animateBall);
}

function placeBall() {
  // The ball's centre sits on the point (CSS margins centre it), kept a radius from the edges
  // so that the pad's edges are the stage's edges.
  const radius = ui.ball.offsetWidth / 2;
  const px = radius + ball.shown.x * Math.max(0, ball.size.width - 2 * radius);
  const py = radius + ball.shown.y * Math.max(0, ball.size.height - 2 * radius);
  ui.ball.style.transform = `translate3d(${px.toFixed(1)}px, ${py.toFixed(1)}px, 0)`;
}

/** A press, confirmed to the server (`ack`): the phone's press is acknowledged only then. */
function onPress(event, ack) {
  if (typeof ack === "function") ack({ ok: true });
  if (!event || typeof event.button !== "string") return;
  const { button, down } = event;
  desk.pressed = desk.pressed.filter((name) => name !== button);
  if (down) desk.pressed.push(button);
  ui.lastPress.textContent = `${button.toUpperCase()} ${down ? "down" : "up"}`;
  ui.lastPress.dataset.button = button;
  showPressed();
  if (down) ripple();
}

function releaseAll() {
  desk.pressed = [];
  showPressed();
}

/** The controller's last press and orientation forgotten: the HUD shows dashes again. */
function clearInput() {
  releaseAll();
  ui.lastPress.textContent = "—";
  delete ui.lastPress.dataset.button;
  ui.orientation.textContent = "—";
  for (const name of ["--spin", "--tilt-x", "--tilt-y"]) ui.ball.style.removeProperty(name);
}

function showPressed() {
  const held = desk.pressed[desk.pressed.length - 1];
  if (held) ui.ball.dataset.pressed = held;
  else delete ui.ball.dataset.pressed;
}

function ripple() {
  const ring = ui.ball.querySelector(".ball-ring");
  ring.classList.remove("go");
  void ring.offsetWidth; // restart the animation
  ring.classList.add("go");
}

function onOrientation(angles) {
  if (!angles || typeof angles !== "object") return;
  const alpha = angle(angles.alpha);
  const beta = angle(angles.beta);
  const gamma = angle(angles.gamma);
  ui.orientation.textContent = `α ${degrees(alpha)}  β ${degrees(beta)}  γ ${degrees(gamma)}`;
  // The mark turns as the phone turns about its screen's axis (a compass's alpha), and the
  // ball leans with the phone's tilt.
  ui.ball.style.setProperty("--spin", `${alpha === null ? 0 : -alpha}deg`);
  ui.ball.style.setProperty("--tilt-x", `${beta === null ? 0 : Math.max(-60, Math.min(60, beta / 2))}deg`);
  ui.ball.style.setProperty("--tilt-y", `${gamma === null ? 0 : Math.max(-60, Math.min(60, gamma / 2))}deg`);
}

function angle(value) {
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

function degrees(value) {
  return value === null ? "—" : `${Math.round(value)}°`;
}

function isLoopback(hostname) {
  return (
    hostname === "localhost" ||
    hostname.endsWith(".localhost") ||
    hostname === "[::1]" ||
    /^127\./.test(hostname)
  );
}

function clamp(value) {
  return Math.min(1, Math.max(0, value));
}

/** Seconds as m:ss. */
function clock(seconds) {
  const s = Math.max(0, Math.ceil(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}
