// The ticker page: the live trades of one crypto pair, from the ticker service (docs/protocol.md,
// "Ticker"). We subscribe to the pair picked, keep its newest trades sorted by id, and show the
// feed's state as the server reports it. Prices and amounts are exact decimal strings: they are
// shown as sent, with thousands separators at most, and turned into numbers only to draw the
// chart. Everything the server sends goes into the page with textContent, never innerHTML.
import { io } from "/vendor/socket.io.esm.min.js";
import { Connection, byId, element } from "/shared/connection.js";
import { followSignIn, withToken } from "/shared/signin.js";

const DEFAULT_PAIR = "btcusd";
/** Where the last pair picked is remembered. */
const PAIR_KEY = "switchboard.ticker.pair";
/** Trades kept (and drawn) for the selected pair. */
const MAX_TRADES = 100;
const ACK_TIMEOUT_MS = 10_000;
/** A subscription that got no answer, or a list of pairs that did not load, is asked again. */
const RETRY_MS = 3_000;
/** Currencies Bitstamp quotes in, longest first: to split a pair when the server did not. */
const QUOTES = ["usdt", "usdc", "pyusd", "usd", "eur", "gbp", "btc", "eth"];
const DECIMAL = /^(\d+)(\.\d+)?$/;
const SVG_NS = "http://www.w3.org/2000/svg";

/** The feed's states (the `status` event's `state`), in words. */
const FEED_TEXT = {
  unknown: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting",
  stale: "Delayed",
  offline: "Offline",
};
/**
 * Why the feed is not connected (the status's `cause`, docs/protocol.md), in a person's words:
 * the server's `detail` is for operators (an address, a close code), never shown here.
 */
const CAUSE_TEXT = {
  starting: "Connecting to the exchange…",
  replica_stopped:
    "The server that held the connection to the exchange stopped; another one is taking over…",
  closed: "The exchange closed the connection",
  dropped: "The connection to the exchange was cut",
  silent: "The exchange stopped answering",
  refused: "The exchange is turning connections away (it may be down for maintenance)",
  unreachable: "The exchange can't be reached",
  dns: "The exchange can't be found: the server may have lost its internet connection",
  timeout: "The exchange took too long to answer",
  subscription_refused: "The exchange refused to send its trades",
  protocol: "The exchange answered in a way the server doesn't understand",
  internal: "Something went wrong on our side",
  no_leader:
    "None of our servers is connected to the exchange right now; one will take over shortly",
  no_answer: "The exchange hasn't answered for a few seconds: prices may be behind",
};
/** What a state says when the server gave no cause we know. */
const STATE_TEXT = {
  reconnecting: "Reconnecting to the exchange…",
  offline: "The exchange can't be reached right now",
  stale: "No news from the exchange for a while: prices may be behind",
};
/** Why the last connection ended (the status's `last_cause`), after "last: ". */
const LAST_CAUSE_TEXT = {
  replica_stopped: "another of our servers took over",
  closed: "the exchange closed the connection",
  dropped: "the connection was cut",
  silent: "the exchange stopped answering",
  reconnect_requested: "the exchange asked us to reconnect",
};
const SIDE_TEXT = { buy: "Buy", sell: "Sell" };
const SIDE_ARROW = { buy: "▲", sell: "▼" };

const ui = {
  feed: byId("feed"),
  feedSource: byId("feed-source"),
  feedState: byId("feed-state"),
  feedSince: byId("feed-since"),
  feedDetail: byId("feed-detail"),
  feedRetry: byId("feed-retry"),
  attempts: byId("attempts"),
  reconnects: byId("reconnects"),
  pair: byId("pair"),
  pairError: byId("pair-error"),
  simulated: byId("simulated"),
  base: byId("base"),
  quote: byId("quote"),
  lastPrice: byId("last-price"),
  lastSide: byId("last-side"),
  lastAge: byId("last-age"),
  chart: byId("chart"),
  chartHigh: byId("chart-high"),
  chartLow: byId("chart-low"),
  chartEmpty: byId("chart-empty"),
  chartCaption: byId("chart-caption"),
  trades: byId("trades"),
  tradesEmpty: byId("trades-empty"),
  tradeCount: byId("trade-count"),
  priceUnit: byId("price-unit"),
  amountUnit: byId("amount-unit"),
};

const page = {
  /** The pair shown: its trades are the only ones kept. */
  pair: initialPair(),
  /** The pairs the service follows: pair -> { base, quote }, in the server's order. */
  pairs: new Map(),
  /** Whether the list of pairs came from GET /api/ticker/pairs (the status's keys are a stopgap). */
  pairsLoaded: false,
  /** The selected pair's trades: id -> trade, and id -> its table row. */
  trades: new Map(),
  rows: new Map(),
  /** True once a subscribe ack for the selected pair came (the list holds what the server had). */
  loaded: false,
  /** Pairs we asked to follow on this connection (and did not leave since). */
  joined: new Set(),
  /** Only the answer to the latest `subscribe` counts. */
  request: 0,
  retryTimer: 0,
  /** The latest `status`, and the server's clock minus ours (from its `now`). */
  status: null,
  clockOffset: 0,
  chartFrame: 0,
};

const socket = io({
  path: "/api/ticker/socket.io",
  transports: ["websocket"],
  auth: (cb) => cb(withToken({})),
});

/** #status: our connection to the ticker service (the feed upstream of it is #feed). */
const connection = new Connection(socket);
followSignIn(socket, { connection, errorEvent: "ticker_error", app: "the ticker" });

start();

function start() {
  ui.pair.addEventListener("change", () => choosePair(ui.pair.value));

  socket.on("connect", onConnect);
  socket.on("disconnect", onDisconnect);
  socket.on("connect_error", (err) => connection.connectError(err));
  socket.on("status", onStatus);
  socket.on("trade", onTrade);
  // Refusals also come in the acks, where we act on them; this is for the console.
  socket.on("ticker_error", (refusal) => console.warn("ticker: refused", refusal));

  connection.set("connecting");
  showPairs();
  renderTrades();
  loadPairs();
  setInterval(updateClocks, 1_000);
  new ResizeObserver(() => scheduleChart()).observe(ui.chart);
}

// --- Connection ------------------------------------------------------------------------------

function onConnect() {
  connection.connected();
  // A new connection is a new session on the server: it follows nothing of ours yet.
  page.joined.clear();
  subscribe();
}

function onDisconnect(reason) {
  clearTimeout(page.retryTimer);
  page.joined.clear();
  page.request += 1; // an answer still on its way is for a connection that is gone
  connection.disconnected(reason);
}

// --- Pairs -----------------------------------------------------------------------------------

/** ?pair= first (BTC/USD, btc-usd and btcusd alike), then the last pick, then btcusd. */
function initialPair() {
  const fromUrl = new URLSearchParams(location.search).get("pair");
  if (fromUrl) return normalisePair(fromUrl);
  try {
    return normalisePair(localStorage.getItem(PAIR_KEY) || DEFAULT_PAIR);
  } catch {
    return DEFAULT_PAIR; // storage blocked
  }
}

function normalisePair(value) {
  return value.trim().toLowerCase().replace(/[/_-]/g, "");
}

async function loadPairs() {
  try {
    const response = await fetch("/api/ticker/pairs", { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const body = await response.json();
    const pairs = Array.isArray(body?.pairs) ? body.pairs : [];
    const known = new Map();
    for (const entry of pairs) {
      if (typeof entry?.pair !== "string") continue;
      const [base, quote] = splitPair(entry.pair);
      known.set(entry.pair, {
        base: typeof entry.base === "string" && entry.base ? entry.base : base,
        quote: typeof entry.quote === "string" && entry.quote ? entry.quote : quote,
      });
    }
    if (!known.size) throw new Error("no pairs");
    page.pairs = known;
    page.pairsLoaded = true;
    showPairs();
    if (body.status && !page.status) onStatus(body.status);
  } catch (err) {
    console.warn("ticker: could not load the pairs", err);
    setTimeout(loadPairs, RETRY_MS);
  }
}

/** Until GET /api/ticker/pairs answers, the status's pairs fill the picker. */
function pairsFromStatus(status) {
  if (page.pairsLoaded || !status?.pairs || typeof status.pairs !== "object") return;
  const keys = Object.keys(status.pairs);
  if (!keys.length || keys.every((pair) => page.pairs.has(pair))) return;
  page.pairs = new Map(keys.map((pair) => [pair, pairParts(pair)]));
  showPairs();
}

/** Fills the picker; the selected pair is listed even before we know it is followed. */
function showPairs() {
  const pairs = new Map(page.pairs);
  if (!pairs.has(page.pair)) pairs.set(page.pair, splitPairObject(page.pair));
  const options = [...pairs].map(([pair, { base, quote }]) => {
    const option = element("option", "", quote ? `${upper(base)}/${upper(quote)}` : upper(base));
    option.value = pair;
    return option;
  });
  ui.pair.replaceChildren(...options);
  ui.pair.value = page.pair;
  showPairNames();
}

function showPairNames() {
  const { base, quote } = pairParts(page.pair);
  ui.base.textContent = upper(base);
  ui.quote.textContent = upper(quote);
  ui.priceUnit.textContent = quote ? `(${upper(quote)})` : "";
  ui.amountUnit.textContent = `(${upper(base)})`;
}

function pairParts(pair) {
  return page.pairs.get(pair) ?? splitPairObject(pair);
}

function splitPairObject(pair) {
  const [base, quote] = splitPair(pair);
  return { base, quote };
}

function splitPair(pair) {
  for (const quote of QUOTES) {
    if (pair.endsWith(quote) && pair.length > quote.length) {
      return [pair.slice(0, -quote.length), quote];
    }
  }
  return [pair, ""];
}

function pairLabel(pair) {
  const { base, quote } = pairParts(pair);
  return quote ? `${upper(base)}/${upper(quote)}` : upper(base);
}

function upper(text) {
  return String(text).toUpperCase();
}

/** Another pair: leave the old one, and show only the new one's trades from now on. */
function choosePair(pair) {
  showPairError("");
  if (!pair || pair === page.pair) return;
  page.pair = pair;
  rememberPair(pair);
  clearTrades();
  showPairs();
  subscribe();
}

function rememberPair(pair) {
  const url = new URL(location.href);
  url.searchParams.set("pair", pair);
  history.replaceState(null, "", url);
  try {
    localStorage.setItem(PAIR_KEY, pair);
  } catch {
    // Storage blocked: the URL still says it.
  }
}

function showPairError(message) {
  ui.pairError.textContent = message;
}

// --- Subscribing -----------------------------------------------------------------------------

/**
 * Follows the selected pair, leaving any other: on connecting (again), and on a new pick. The
 * ack's trades are merged into what we hold, so a reconnect loses and doubles nothing.
 */
function subscribe() {
  clearTimeout(page.retryTimer);
  if (!socket.connected) return; // `connect` subscribes
  for (const other of page.joined) {
    if (other !== page.pair) {
      socket.emit("unsubscribe", other);
      page.joined.delete(other);
    }
  }
  const pair = page.pair;
  const request = ++page.request;
  page.joined.add(pair);
  socket.timeout(ACK_TIMEOUT_MS).emit("subscribe", pair, (err, reply) => {
    if (request !== page.request || pair !== page.pair) return;
    if (err) {
      retrySubscribe(RETRY_MS); // no answer: the connection may be half dead; ask again
    } else if (reply?.ok) {
      subscribed(pair, reply);
    } else {
      subscribeRefused(pair, reply ?? {});
    }
  });
}

function retrySubscribe(delay) {
  clearTimeout(page.retryTimer);
  page.retryTimer = setTimeout(subscribe, delay);
}

function subscribed(pair, reply) {
  if (typeof reply.pair === "string" && reply.pair !== pair) {
    // The server's spelling of the pair we asked for.
    page.joined.delete(pair);
    page.joined.add(reply.pair);
    page.pair = reply.pair;
    rememberPair(reply.pair);
    showPairs();
  }
  page.loaded = true;
  addTrades(Array.isArray(reply.trades) ? reply.trades : [], false);
}

function subscribeRefused(pair, refusal) {
  page.joined.delete(pair);
  if (refusal.error === "rate_limited") {
    const wait = Number(refusal.retry_after);
    retrySubscribe(Number.isFinite(wait) && wait > 0 ? wait * 1000 + 100 : RETRY_MS);
    return;
  }
  showPairError(refusal.message || `${pairLabel(pair)} was refused.`);
  if (refusal.error === "unknown_pair") {
    // A pair from an old link or another setup: show one this ticker follows.
    const known = Array.isArray(refusal.pairs) ? refusal.pairs : [...page.pairs.keys()];
    const fallback = known.find((other) => typeof other === "string" && other !== pair);
    if (fallback) {
      page.pair = fallback;
      rememberPair(fallback);
      clearTrades();
      showPairs();
      subscribe();
    }
  }
}

// --- Trades ----------------------------------------------------------------------------------

function onTrade(trade) {
  if (!isTrade(trade) || trade.pair !== page.pair) return; // a pair we just left
  addTrades([trade], true);
}

function clearTrades() {
  page.trades.clear();
  page.rows.clear();
  page.loaded = false;
  ui.trades.replaceChildren();
  renderTrades();
}

/**
 * Merges trades into the list: each id once, newest (highest id) first, MAX_TRADES at most.
 * Trades can come out of order (backfilled ones come late), so each finds its own place.
 */
function addTrades(trades, live) {
  let changed = false;
  for (const trade of trades) {
    if (!isTrade(trade) || trade.pair !== page.pair || page.trades.has(trade.id)) continue;
    page.trades.set(trade.id, trade);
    const row = renderTrade(trade);
    if (live) row.classList.add("fresh");
    page.rows.set(trade.id, row);
    insertRow(row, trade.id);
    changed = true;
  }
  if (page.trades.size > MAX_TRADES) {
    const ids = [...page.trades.keys()].sort((a, b) => b - a);
    for (const id of ids.slice(MAX_TRADES)) {
      page.trades.delete(id);
      page.rows.get(id)?.remove();
      page.rows.delete(id);
    }
  }
  if (changed || !live) renderTrades();
}

/** Rows are in descending id order; a new trade is usually the newest, so look from the top. */
function insertRow(row, id) {
  for (let other = ui.trades.firstElementChild; other; other = other.nextElementSibling) {
    if (Number(other.dataset.id) < id) {
      other.before(row);
      return;
    }
  }
  ui.trades.append(row);
}

function renderTrade(trade) {
  const row = element("tr", "trade");
  row.dataset.id = String(trade.id);
  row.dataset.side = trade.side;
  row.dataset.backfilled = String(Boolean(trade.backfilled));
  row.classList.add(trade.side);

  const when = new Date(trade.ts);
  const timeCell = element("td", "col-time");
  const time = element("time", "", formatClock(when));
  time.dateTime = when.toISOString();
  time.title = `${when.toLocaleString()} · trade ${trade.id}`;
  timeCell.append(time);
  if (trade.backfilled) {
    const tag = element("span", "tag backfilled", "backfilled");
    tag.title = "Missed while the feed was down, and fetched afterwards from Bitstamp's history";
    timeCell.append(" ", tag);
  }

  const sideCell = element("td", "col-side");
  sideCell.append(sideLabel(trade.side));

  const priceCell = element("td", "col-price price-cell", formatDecimal(trade.price));
  const amountCell = element("td", "col-amount");
  amountCell.append(...amountParts(trade.amount));

  row.append(timeCell, sideCell, priceCell, amountCell);
  return row;
}

/** "▲ Buy" or "▼ Sell": a word and an arrow, not only a colour. */
function sideLabel(side) {
  const label = element("span", `side ${side}`);
  label.dataset.side = side;
  label.append(element("span", "arrow", SIDE_ARROW[side]), element("span", "word", SIDE_TEXT[side]));
  label.firstChild.setAttribute("aria-hidden", "true");
  return label;
}

/** The amount exactly as sent; its trailing zeros dimmed, so the digits that count stand out. */
function amountParts(amount) {
  const match = /^(\d+\.\d*?)(0+)$/.exec(amount);
  if (!match) return [formatDecimal(amount)];
  return [formatDecimal(match[1]), element("span", "zeros", match[2])];
}

function renderTrades() {
  const newest = newestTrade();
  const count = page.trades.size;
  ui.tradeCount.textContent = String(count);
  ui.tradesEmpty.hidden = count > 0;
  ui.tradesEmpty.textContent = page.loaded
    ? `No ${pairLabel(page.pair)} trades yet: they show here as they happen.`
    : "Loading the trades…";

  if (newest) {
    ui.lastPrice.textContent = formatDecimal(newest.price);
    ui.lastPrice.classList.remove("placeholder");
    ui.lastPrice.dataset.side = newest.side;
    ui.lastPrice.dataset.id = String(newest.id);
    ui.lastSide.replaceChildren(sideLabel(newest.side), ` ${formatAmount(newest.amount)}`);
    ui.lastSide.dataset.side = newest.side;
    ui.lastSide.hidden = false;
    document.title = `${formatDecimal(newest.price)} ${pairLabel(page.pair)} · Switchboard ticker`;
  } else {
    ui.lastPrice.textContent = "—";
    ui.lastPrice.classList.add("placeholder");
    delete ui.lastPrice.dataset.side;
    delete ui.lastPrice.dataset.id;
    ui.lastSide.hidden = true;
    ui.lastSide.replaceChildren();
    document.title = `${pairLabel(page.pair)} · Switchboard ticker`;
  }
  updateClocks();
  scheduleChart();
}

function formatAmount(amount) {
  return `${formatDecimal(amount)} ${upper(pairParts(page.pair).base)}`;
}

/** The trade with the highest id: the last one on the exchange, whenever it reached us. */
function newestTrade() {
  let newest = null;
  for (const trade of page.trades.values()) {
    if (!newest || trade.id > newest.id) newest = trade;
  }
  return newest;
}

function isTrade(trade) {
  return (
    trade !== null &&
    typeof trade === "object" &&
    typeof trade.pair === "string" &&
    Number.isSafeInteger(trade.id) &&
    typeof trade.price === "string" &&
    typeof trade.amount === "string" &&
    (trade.side === "buy" || trade.side === "sell") &&
    Number.isFinite(trade.ts)
  );
}

// --- Chart -----------------------------------------------------------------------------------

function scheduleChart() {
  if (page.chartFrame) return;
  page.chartFrame = requestAnimationFrame(() => {
    page.chartFrame = 0;
    drawChart();
  });
}

/**
 * The prices of the trades we hold, oldest on the left, one step per trade. parseFloat is for
 * plotting only: the labels show the exact strings of the highest and lowest trades.
 */
function drawChart() {
  const width = ui.chart.clientWidth;
  const height = ui.chart.clientHeight;
  const trades = [...page.trades.values()].sort((a, b) => a.id - b.id);
  const points = trades
    .map((trade) => ({ trade, price: parseFloat(trade.price) }))
    .filter(({ price }) => Number.isFinite(price));
  ui.chartEmpty.hidden = points.length > 0;
  ui.chartHigh.hidden = ui.chartLow.hidden = ui.chartCaption.hidden = points.length === 0;
  if (!points.length || !width || !height) {
    ui.chart.replaceChildren();
    return;
  }
  ui.chart.setAttribute("viewBox", `0 0 ${width} ${height}`);

  let high = points[0];
  let low = points[0];
  for (const point of points) {
    if (point.price > high.price) high = point;
    if (point.price < low.price) low = point;
  }
  const pad = { top: 14, bottom: 14, left: 4, right: 10 };
  const span = high.price - low.price || Math.abs(high.price) * 0.001 || 1;
  const middle = (high.price + low.price) / 2;
  const top = high.price === low.price ? middle + span / 2 : high.price;
  const range = high.price === low.price ? span : high.price - low.price;
  const innerW = width - pad.left - pad.right;
  const innerH = height - pad.top - pad.bottom;
  const x = (i) => pad.left + (points.length === 1 ? innerW : (i / (points.length - 1)) * innerW);
  const y = (price) => pad.top + ((top - price) / range) * innerH;

  const coords = points.map(({ price }, i) => `${x(i).toFixed(1)},${y(price).toFixed(1)}`);
  const baseline = (height - pad.bottom + 1).toFixed(1);

  const area = document.createElementNS(SVG_NS, "polygon");
  area.setAttribute("class", "chart-fill");
  area.setAttribute(
    "points",
    `${x(0).toFixed(1)},${baseline} ${coords.join(" ")} ${x(points.length - 1).toFixed(1)},${baseline}`,
  );
  const line = document.createElementNS(SVG_NS, "polyline");
  line.setAttribute("class", "chart-line");
  line.setAttribute("points", coords.join(" "));

  const gridHigh = gridLine(y(high.price), width);
  const gridLow = gridLine(y(low.price), width);

  const last = points[points.length - 1];
  const dot = document.createElementNS(SVG_NS, "circle");
  dot.setAttribute("class", `chart-dot ${last.trade.side}`);
  dot.setAttribute("cx", x(points.length - 1).toFixed(1));
  dot.setAttribute("cy", y(last.price).toFixed(1));
  dot.setAttribute("r", "4");

  ui.chart.replaceChildren(gridHigh, gridLow, area, line, dot);
  ui.chartHigh.textContent = `high ${formatDecimal(high.trade.price)}`;
  ui.chartLow.textContent = `low ${formatDecimal(low.trade.price)}`;
  ui.chartHigh.style.top = `${y(high.price)}px`;
  ui.chartLow.style.top = `${y(low.price)}px`;
  ui.chartCaption.textContent =
    `${pairLabel(page.pair)}: the last ${points.length} ` +
    `${points.length === 1 ? "trade" : "trades"}, oldest on the left`;
}

function gridLine(y, width) {
  const line = document.createElementNS(SVG_NS, "line");
  line.setAttribute("class", "chart-grid");
  line.setAttribute("x1", "0");
  line.setAttribute("x2", String(width));
  line.setAttribute("y1", y.toFixed(1));
  line.setAttribute("y2", y.toFixed(1));
  return line;
}

// --- The feed's status -----------------------------------------------------------------------

function onStatus(status) {
  if (status === null || typeof status !== "object") return;
  page.status = status;
  if (Number.isFinite(status.now)) page.clockOffset = status.now - Date.now();
  pairsFromStatus(status);

  const state = Object.hasOwn(FEED_TEXT, status.state) ? status.state : "unknown";
  const simulated = status.simulated === true;
  ui.feed.dataset.state = state;
  ui.feed.dataset.simulated = String(simulated);
  setText(ui.feedSource, simulated ? "Simulated feed:" : "Bitstamp feed:");
  setText(ui.feedState, FEED_TEXT[state]);
  // A live region: unchanged text is not said again.
  setText(ui.feedDetail, feedDetail(state, status, simulated));

  ui.simulated.hidden = !simulated;

  // While it is down: how many times it tried (the count starts again once it is back).
  const attempts = count(status.attempts);
  const down = state !== "connected" && state !== "unknown";
  setText(ui.attempts, down && attempts ? `Tried ${times(attempts)}` : "");
  // While it is up: how many times it came back, and why it last had to.
  const reconnects = count(status.reconnects);
  const last = Object.hasOwn(LAST_CAUSE_TEXT, status.last_cause)
    ? LAST_CAUSE_TEXT[status.last_cause]
    : "";
  setText(
    ui.reconnects,
    !down && reconnects ? `Reconnected ${times(reconnects)}${last ? ` (last: ${last})` : ""}` : "",
  );
  updateClocks();
}

/** The feed's state in a sentence: what is going on, and that we are on it. */
function feedDetail(state, status, simulated) {
  const pairs =
    status.pairs && typeof status.pairs === "object" ? Object.keys(status.pairs).length : 0;
  const following = pairs ? `following ${pairs} ${pairs === 1 ? "pair" : "pairs"}` : "";
  if (state === "connected") {
    if (simulated) {
      const made = "Trades made up by a local simulator, not Bitstamp's";
      return following ? `${made}: ${following}.` : `${made}.`;
    }
    return following ? `Live trades, ${following}.` : "Live trades.";
  }
  if (state === "unknown") return "";
  const said = Object.hasOwn(CAUSE_TEXT, status.cause)
    ? CAUSE_TEXT[status.cause]
    : STATE_TEXT[state];
  if (said.endsWith("…")) return said;
  return state === "reconnecting" ? `${said}; reconnecting…` : `${said}.`;
}

function count(value) {
  return Number.isSafeInteger(value) && value > 0 ? value : 0;
}

function times(n) {
  return n === 1 ? "once" : n === 2 ? "twice" : `${n} times`;
}

/** Everything that says "ago" or "in", once a second, on the server's clock. */
function updateClocks() {
  const now = Date.now() + page.clockOffset;
  const status = page.status;

  const newest = newestTrade();
  let lastAt = newest ? newest.ts : null;
  const reported = status?.pairs?.[page.pair]?.last_trade_at;
  if (Number.isFinite(reported) && (lastAt === null || reported > lastAt)) lastAt = reported;
  ui.lastAge.textContent =
    lastAt === null
      ? page.loaded
        ? "no trade yet"
        : "waiting for trades…"
      : `last trade ${formatAge(now - lastAt)} ago`;

  if (!status) return;
  ui.feedSince.textContent = Number.isFinite(status.since)
    ? `for ${formatAge(now - status.since)}`
    : "";
  if (Number.isFinite(status.retry_at) && status.state !== "connected") {
    const wait = status.retry_at - now;
    ui.feedRetry.textContent =
      wait >= 1000 ? `Next attempt in ${formatAge(wait, Math.ceil)}` : "Trying again now…";
    ui.feedRetry.hidden = false;
  } else {
    ui.feedRetry.textContent = "";
    ui.feedRetry.hidden = true;
  }
}

// --- Formatting ------------------------------------------------------------------------------

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

/** An exact decimal string with thousands separators in its integer part, never via a float. */
function formatDecimal(value) {
  if (typeof value !== "string") return "—";
  const match = DECIMAL.exec(value);
  if (!match) return value;
  const [, whole, fraction = ""] = match;
  return whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",") + fraction;
}

/** "3 s", "4 min", "2 h", "3 d"; a countdown rounds its seconds up. */
function formatAge(ms, round = Math.floor) {
  const seconds = Math.max(0, round(ms / 1000));
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h`;
  return `${Math.floor(hours / 24)} d`;
}

function formatClock(when) {
  return when.toLocaleTimeString(undefined, {
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    hourCycle: "h23",
  });
}
