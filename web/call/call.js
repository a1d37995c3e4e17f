// The call page: a 1:1 video call with someone in the same room, or with the echo peer, in the
// browser's own RTCPeerConnection. docs/protocol.md ("Signalling") is the contract: the room's
// `people` (the course's `clients`, with names), simple-peer style `signal` objects relayed by
// the server with fromId set by it, the `iceServers` event for fresh TURN credentials on every
// call, and `media`, our camera and microphone state, for the one we call.
//
// People go by names (issue 16): a person gives one before joining (kept in this tab for the
// room, so that a reload keeps it), or the sign-in gives it. A name refused (taken, ...) shows
// the name form again, with the reason.
//
// A call: the caller makes an offer (with a data channel "control"), trickles its candidates,
// and waits 30 s for an answer; the callee sees "Incoming call", and Accept answers. The control
// channel carries ping/pong (the round-trip shown) and tells each side when the other hung up:
// when it closes, the call is over. Hang up closes the peer connection.
//
// One state at a time (page.view.state: idle | calling | incoming | connecting | connected |
// failed | ended), and everything says the same: the state card, the people list's hint, the
// Call and Hang up buttons, the stage's caption, the tab's title. Names other people chose go
// into the page with textContent, never innerHTML.
import { io } from "/vendor/socket.io.esm.min.js";
import { Connection, byId, element, tabStore } from "/shared/connection.js";
import { followSignIn, withToken } from "/shared/signin.js";

const DEFAULT_ROOM = "lobby";
/** A room so named needs a sign-in that grants it (docs/auth.md). */
const PRIVATE_PREFIX = "private-";
const ECHO_ID = "echo";
/** A caller gives up after this long without an answer. */
const NO_ANSWER_MS = 30_000;
/** An incoming call not taken is dropped a little after its caller gave up. */
const INCOMING_MS = NO_ANSWER_MS + 5_000;
/** From the answer to a working connection: longer means no network path. */
const CONNECT_MS = 30_000;
/** The control channel's ping, for the round-trip time. */
const PING_MS = 2_000;
const ACK_TIMEOUT_MS = 10_000;
/** Notices (a refused signal, ...) go away after this long. */
const NOTICE_MS = 8_000;

/** The call's states, in words; the one shown is #call-state[data-state]. */
const STATE_TEXT = {
  idle: "Not in a call",
  calling: "Calling…",
  incoming: "Incoming call",
  connecting: "Connecting…",
  connected: "In a call",
  failed: "Call failed",
  ended: "Call ended",
};
/** How the line under the state names the other side. */
const PARTNER_PREP = { calling: "to", incoming: "from" };
/** What the people list says of the one we are calling, or who calls us, in each state. */
const PEER_HINT = {
  calling: "ringing…",
  incoming: "calling you",
  connecting: "connecting…",
  connected: "in a call with you",
};
/** What the Call button says while it cannot call: the call under way, by its state. */
const BUSY_BUTTON = {
  calling: (name) => `Calling ${name}…`,
  incoming: (name) => `${atStart(name)} is calling you`,
  connecting: (name) => `Connecting to ${name}…`,
  connected: (name) => `In a call with ${name}`,
};

const ui = {
  room: byId("room"),
  stage: byId("stage"),
  remoteVideo: byId("remote-video"),
  stageCaption: byId("stage-caption"),
  rtt: byId("rtt"),
  localBox: byId("local-box"),
  localVideo: byId("local-video"),
  localNote: byId("local-note"),
  micToggle: byId("mic-toggle"),
  camToggle: byId("cam-toggle"),
  speakerToggle: byId("speaker-toggle"),
  hangup: byId("hangup"),
  hangupText: byId("hangup-text"),
  remotePlaceholder: byId("remote-placeholder"),
  remoteAvatar: byId("remote-avatar"),
  remotePlaceholderText: byId("remote-placeholder-text"),
  remoteMic: byId("remote-mic"),
  remoteMicText: byId("remote-mic-text"),
  partnerMedia: byId("partner-media"),
  nameForm: byId("name-form"),
  nameInput: byId("name-input"),
  nameSubmit: byId("name-submit"),
  nameCancel: byId("name-cancel"),
  nameError: byId("name-error"),
  me: byId("me"),
  myName: byId("my-name"),
  myMark: byId("my-mark"),
  rename: byId("rename"),
  callState: byId("call-state"),
  callStateText: byId("call-state-text"),
  callDuration: byId("call-duration"),
  callPartner: byId("call-partner"),
  callPartnerPrep: byId("call-partner-prep"),
  callPartnerName: byId("call-partner-name"),
  callReason: byId("call-reason"),
  mediaError: byId("media-error"),
  mediaErrorText: byId("media-error-text"),
  mediaRetry: byId("media-retry"),
  notice: byId("notice"),
  peers: byId("peers"),
  peerCount: byId("peer-count"),
  peersEmpty: byId("peers-empty"),
  callButton: byId("call-button"),
  callButtonText: byId("call-button-text"),
  incoming: byId("incoming"),
  incomingFrom: byId("incoming-from"),
  incomingAvatar: byId("incoming-avatar"),
  accept: byId("accept"),
  decline: byId("decline"),
};

const room = new URLSearchParams(location.search).get("room") || DEFAULT_ROOM;
/** The name this tab goes by in this room, kept for a reload (another tab is another person). */
const storedName = tabStore(`switchboard.call.name.${room}`);
/** The token our name came with: it lets a new connection of this tab take the name back from
 * the old one the server has not yet seen drop (docs/protocol.md, "Names"). */
const nameToken = tabStore("switchboard.call.nameToken");

const page = {
  /** The others in the room: id -> the server's `people` entry ({id, name, signed_in, echo}),
   * in the server's order. */
  peers: new Map(),
  /** What each id was last shown as, for the words about a call whose partner has gone. */
  labels: new Map(),
  /** The name we go by on this connection (the server's `name`), or null. */
  myName: null,
  /** Whether that name comes with our sign-in (no changing it). */
  nameFixed: false,
  /** The name we ask for when (re)connecting: the one we go by, or the one typed. */
  wantName: storedName.load(),
  /** True from asking for a name until the server says yes (`name`) or no (`name_error`). */
  claiming: false,
  /** True while the person changes their name (the form shows over the kept one). */
  renaming: false,
  /** The partner's camera and microphone as they said (`media`): id -> {audio, video}. */
  remoteMedia: new Map(),
  /** The peer the Call button calls; `chosen` once the user picked it. */
  selected: null,
  chosen: false,
  /** What #call-state shows: the state, who with, and why. */
  view: { state: "idle", peerId: null, reason: "" },
  /** The call under way, or null (see newCall). */
  call: null,
  /** An offer waiting for Accept / Decline: { from, offer, candidates, timer }. */
  incoming: null,
  noticeTimer: 0,
  durationTimer: 0,
};

/** Our camera and microphone: the stream, or why there is none. */
const media = {
  stream: null,
  error: "",
  /** True while the browser is asked (and perhaps the user too). */
  pending: false,
  /** Resolves when the current getUserMedia attempt is over. */
  ready: Promise.resolve(),
  /** What the toggles asked for; kept for tracks that come later. */
  wantAudio: true,
  wantVideo: true,
};

const socket = io({
  path: "/api/signal/socket.io",
  transports: ["websocket"],
  // Not before we have a name to go by (or a sign-in that gives one): nobody is listed nameless.
  autoConnect: false,
  // A callback, not an object: socket.io calls it before every (re)connection.
  auth: (cb) => cb(connectAuth()),
});

/** #status: our connection to the signalling server. */
const connection = new Connection(socket, { onChange: render });
/** Who this tab's sign-in token names (docs/auth.md), or null. */
const signedIn = followSignIn(socket, {
  connection,
  errorEvent: "signal_error",
  app: "video calls",
  room,
  defaultRoom: DEFAULT_ROOM,
});

start();

function start() {
  ui.room.textContent = room;
  for (const ref of document.querySelectorAll(".room-ref")) ref.textContent = `#${room}`;
  if (!signedIn && page.wantName) ui.nameInput.value = page.wantName;

  ui.nameForm.addEventListener("submit", onNameSubmit);
  ui.nameInput.addEventListener("input", () => showNameError(""));
  ui.nameCancel.addEventListener("click", () => {
    page.renaming = false;
    showNameError("");
    render();
  });
  ui.rename.addEventListener("click", () => {
    page.renaming = true;
    ui.nameInput.value = page.myName ?? "";
    render();
    ui.nameInput.focus();
    ui.nameInput.select();
  });

  ui.callButton.addEventListener("click", () => {
    if (page.selected) startCall(page.selected);
  });
  ui.hangup.addEventListener("click", () => endCall("ended", "You hung up."));
  ui.accept.addEventListener("click", acceptCall);
  ui.decline.addEventListener("click", declineCall);
  ui.micToggle.addEventListener("click", () => toggleTrack("audio"));
  ui.camToggle.addEventListener("click", () => toggleTrack("video"));
  ui.speakerToggle.addEventListener("click", toggleSpeaker);
  ui.mediaRetry.addEventListener("click", startMedia);
  ui.remoteVideo.addEventListener("resize", showRemote);
  ui.remoteVideo.addEventListener("loadeddata", showRemote);
  ui.peers.addEventListener("click", onPeerClick);
  ui.peers.addEventListener("keydown", onPeerKey);

  socket.on("connect", onConnect);
  socket.on("disconnect", onDisconnect);
  // A bad room is final (the status says why); `unavailable` is retried.
  socket.on("connect_error", (err) => connection.connectError(err));
  // `people` is the course's `clients` with names: the page needs only it.
  socket.on("people", onPeople);
  socket.on("name", onName);
  socket.on("name_error", onNameError);
  socket.on("media", onMedia);
  socket.on("signal", onSignal);
  socket.on("peer_error", onPeerError);
  socket.on("signal_error", (refusal) => {
    console.warn("call: a signal was refused", refusal);
    showNotice(refusal?.message || "The server refused a signalling message.");
  });

  startMedia();
  // Signed in, the sign-in names us; a name kept from before is asked for again. A private
  // room without a sign-in is tried at once: the server's refusal says what to do (the sign-in
  // card), before anyone types a name for nothing.
  if (signedIn || page.wantName || (room.startsWith(PRIVATE_PREFIX) && !signedIn)) join();
  else {
    connection.set("idle");
    render();
    ui.nameInput.focus();
  }
}

// --- Our name ---------------------------------------------------------------------------------

/** What the server gets on every (re)connection: the room, the name we go by and its token (a
 * sign-in that gives a name wins over it, on the server). */
function connectAuth() {
  const auth = { room };
  if (page.wantName) {
    auth.name = page.wantName;
    const token = nameToken.load();
    if (token) auth.name_token = token;
  }
  return withToken(auth);
}

/** Connects, asking for page.wantName (or for the sign-in's). */
function join() {
  page.claiming = true;
  connection.cancelRetry();
  connection.set(connection.retrying());
  socket.connect();
  render();
}

function onNameSubmit(event) {
  event.preventDefault();
  const name = ui.nameInput.value.trim();
  if (!name) {
    showNameError("Type the name the others will see.");
    return;
  }
  showNameError("");
  page.wantName = name;
  if (!socket.connected) {
    // The server checks the name as we connect: `name` or `name_error` says how it went.
    if (!socket.active) join();
    return;
  }
  page.claiming = true;
  socket.timeout(ACK_TIMEOUT_MS).emit("name", name, (err) => {
    // A refusal comes as `name_error`; only silence is ours to report.
    if (err && page.claiming) {
      page.claiming = false;
      showNameError("The server did not answer; try again.");
      render();
    }
  });
  render();
}

/** `name(name, {id, signed_in, token?})`: the server holds this name for us. */
function onName(name, about) {
  if (typeof name !== "string") return;
  page.myName = name;
  page.nameFixed = about?.signed_in === true;
  page.claiming = false;
  page.renaming = false;
  if (!page.nameFixed) {
    page.wantName = name;
    storedName.save(name);
    if (typeof about?.token === "string") nameToken.save(about.token);
  }
  showNameError("");
  render();
}

/** `name_error`: a name refused (on connecting, or asked for), or ours lost. */
function onNameError(refusal) {
  const message = refusal?.message || "That name was refused; pick another.";
  page.claiming = false;
  if (refusal?.error === "replaced") {
    // A copy of this tab took our name back with its token: that tab is the one in the room
    // now; this one stays out (the server disconnects it) until given another name.
    nameToken.forget();
    storedName.forget();
    page.myName = null;
    page.wantName = null;
    connection.stop("your name is now used in another tab.");
    showNameError("Your name is now used in another tab or window of yours: pick another to join here.");
  } else {
    // Taken (or no name at all): still in the room, without a name until another is picked.
    if (refusal?.error !== "name_fixed" && !page.renaming) page.myName = null;
    if (page.wantName) ui.nameInput.value = page.wantName;
    showNameError(message);
  }
  render();
  if (!ui.nameForm.hidden) ui.nameInput.focus();
}

function showNameError(message) {
  ui.nameError.textContent = message;
  ui.nameInput.setAttribute("aria-invalid", message ? "true" : "false");
}

// --- Connection to the server ------------------------------------------------------------------

function onConnect() {
  connection.connected();
  ui.me.dataset.id = socket.id;
}

function onDisconnect(reason) {
  // The name goes with the connection; the next one asks for it again (with its token).
  page.myName = null;
  page.claiming = Boolean(page.wantName) || Boolean(signedIn);
  delete ui.me.dataset.id;
  connection.disconnected(reason);
  // Our id is gone with the connection: the caller sees us leave, and the offer is moot.
  if (page.incoming) dropIncoming("ended", "Missed call: the connection to the server dropped.");
  // A call being set up needs the server; one under way goes on peer to peer.
  const call = page.call;
  if (call && !call.connected) endCall("failed", "Lost the connection to the server.");
}

// --- The people in the room ---------------------------------------------------------------------

/** `people`: everyone in the room (us too) and the names they go by, as `clients` with names. */
function onPeople(people) {
  const peers = new Map();
  const entries = people && typeof people === "object" ? Object.values(people) : [];
  for (const entry of entries) {
    if (!entry || typeof entry.id !== "string") continue;
    const name = typeof entry.name === "string" && entry.name ? entry.name : null;
    const person = { id: entry.id, name, signedIn: entry.signed_in === true, echo: entry.echo };
    if (entry.id === socket.id) {
      // Signed in with a sign-in that gives no name: we name ourselves like anyone.
      if (!name && page.claiming && !page.wantName) page.claiming = false;
      continue;
    }
    peers.set(entry.id, person);
  }
  page.peers = peers;
  for (const [id, label] of labelsOf(sortedPeers())) page.labels.set(id, label);

  // Whoever we were calling has left: the offer is over on our side too. A call under way
  // goes on peer to peer: the other side may only have lost its server (it reconnects under a
  // new id), and its hanging up reaches us as the control channel or the connection closing.
  const call = page.call;
  if (call && !call.connected && !peers.has(call.peerId)) {
    endCall("ended", `${atStart(nameOf(call.peerId))} left the room.`);
  }
  if (page.incoming && !peers.has(page.incoming.from)) {
    dropIncoming("ended", "Missed call: the caller left the room.");
  }
  if (page.selected && !peers.has(page.selected)) {
    page.selected = null;
    page.chosen = false;
  }
  if (!page.chosen) page.selected = defaultPeer();
  render();
}

/** People first, in the server's order; the echo peer last. */
function sortedPeers() {
  const people = [...page.peers.values()].filter((peer) => !isEcho(peer.id));
  const echo = [...page.peers.values()].filter((peer) => isEcho(peer.id));
  return [...people, ...echo];
}

/** Until the user picks, the Call button calls the first person here, else the echo peer. */
function defaultPeer() {
  const [first] = sortedPeers();
  return first ? first.id : null;
}

function isEcho(id) {
  return id === ECHO_ID || page.peers.get(id)?.echo === true;
}

/**
 * What each of `peers` is shown as: its name; a nameless one (a program speaking the course's
 * protocol, or someone choosing a name) "Guest"; the connections of one signed-in user, which
 * share its name, and the guests, told apart by a number.
 */
function labelsOf(peers) {
  const labels = new Map();
  const seen = new Map();
  const counts = new Map();
  for (const peer of peers) {
    if (isEcho(peer.id)) continue;
    const base = peer.name ?? "Guest";
    counts.set(base, (counts.get(base) ?? 0) + 1);
  }
  for (const peer of peers) {
    if (isEcho(peer.id)) {
      labels.set(peer.id, "the echo test");
      continue;
    }
    const base = peer.name ?? "Guest";
    const n = (seen.get(base) ?? 0) + 1;
    seen.set(base, n);
    labels.set(peer.id, counts.get(base) > 1 ? `${base} (${n})` : base);
  }
  return labels;
}

/** The name of `id` as the page shows it (kept after they left, for the words about a call). */
function nameOf(id) {
  if (isEcho(id)) return "the echo test";
  return page.labels.get(id) ?? "the other side";
}

/** As nameOf, at the start of a sentence. */
function atStart(name) {
  return name.startsWith("the ") ? `T${name.slice(1)}` : name;
}

/** An avatar's letters: the first of the name's first two words. */
function initials(name) {
  const words = name.replace(/\(\d+\)$/, "").trim().split(/\s+/).filter(Boolean);
  const letters = words.slice(0, 2).map((word) => Array.from(word)[0] ?? "");
  return letters.join("").toUpperCase() || "?";
}

function renderPeers() {
  const { state, peerId: viewPeer } = page.view;
  const items = sortedPeers().map((peer) => {
    const item = element("li", "peer");
    item.dataset.id = peer.id;
    item.setAttribute("role", "option");
    item.tabIndex = -1;
    const selected = peer.id === page.selected;
    item.setAttribute("aria-selected", String(selected));
    if (selected) item.tabIndex = 0;
    const avatar = element("span", "avatar");
    avatar.setAttribute("aria-hidden", "true");
    const label = element("span", "peer-label");
    if (isEcho(peer.id)) {
      item.classList.add("echo");
      avatar.textContent = "↺";
      label.append(
        element("span", "peer-name", "Echo test"),
        element("span", "peer-hint", "(sends your video back)"),
      );
    } else {
      const shown = nameOf(peer.id);
      avatar.textContent = initials(shown);
      const name = element("span", "peer-name", shown);
      name.title = shown;
      label.append(name);
      if (!peer.name) label.append(element("span", "peer-hint", "no name given"));
      else if (peer.signedIn) label.append(element("span", "peer-hint", "signed in"));
    }
    item.append(avatar, label);
    // The one we call, or who calls us: what the call with them is now, in the state's words.
    const hint = viewPeer === peer.id ? PEER_HINT[state] : undefined;
    if (hint) {
      item.dataset.call = state;
      label.append(element("span", "peer-hint call-hint", hint));
    }
    return item;
  });
  ui.peers.replaceChildren(...items);
  ui.peerCount.textContent = String(items.length);
  const alone = ![...page.peers.keys()].some((id) => !isEcho(id));
  // Cut off after we were in, the list is what we last knew (dimmed): nothing to add.
  ui.peersEmpty.hidden = !alone || (!socket.connected && connection.everConnected);
  ui.peersEmpty.textContent = socket.connected
    ? "No one else is here yet. Open this page on another device, in the same room, to call it."
    : page.wantName || signedIn
      ? "Joining the room…"
      : "Give your name above to see who is here and call them.";
}

function onPeerClick(event) {
  const item = event.target.closest("li[data-id]");
  if (!item) return;
  selectPeer(item.dataset.id);
}

/** The list is a listbox: arrows move the choice, Enter calls. */
function onPeerKey(event) {
  const ids = sortedPeers().map((peer) => peer.id);
  const at = ids.indexOf(page.selected);
  if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    event.preventDefault();
    const step = event.key === "ArrowDown" ? 1 : -1;
    const next = ids[Math.max(0, Math.min(ids.length - 1, at + step))];
    if (next) selectPeer(next);
    ui.peers.querySelector(`li[aria-selected="true"]`)?.focus();
  } else if (event.key === "Enter" && page.selected && !ui.callButton.disabled) {
    event.preventDefault();
    startCall(page.selected);
  }
}

function selectPeer(id) {
  if (!page.peers.has(id)) return;
  page.selected = id;
  page.chosen = true;
  render();
}

// --- Camera and microphone ----------------------------------------------------------------------

/** Asks for the camera and the microphone; without them we can still be called (and see). */
function startMedia() {
  media.ready = (async () => {
    media.error = "";
    media.pending = true;
    render();
    if (!navigator.mediaDevices?.getUserMedia) {
      media.error = window.isSecureContext
        ? "Camera unavailable: this browser cannot share a camera"
        : "Camera unavailable: open this page over https:// to use the camera";
      media.pending = false;
      render();
      return;
    }
    let stream = null;
    let firstError = null;
    for (const constraints of [
      {
        audio: true,
        video: { facingMode: "user", width: { ideal: 1280 }, height: { ideal: 720 } },
      },
      { video: { facingMode: "user" } },
      { audio: true },
    ]) {
      try {
        stream = await navigator.mediaDevices.getUserMedia(constraints);
        break;
      } catch (err) {
        firstError ??= err;
        // Refused by the user or the browser: asking for less will not change their mind.
        if (err?.name === "NotAllowedError" || err?.name === "SecurityError") break;
      }
    }
    if (media.stream) for (const track of media.stream.getTracks()) track.stop();
    media.stream = stream;
    if (!stream) {
      media.error = mediaErrorText(firstError);
    } else {
      for (const track of stream.getAudioTracks()) track.enabled = media.wantAudio;
      for (const track of stream.getVideoTracks()) track.enabled = media.wantVideo;
      if (!stream.getVideoTracks().length) {
        media.error = `No camera: ${describe(firstError)}`;
      } else if (!stream.getAudioTracks().length) {
        media.error = `No microphone: ${describe(firstError)}`;
      }
      ui.localVideo.srcObject = stream;
      ui.localVideo.play().catch(() => {});
    }
    media.pending = false;
    render();
  })();
  return media.ready;
}

function mediaErrorText(err) {
  const what = describe(err);
  if (err?.name === "NotAllowedError" || err?.name === "SecurityError") {
    return `Camera blocked: ${what}`;
  }
  if (err?.name === "NotFoundError" || err?.name === "OverconstrainedError") {
    return `No camera or microphone found: ${what}`;
  }
  return `Camera unavailable: ${what}`;
}

function describe(err) {
  if (!err) return "unknown error";
  return err.message ? `${err.name}: ${err.message}` : String(err.name || err);
}

function localTrack(kind) {
  return media.stream?.getTracks().find((track) => track.kind === kind) ?? null;
}

/** Mutes or unmutes: the track stays in the call, sending silence or black while disabled;
 * the other side is told (`media`), so that it shows why. */
function toggleTrack(kind) {
  const track = localTrack(kind);
  if (!track) return;
  if (kind === "audio") media.wantAudio = !track.enabled;
  else media.wantVideo = !track.enabled;
  track.enabled = kind === "audio" ? media.wantAudio : media.wantVideo;
  sendMedia(page.call);
  render();
}

/** What we send: whether our microphone and camera are on (none is off). */
function mediaState() {
  return {
    audio: Boolean(localTrack("audio")?.enabled),
    video: Boolean(localTrack("video")?.enabled),
  };
}

/** Tells the one we call (not the echo test, which sends us our own) how our media is. */
function sendMedia(call) {
  if (!call || call.finished || !call.descriptionSent || isEcho(call.peerId)) return;
  if (!socket.connected) return;
  socket.timeout(ACK_TIMEOUT_MS).emit("media", call.peerId, mediaState(), (err, ack) => {
    if (err) console.warn("call: no ack for our media state", err);
    else if (!ack?.ok) console.warn("call: media state refused", ack);
  });
}

/** `media(myId, {audio, video}, fromId)`: how the other side's camera and microphone are. */
function onMedia(_myId, state, fromId) {
  if (typeof fromId !== "string" || !state || typeof state !== "object") return;
  if (typeof state.audio !== "boolean" || typeof state.video !== "boolean") return;
  page.remoteMedia.set(fromId, { audio: state.audio, video: state.video });
  render();
}

/** The partner's camera and microphone, as far as we know: the echo test's are ours. */
function partnerMedia(peerId) {
  if (!peerId) return null;
  if (isEcho(peerId)) return mediaState();
  return page.remoteMedia.get(peerId) ?? null;
}

function toggleSpeaker() {
  ui.remoteVideo.muted = !ui.remoteVideo.muted;
  if (!ui.remoteVideo.muted) ui.remoteVideo.play().catch(() => {});
  render();
}

// --- Calls --------------------------------------------------------------------------------------

/**
 * The call under way: who with, our role, the peer connection (once made), its control channel,
 * the partner's candidates that came before their description, and our own candidates made
 * before our description went out.
 */
function newCall(peerId, role) {
  return {
    peerId,
    role,
    pc: null,
    channel: null,
    remoteSet: false,
    descriptionSent: false,
    remoteCandidates: [],
    localCandidates: [],
    remoteTracks: [],
    connected: false,
    finished: false,
    timer: 0,
    pingTimer: 0,
    pingSentAt: 0,
    startedAt: 0,
  };
}

/** True while `call` is still the call under way (an await may have outlived it). */
function current(call) {
  return page.call === call && !call.finished;
}

async function startCall(peerId) {
  if (page.call || page.incoming || !socket.connected || !page.peers.has(peerId)) return;
  const call = newCall(peerId, "caller");
  page.call = call;
  setView("calling", peerId);
  try {
    await media.ready;
    const config = await iceConfig();
    if (!current(call)) return;
    const pc = openConnection(call, config);
    const stream = media.stream;
    // Both kinds always: what we cannot send, we still want to receive.
    for (const kind of ["audio", "video"]) {
      const track = localTrack(kind);
      if (track) pc.addTrack(track, stream);
      else pc.addTransceiver(kind, { direction: "recvonly" });
    }
    holdChannel(call, pc.createDataChannel("control"));
    await pc.setLocalDescription(await pc.createOffer());
    if (!current(call)) return;
    sendDescription(call, pc.localDescription);
    sendMedia(call);
    call.timer = setTimeout(() => {
      if (current(call) && !call.remoteSet) endCall("ended", "No answer.");
    }, NO_ANSWER_MS);
  } catch (err) {
    if (current(call)) endCall("failed", `Could not start the call: ${describe(err)}`);
  }
}

async function acceptCall() {
  const incoming = page.incoming;
  if (!incoming || page.call) return;
  clearTimeout(incoming.timer);
  page.incoming = null;
  const call = newCall(incoming.from, "callee");
  call.remoteCandidates.push(...incoming.candidates);
  page.call = call;
  setView("connecting", call.peerId);
  try {
    await media.ready;
    const config = await iceConfig();
    if (!current(call)) return;
    const pc = openConnection(call, config);
    await pc.setRemoteDescription(incoming.offer);
    if (!current(call)) return;
    await remoteDescriptionSet(call);
    // addTrack takes the transceivers the offer made; what we lack, we only receive.
    for (const track of media.stream?.getTracks() ?? []) pc.addTrack(track, media.stream);
    await pc.setLocalDescription(await pc.createAnswer());
    if (!current(call)) return;
    sendDescription(call, pc.localDescription);
    sendMedia(call);
    watchConnecting(call);
  } catch (err) {
    if (current(call)) endCall("failed", `Could not answer the call: ${describe(err)}`);
  }
}

function declineCall() {
  if (!page.incoming) return;
  // A rollback of the offer tells the caller at once (see withdraw()).
  withdraw(page.incoming.from);
  dropIncoming("ended", "You declined the call.");
}

/**
 * Tells `peerId` that the offer between us is off before any answer: the caller gave up, or the
 * callee declined. It is the standard `{type: "rollback"}` description, one of the shapes the
 * signalling service relays, so no event of our own is needed.
 */
function withdraw(peerId) {
  if (socket.connected && !isEcho(peerId)) send(peerId, { type: "rollback", sdp: "" });
}

function dropIncoming(state, reason) {
  const incoming = page.incoming;
  if (!incoming) return;
  clearTimeout(incoming.timer);
  page.incoming = null;
  page.remoteMedia.delete(incoming.from);
  setView(state, incoming.from, reason);
}

/**
 * Ends the call under way on our side: closing the connection tells the other side, or, while
 * our offer is still unanswered, a rollback does (unless the other side ended it).
 */
function endCall(state, reason, { notify = true } = {}) {
  const call = page.call;
  if (!call) return;
  if (notify && call.role === "caller" && call.descriptionSent && !call.remoteSet) {
    withdraw(call.peerId);
  }
  call.finished = true;
  page.call = null;
  clearTimeout(call.timer);
  clearInterval(call.pingTimer);
  if (call.channel) call.channel.onclose = null;
  try {
    call.pc?.close();
  } catch {
    // already closed
  }
  for (const track of call.remoteTracks) track.stop?.();
  ui.remoteVideo.srcObject = null;
  page.remoteMedia.delete(call.peerId);
  setView(state, call.peerId, reason);
}

/** The ICE servers, asked over the signalling connection for every call: TURN credentials
 * go only to a connected page, and are only good for 10 minutes. */
async function iceConfig() {
  let body;
  try {
    body = await socket.timeout(ACK_TIMEOUT_MS).emitWithAck("iceServers");
  } catch {
    throw new Error("no ICE servers (the signalling service did not answer)");
  }
  if (!body?.ok) throw new Error(body?.message || "no ICE servers");
  return {
    iceServers: Array.isArray(body.iceServers) ? body.iceServers : [],
    iceTransportPolicy: body.iceTransportPolicy === "relay" ? "relay" : "all",
  };
}

function openConnection(call, config) {
  const pc = new RTCPeerConnection(config);
  call.pc = pc;
  pc.onicecandidate = (event) => {
    if (!current(call) || !event.candidate) return;
    const { candidate, sdpMid, sdpMLineIndex, usernameFragment } = event.candidate.toJSON();
    const signal = {
      type: "candidate",
      candidate: { candidate, sdpMid, sdpMLineIndex, usernameFragment },
    };
    // Candidates go after the description they belong to.
    if (call.descriptionSent) send(call.peerId, signal);
    else call.localCandidates.push(signal);
  };
  pc.ontrack = (event) => {
    if (!current(call)) return;
    call.remoteTracks.push(event.track);
    ui.remoteVideo.srcObject = new MediaStream(call.remoteTracks);
    playRemote();
  };
  pc.ondatachannel = (event) => {
    if (current(call) && event.channel.label === "control") holdChannel(call, event.channel);
  };
  pc.onconnectionstatechange = () => {
    if (!current(call)) return;
    switch (pc.connectionState) {
      case "connected":
        call.connected = true;
        clearTimeout(call.timer);
        if (!call.startedAt) call.startedAt = Date.now();
        setView("connected", call.peerId);
        break;
      case "disconnected":
        // ICE may find its way back: say so, and wait for `connected` or `failed`.
        if (call.connected) {
          setView("connected", call.peerId, "The connection is interrupted; trying to recover…");
        }
        break;
      case "failed":
        endCall(
          "failed",
          "The connection failed: no network path between you (check the TURN server).",
        );
        break;
      case "closed":
        endCall("ended", "The connection closed.");
        break;
      default:
        break;
    }
  };
  return pc;
}

/** The control channel: ping/pong for the round-trip, and its closing ends the call. */
function holdChannel(call, channel) {
  call.channel = channel;
  channel.onopen = () => {
    if (!current(call)) return;
    ping(call);
    call.pingTimer = setInterval(() => ping(call), PING_MS);
  };
  channel.onmessage = (event) => {
    if (!current(call)) return;
    if (event.data === "ping") {
      channel.send("pong");
    } else if (event.data === "pong" && call.pingSentAt) {
      const ms = Math.round(performance.now() - call.pingSentAt);
      call.pingSentAt = 0;
      ui.rtt.textContent = `${isEcho(call.peerId) ? "echo round-trip" : "round-trip"}: ${ms} ms`;
      ui.rtt.hidden = false;
    }
  };
  channel.onclose = () => {
    if (current(call)) endCall("ended", `${atStart(nameOf(call.peerId))} hung up.`);
  };
}

function ping(call) {
  if (!current(call) || call.channel?.readyState !== "open") return;
  // One ping at a time; one lost for 10 s is given up.
  if (call.pingSentAt && performance.now() - call.pingSentAt < 10_000) return;
  call.pingSentAt = performance.now();
  call.channel.send("ping");
}

function sendDescription(call, description) {
  send(call.peerId, { type: description.type, sdp: description.sdp });
  call.descriptionSent = true;
  for (const signal of call.localCandidates.splice(0)) send(call.peerId, signal);
}

function send(peerId, signal) {
  // Refusals come back as peer_error / signal_error events too, where we act on them.
  socket.timeout(ACK_TIMEOUT_MS).emit("signal", peerId, signal, (err, ack) => {
    if (err) console.warn("call: no ack for a signal", err);
    else if (!ack?.ok) console.warn("call: signal refused", ack);
  });
}

/** Once the partner's description is in: their candidates that came early go in too. */
async function remoteDescriptionSet(call) {
  call.remoteSet = true;
  for (const candidate of call.remoteCandidates.splice(0)) await addCandidate(call, candidate);
}

async function addCandidate(call, candidate) {
  try {
    await call.pc.addIceCandidate(candidate);
  } catch (err) {
    console.warn("call: a candidate was not taken", err, candidate);
  }
}

/** From the answer on, the connection has CONNECT_MS to work. */
function watchConnecting(call) {
  clearTimeout(call.timer);
  call.timer = setTimeout(() => {
    if (current(call) && !call.connected) {
      endCall("failed", "Could not connect within 30 s: no network path between you.");
    }
  }, CONNECT_MS);
}

// --- Signals from others ------------------------------------------------------------------------

/** `signal(myId, signal, fromId)`: fromId is set by the server, so it can be trusted. */
function onSignal(_myId, signal, fromId) {
  if (!signal || typeof signal !== "object" || typeof fromId !== "string") return;
  if (signal.type === "offer") onOffer(signal, fromId);
  else if (signal.type === "answer") onAnswer(signal, fromId);
  else if (signal.type === "candidate") onCandidate(signal.candidate, fromId);
  else if (signal.type === "rollback") onWithdrawn(fromId);
  // renegotiate and transceiverRequest: this page never renegotiates.
}

function onOffer(offer, fromId) {
  const call = page.call;
  if (call) {
    // Both called each other at once: the higher id gives way and takes the other's call.
    const crossed = call.peerId === fromId && call.role === "caller" && !call.remoteSet;
    if (!crossed || !(socket.id > fromId)) return;
    call.finished = true;
    page.call = null;
    clearTimeout(call.timer);
    call.pc?.close();
  }
  if (page.incoming) {
    if (page.incoming.from !== fromId) return; // busy with another offer
    // The same caller again (a retry): this offer replaces the last, candidates and all.
    clearTimeout(page.incoming.timer);
  }
  const incoming = {
    from: fromId,
    offer: { type: "offer", sdp: offer.sdp },
    candidates: [],
    timer: 0,
  };
  incoming.timer = setTimeout(() => {
    if (page.incoming === incoming) dropIncoming("ended", "Missed call.");
  }, INCOMING_MS);
  page.incoming = incoming;
  setView("incoming", fromId);
  ui.accept.focus();
}

/** The other side called the offer off before an answer (see withdraw()). */
function onWithdrawn(fromId) {
  if (page.incoming?.from === fromId) {
    dropIncoming("ended", "The caller hung up.");
    return;
  }
  const call = page.call;
  if (call?.peerId === fromId && call.role === "caller" && !call.remoteSet) {
    endCall("ended", "Declined.", { notify: false });
  }
}

async function onAnswer(answer, fromId) {
  const call = page.call;
  if (!call || call.peerId !== fromId || call.role !== "caller" || !call.pc) return;
  if (call.pc.signalingState !== "have-local-offer") return;
  clearTimeout(call.timer);
  setView("connecting", call.peerId);
  try {
    await call.pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    if (!current(call)) return;
    await remoteDescriptionSet(call);
    watchConnecting(call);
  } catch (err) {
    if (current(call)) endCall("failed", `The answer was unusable: ${describe(err)}`);
  }
}

function onCandidate(candidate, fromId) {
  if (!candidate || typeof candidate !== "object") return;
  if (page.incoming && page.incoming.from === fromId) {
    page.incoming.candidates.push(candidate);
    return;
  }
  const call = page.call;
  if (!call || call.peerId !== fromId) return;
  if (call.remoteSet && call.pc) addCandidate(call, candidate);
  else call.remoteCandidates.push(candidate);
}

/** A signal the server could not deliver: the peer left, is us, or (echo) is busy. */
function onPeerError(error) {
  console.warn("call: peer error", error);
  const call = page.call;
  const message = error?.message || "That peer cannot be reached.";
  if (call && error?.peerId === call.peerId && !call.connected) {
    const reason =
      error.reason === "unknown_peer"
        ? `${atStart(nameOf(call.peerId))} is no longer in the room.`
        : message;
    endCall("failed", reason);
  } else {
    showNotice(message);
  }
}

// --- What the page shows ------------------------------------------------------------------------

function setView(state, peerId = null, reason = "") {
  page.view = { state, peerId, reason };
  render();
}

function render() {
  const { state, peerId, reason } = page.view;
  const name = peerId ? nameOf(peerId) : "";
  const call = page.call;
  const connected = connection.state === "connected";
  document.body.dataset.callState = state;
  // Ringing in, the incoming sheet (an alertdialog) says so, once: the card stays quiet.
  ui.callState.setAttribute("aria-live", state === "incoming" ? "off" : "polite");
  ui.callState.dataset.state = state;
  if (peerId) ui.callState.dataset.peer = peerId;
  else delete ui.callState.dataset.peer;
  ui.callStateText.textContent = STATE_TEXT[state];
  ui.callPartner.hidden = !peerId;
  ui.callPartnerPrep.textContent = PARTNER_PREP[state] ?? "with";
  ui.callPartnerName.textContent = name;
  ui.callReason.textContent = reason || idleHint(state);
  ui.callReason.classList.toggle("hint", !reason);
  if (!call) ui.rtt.hidden = true;
  renderPartnerMedia();
  showRemote();
  updateDuration();
  updateTitle();

  // Our name: the form until we have one (or while changing it), else who we are.
  const named = Boolean(page.myName);
  ui.nameForm.hidden = signedIn && page.nameFixed ? true : (named || page.claiming) && !page.renaming;
  ui.nameCancel.hidden = !page.renaming;
  ui.nameSubmit.textContent = page.renaming ? "Change" : "Join";
  ui.nameSubmit.disabled = page.claiming;
  ui.me.hidden = !named;
  ui.myName.textContent = page.myName ?? "";
  ui.myMark.textContent = page.nameFixed ? " (signed in)" : "";
  ui.rename.hidden = page.nameFixed || page.renaming;

  // Our camera.
  const video = localTrack("video");
  const audio = localTrack("audio");
  const camera = media.pending ? "pending" : !video ? "none" : video.enabled ? "on" : "off";
  const micOff = Boolean(audio) && !audio.enabled;
  ui.localBox.dataset.camera = camera;
  ui.localNote.textContent = {
    pending: "Starting your camera…",
    on: micOff ? "You · microphone off" : "You",
    off: micOff ? "Your camera and microphone are off" : "Your camera is off",
    none: micOff ? "No camera · microphone off" : "No camera",
  }[camera];
  ui.mediaError.hidden = !media.error;
  ui.mediaErrorText.textContent = media.error
    ? `${media.error}. You can still be called, and see and hear the other side.`
    : "";
  ui.mediaRetry.hidden = Boolean(call);

  setToggle(ui.micToggle, audio, audio?.enabled, "Microphone");
  setToggle(ui.camToggle, video, video?.enabled, "Camera");
  const soundOn = !ui.remoteVideo.muted;
  ui.speakerToggle.setAttribute("aria-pressed", String(soundOn));
  ui.speakerToggle.title = soundOn ? "Sound on: turn it off" : "Sound off: turn it on";

  // The buttons: Hang up while a call is under way (Cancel while it only rings), Call when
  // none is, saying what the call is while there is one.
  ui.hangup.hidden = !call;
  ui.hangupText.textContent = state === "calling" ? "Cancel" : "Hang up";
  const busy = call || page.incoming ? BUSY_BUTTON[state] : undefined;
  const selectedName = page.selected ? nameOf(page.selected) : "";
  ui.callButtonText.textContent = busy
    ? busy(name)
    : page.selected
      ? `Call ${selectedName}`
      : "Call";
  ui.callButton.dataset.state = busy ? state : "idle";
  // Ringing in, the incoming sheet's Accept and Decline are the buttons.
  ui.callButton.hidden = state === "incoming" && Boolean(page.incoming);
  ui.callButton.title = busy
    ? ""
    : !named
      ? "Give your name first"
      : page.selected
        ? `Call ${selectedName}`
        : "Pick someone to call";
  ui.callButton.disabled =
    Boolean(call) || Boolean(page.incoming) || !page.selected || !connected || !named;

  ui.incoming.hidden = !page.incoming;
  const caller = page.incoming ? nameOf(page.incoming.from) : "";
  ui.incomingFrom.textContent = atStart(caller);
  ui.incomingAvatar.textContent = caller ? initials(caller) : "";

  renderPeers();
}

/** The tab's title says where the call stands, for a tab in the background. */
function updateTitle() {
  const { state, peerId } = page.view;
  const name = peerId ? nameOf(peerId) : "";
  const what = {
    calling: `Calling ${name}…`,
    incoming: `${atStart(name)} is calling`,
    connecting: `Connecting to ${name}…`,
    connected: `In a call with ${name}`,
  }[state];
  document.title = `${what ? `${what} · ` : ""}Call · #${room} · Switchboard`;
}

/** #partner-media: the other side's microphone and camera, in words, while there is a call. */
function renderPartnerMedia() {
  const call = page.call;
  const state = call ? partnerMedia(call.peerId) : null;
  const off = [];
  if (state && !state.audio) off.push("microphone");
  if (state && !state.video) off.push("camera");
  const name = call ? atStart(nameOf(call.peerId)) : "";
  let text = "";
  if (call && isEcho(call.peerId)) {
    if (off.length) text = `Your ${off.join(" and ")} ${off.length > 1 ? "are" : "is"} off.`;
  } else if (off.length) {
    text = `${name}'s ${off.join(" and ")} ${off.length > 1 ? "are" : "is"} off.`;
  }
  ui.partnerMedia.textContent = text;
  ui.partnerMedia.hidden = !text;
}

function idleHint(state) {
  if (state !== "idle") return "";
  return "Pick someone below and press Call; the echo test sends your own video back.";
}

/** A toggle's name stays its visible label (Mic, Camera); aria-pressed says whether it is on,
 * and the tooltip what pressing does. */
function setToggle(button, track, on, what) {
  button.disabled = !track;
  button.setAttribute("aria-pressed", String(Boolean(track && on)));
  if (!track) button.title = `No ${what.toLowerCase()}`;
  else button.title = on ? `${what} on: turn it off` : `${what} off: turn it on`;
}

/**
 * The remote picture shows once it has frames and the other side's camera is on; in a call
 * without it, whose picture is missing and why (camera off, or no video); before a call, the
 * stage shows our own camera, with a caption saying where the call stands.
 */
function showRemote() {
  const call = page.call;
  const partner = call ? partnerMedia(call.peerId) : null;
  const hasVideo =
    Boolean(call) &&
    ui.remoteVideo.srcObject !== null &&
    ui.remoteVideo.videoWidth > 0 &&
    call.remoteTracks.some((track) => track.kind === "video");
  const cameraOff = Boolean(call?.connected) && partner?.video === false;
  ui.stage.dataset.remote = cameraOff
    ? "camera-off"
    : hasVideo
      ? "video"
      : call?.connected
        ? "no-video"
        : "none";

  const { state, peerId } = page.view;
  const name = peerId ? nameOf(peerId) : "";
  ui.remoteVideo.setAttribute("aria-label", call ? `${atStart(name)}'s video` : "The other side's video");

  // No picture from the other side during a call: their name, and why.
  const placeholder = ui.stage.dataset.remote === "camera-off" || ui.stage.dataset.remote === "no-video";
  ui.remotePlaceholder.hidden = !placeholder;
  if (placeholder && call) {
    const partnerName = nameOf(call.peerId);
    ui.remoteAvatar.textContent = isEcho(call.peerId) ? "↺" : initials(partnerName);
    ui.remotePlaceholderText.textContent = isEcho(call.peerId)
      ? cameraOff
        ? "Your camera is off: the echo test has no picture to send back"
        : "No video from the echo test"
      : cameraOff
        ? `${atStart(partnerName)}'s camera is off`
        : `No video from ${partnerName}`;
  }
  // Their microphone off: said over the picture, where the eyes are.
  const micOff = Boolean(call) && partner?.audio === false && state !== "calling";
  ui.remoteMic.hidden = !micOff;
  if (micOff) {
    ui.remoteMicText.textContent = isEcho(call.peerId)
      ? "Your microphone is off"
      : `${atStart(nameOf(call.peerId))} is muted`;
  }

  // Ringing in needs no caption: the incoming sheet says who calls.
  let caption = "";
  if (state === "calling") caption = `Calling ${name}…`;
  else if (state === "connecting") caption = `Connecting to ${name}…`;
  ui.stageCaption.textContent = caption;
  ui.stageCaption.hidden = !caption;
}

/** Plays the other side; where sound may not start by itself, it starts muted. */
function playRemote() {
  ui.remoteVideo.play().catch((err) => {
    if (err?.name !== "NotAllowedError") return;
    ui.remoteVideo.muted = true;
    ui.remoteVideo.play().catch(() => {});
    showNotice("Sound is off: press Sound to hear the other side.");
    render();
  });
}

function updateDuration() {
  const call = page.call;
  const running = page.view.state === "connected" && call?.startedAt;
  ui.callDuration.hidden = !running;
  clearTimeout(page.durationTimer);
  if (!running) return;
  const seconds = Math.floor((Date.now() - call.startedAt) / 1000);
  ui.callDuration.textContent = formatDuration(seconds);
  page.durationTimer = setTimeout(updateDuration, 1000 - ((Date.now() - call.startedAt) % 1000));
}

function formatDuration(seconds) {
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  const mm = String(m).padStart(h ? 2 : 1, "0");
  return `${h ? `${h}:` : ""}${mm}:${String(s).padStart(2, "0")}`;
}

function showNotice(message) {
  ui.notice.textContent = message;
  ui.notice.hidden = false;
  clearTimeout(page.noticeTimer);
  page.noticeTimer = setTimeout(() => {
    ui.notice.hidden = true;
  }, NOTICE_MS);
}
