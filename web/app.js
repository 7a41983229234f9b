/* braid's web UI: one page over the server's REST API (docs/openapi.json)
 * and its event stream. No framework and no build step: the server embeds
 * these files. Every text from the server goes in through textContent, never
 * as HTML. The token is kept in this browser's localStorage. */
'use strict';

const STATES = ['waiting', 'blocked', 'queued', 'running', 'post', 'done', 'error',
  'cancelled', 'dead'];
const $ = (id) => document.getElementById(id);

/* ---- the token and the API ---- */

let token = localStorage.getItem('braid.token') || '';

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

/* body: a value sent as JSON, or (raw set) a JSON text sent as it is, so
 * that the line and column an error names are the user's own. */
async function api(method, path, body, raw) {
  const opts = { method, headers: { Authorization: 'Bearer ' + token } };
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = raw ? body : JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, opts);
  } catch (e) {
    throw new ApiError(0, 'the server does not answer (' + e.message + ')');
  }
  if (res.status === 401) {
    showLogin(token ? 'The server does not know this token.' : '');
    throw new ApiError(401, 'a token is needed');
  }
  const type = res.headers.get('Content-Type') || '';
  const data = type.startsWith('application/json') ? await res.json() : await res.text();
  if (!res.ok) throw new ApiError(res.status, (data && data.error) || res.statusText);
  return { data, headers: res.headers };
}

const get = async (path) => (await api('GET', path)).data;

function showLogin(message) {
  $('login').hidden = false;
  $('login-error').textContent = message || '';
  $('token-input').focus();
}

/* ---- small DOM helpers ---- */

/* The draw an element was made in (see refresh): a redraw reuses the
 * elements on the page in place of the ones it just made, and keeps as
 * they are the ones made before it (a view's forms). */
let drawGen = 0;

/* Handlers are set as properties (onclick...), one per event, and named
 * in e.on, so that a redraw can move them to the element it keeps. */
function handle(e, k, v) {
  e[k] = v;
  (e.on || (e.on = [])).push(k);
}

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  e.gen = drawGen;
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) handle(e, k, v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const k of kids.flat(Infinity)) {
    if (k === undefined || k === null || k === false) continue;
    e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return e;
}

const link = (href, text) => el('a', { href }, text);
const stateTag = (s) => el('span', { class: 'state st-' + s }, s);

function when(ms) {
  if (!ms) return '';
  const d = new Date(ms);
  const age = (Date.now() - ms) / 1000;
  if (age < 60) return Math.max(0, Math.round(age)) + ' s ago';
  if (age < 3600) return Math.round(age / 60) + ' min ago';
  return d.toLocaleString();
}

function duration(s) {
  if (s === undefined || s === null || s < 0) return '';
  if (s < 60) return s.toFixed(1) + ' s';
  if (s < 3600) return Math.floor(s / 60) + ' min ' + Math.round(s % 60) + ' s';
  return Math.floor(s / 3600) + ' h ' + Math.round((s % 3600) / 60) + ' min';
}

function flash(message, bad) {
  const f = $('flash');
  f.textContent = message;
  f.className = 'flash' + (bad ? ' bad' : '');
  f.hidden = false;
  clearTimeout(flash.timer);
  flash.timer = setTimeout(() => { f.hidden = true; }, bad ? 8000 : 3000);
}

/* A table; a heading "#name" is a column of numbers (right-aligned). It
 * comes in a box that scrolls sideways when the window is too narrow for
 * it, so that the page itself never does. */
function table(head, rows) {
  return el('div', { class: 'table-box' }, el('table', {},
    el('thead', {}, el('tr', {}, head.map((h) =>
      el('th', { class: h.startsWith('#') ? 'num' : '' }, h.replace(/^#/, ''))))),
    el('tbody', {}, rows)));
}

/* Counts by state: their sum, and as words ("queued 3, done 12"). */
const countsTotal = (counts) => STATES.reduce((n, s) => n + (counts[s] || 0), 0);
const countsText = (counts) => STATES.filter((s) => counts[s])
  .map((s) => s + ' ' + counts[s]).join(', ');

/* A state bar: one coloured part per state, as wide as its share. */
function stateBar(counts) {
  const total = countsTotal(counts);
  const bar = el('div', { class: 'bar', title: countsText(counts) });
  for (const s of STATES) {
    if (!counts[s]) continue;
    const part = el('span', { class: 'st-' + s });
    part.style.width = (100 * counts[s] / total).toFixed(2) + '%'; /* CSP: no style="" */
    bar.append(part);
  }
  return bar;
}

/* ---- a graph as a diagram: nodes in layers, wires downwards ---- */

const SVG = 'http://www.w3.org/2000/svg';

function svg(tag, attrs, ...kids) {
  const e = document.createElementNS(SVG, tag);
  e.gen = drawGen;
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === 'class') e.setAttribute('class', v);
    else if (k.startsWith('on')) handle(e, k, v);
    else e.setAttribute(k, v);
  }
  for (const k of kids.flat(Infinity))
    if (k !== undefined && k !== null) e.append(k instanceof Node ? k : String(k));
  return e;
}

/* "node.port" or "node" (its first port); wires come as {from, to} (or [from, to]) */
function endpoint(s) {
  const dot = String(s).indexOf('.');
  if (dot < 0) return { node: String(s), port: '' };
  return { node: s.slice(0, dot), port: s.slice(dot + 1) };
}

/* Layers: a node sits one below its lowest predecessor. A wire that closes a
 * loop (found by a depth-first walk from the start) is drawn but not
 * followed, so every loop still has a top. Within a layer, nodes go under
 * the middle of their predecessors. */
function layout(names, wires, start) {
  const out = new Map(names.map((n) => [n, []]));
  const hasIn = new Set();
  const edges = [];
  for (const w of wires) {
    const [from, to] = Array.isArray(w) ? w : [w && w.from, w && w.to];
    if (typeof from !== 'string' || typeof to !== 'string') continue;
    const a = endpoint(from), b = endpoint(to);
    if (!out.has(a.node) || !out.has(b.node)) continue;
    const e = { from: a.node, fport: a.port, to: b.node, tport: b.port, back: false };
    edges.push(e);
    out.get(a.node).push(e);
    hasIn.add(b.node);
  }
  const seen = new Set(), onPath = new Set(), order = [];
  const walk = (n) => { /* iterative: a long chain must not overflow the stack */
    const stack = [[n, 0]];
    seen.add(n);
    onPath.add(n);
    while (stack.length) {
      const top = stack[stack.length - 1];
      const e = out.get(top[0])[top[1]++];
      if (!e) { onPath.delete(top[0]); order.push(top[0]); stack.pop(); continue; }
      if (onPath.has(e.to)) e.back = true;
      else if (!seen.has(e.to)) { seen.add(e.to); onPath.add(e.to); stack.push([e.to, 0]); }
    }
  };
  const roots = [start, ...names.filter((n) => !hasIn.has(n)), ...names];
  for (const r of roots) if (out.has(r) && !seen.has(r)) walk(r);
  const layer = new Map(names.map((n) => [n, 0]));
  for (const n of order.reverse()) /* predecessors first */
    for (const e of out.get(n))
      if (!e.back) layer.set(e.to, Math.max(layer.get(e.to), layer.get(n) + 1));
  const rows = [];
  for (const n of order) (rows[layer.get(n)] = rows[layer.get(n)] || []).push(n);
  const pos = new Map();
  rows.forEach((row, y) => {
    const want = (n) => {
      const xs = edges.filter((e) => e.to === n && !e.back && pos.has(e.from))
        .map((e) => pos.get(e.from).x);
      return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : Infinity;
    };
    const keyed = row.map((n, i) => ({ n, k: want(n), i }));
    keyed.sort((a, b) => (a.k - b.k) || (a.i - b.i));
    keyed.forEach(({ n }, x) => pos.set(n, { x: x - (keyed.length - 1) / 2, y }));
  });
  return { edges, pos, rows: rows.length };
}

const BOX_W = 176, BOX_H = 50, GAP_X = 28, GAP_Y = 44, LANE = 16;

function diagram(g, counts, graphId) {
  const nodes = g.nodes || [];
  const names = nodes.map((n) => n.name);
  if (!names.length) return null;
  const start = g.start && typeof g.start === 'object' ? g.start.node : g.start;
  const { edges, pos, rows } = layout(names, g.wires || [], start);
  /* A wire to the next layer goes straight down. One that skips layers
   * goes round on the left, one that closes a loop round on the right, each
   * in a lane of its own where their spans overlap. */
  const side = { left: [], right: [] };
  for (const e of edges) {
    const a = pos.get(e.from).y, b = pos.get(e.to).y;
    e.side = e.back ? 'right' : b - a > 1 ? 'left' : null;
    if (!e.side) continue;
    const lo = Math.min(a, b), hi = Math.max(a, b), lanes = side[e.side];
    e.lane = lanes.findIndex((last) => last < lo);
    if (e.lane < 0) e.lane = lanes.length;
    lanes[e.lane] = hi;
  }
  let minX = 0, maxX = 0;
  for (const p of pos.values()) { minX = Math.min(minX, p.x); maxX = Math.max(maxX, p.x); }
  const left = side.left.length * LANE + (side.left.length ? 8 : 0);
  const width = left + (maxX - minX + 1) * (BOX_W + GAP_X) + side.right.length * LANE;
  const height = rows * (BOX_H + GAP_Y) - GAP_Y + 16;
  const cx = (n) => left + (pos.get(n).x - minX) * (BOX_W + GAP_X) + GAP_X / 2 + BOX_W / 2;
  const top = (n) => pos.get(n).y * (BOX_H + GAP_Y) + 8;
  const label = (text, x, y, anchor) => text && text !== 'out' && text !== 'in'
    ? svg('text', { x, y, class: 'port', 'text-anchor': anchor }, text) : null;
  const wires = edges.map((e) => {
    let d, from, to;
    if (e.side) { /* out of a side, along the lane, into the same side */
      const dir = e.side === 'left' ? -1 : 1, r = 6;
      const x1 = cx(e.from) + dir * BOX_W / 2, x2 = cx(e.to) + dir * BOX_W / 2;
      const y1 = top(e.from) + BOX_H / 2, y2 = top(e.to) + BOX_H / 2, v = y2 > y1 ? 1 : -1;
      const lx = e.side === 'left' ? left - (e.lane + 1) * LANE + 8
        : width - (e.lane + 1) * LANE + 8;
      d = `M${x1},${y1} H${lx - dir * r} Q${lx},${y1} ${lx},${y1 + v * r} ` +
        `V${y2 - v * r} Q${lx},${y2} ${lx - dir * r},${y2} H${x2 + dir * 2}`;
      const anchor = e.side === 'left' ? 'end' : 'start';
      from = label(e.fport, x1 + dir * 4, y1 - 4, anchor);
      to = label(e.tport, x2 + dir * 4, y2 + 12, anchor);
    } else {
      const x1 = cx(e.from), y1 = top(e.from) + BOX_H, x2 = cx(e.to), y2 = top(e.to);
      const m = (y1 + y2) / 2;
      d = `M${x1},${y1} C${x1},${m} ${x2},${m} ${x2},${y2 - 2}`;
      from = label(e.fport, x1 + 4, y1 + 12, 'start');
      to = label(e.tport, x2 - 4, y2 - 6, 'end');
    }
    return svg('g', { class: 'wire' + (e.back ? ' back' : '') },
      svg('path', { d, 'marker-end': 'url(#arrow)' }), from, to);
  });
  const boxes = nodes.map((n) => {
    const c = counts[n.name] || {};
    const total = countsTotal(c);
    const x = cx(n.name) - BOX_W / 2, y = top(n.name);
    const parts = [];
    let at = 0;
    for (const s of STATES) {
      if (!c[s]) continue;
      const w = (BOX_W - 16) * c[s] / total;
      parts.push(svg('rect', { x: x + 8 + at, y: y + BOX_H - 10, width: w, height: 4,
        class: 'st-' + s }));
      at += w;
    }
    const said = countsText(c);
    const name = n.name.length > 21 ? n.name.slice(0, 20) + '\u2026' : n.name;
    const busy = ['running', 'queued', 'error'].filter((s) => c[s]).map((s) => c[s] + ' ' + s);
    const go = () => { location.hash = '#/tasks?graph=' + graphId + '&node=' +
      encodeURIComponent(n.name); };
    return svg('g', { class: 'node' + (c.error ? ' failing' : ''), onclick: go },
      svg('title', {}, n.name + ' (' + n.type + ')' + (said ? ': ' + said : ': no task')),
      svg('rect', { x, y, width: BOX_W, height: BOX_H, rx: 5, class: 'box' }),
      svg('text', { x: x + 8, y: y + 16, class: 'name' }, name),
      svg('text', { x: x + 8, y: y + 30, class: 'type' },
        n.type + (total ? ' \u00b7 ' + (busy.length ? busy.join(', ')
          : total + (total === 1 ? ' task' : ' tasks')) : '')),
      svg('rect', { x: x + 8, y: y + BOX_H - 10, width: BOX_W - 16, height: 4, class: 'track' }),
      parts);
  });
  return svg('svg', { class: 'diagram', width, height, viewBox: `0 0 ${width} ${height}`,
    role: 'img', 'aria-label': 'the graph\'s nodes and wires' },
  svg('defs', {}, svg('marker', { id: 'arrow', viewBox: '0 0 8 8', refX: 7, refY: 4,
    markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
  svg('path', { d: 'M0,0 L8,4 L0,8 z', class: 'head' }))),
  wires, boxes);
}

/* ---- views: each draws into main and says how to refresh itself ---- */

let view = null; /* { draw(), task?: id } */
let drawn = null; /* the view main shows */

function route() {
  const hash = location.hash || '#/';
  const [path, query] = hash.slice(1).split('?');
  const q = new URLSearchParams(query || '');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  for (const a of document.querySelectorAll('header nav a'))
    a.classList.toggle('here', a.getAttribute('href').split('?')[0] === '#/' + (parts[0] || ''));
  if (parts[0] === 'graph' && parts[1]) return show(graphView(parts[1], q));
  if (parts[0] === 'tasks') return show(tasksView(q));
  if (parts[0] === 'task' && parts[1]) return show(taskView(parts[1]));
  if (parts[0] === 'workers') return show(workersView());
  if (parts[0] === 'tokens') return show(tokensView());
  return show(graphsView(q));
}

function show(v) {
  view = v;
  refresh();
}

/* A field of main the user is typing in (or a list they opened). */
function editing() {
  const a = document.activeElement;
  return a && a !== document.body && $('main').contains(a) &&
    a.matches('input, textarea, select');
}

/* Puts kids in parent in this order. Where parent already has a node like
 * the new one at that place (same tag, or both text), that node stays and
 * takes the new one's attributes, handlers, text and children: a button
 * or a row that looks the same is the same element after a redraw, so a
 * click that lands as the page is drawn again is not lost on a node just
 * taken away (and the scroll and a selection stay). Nodes in kept (made
 * before this draw: a view's forms) are put in place as they are, never
 * made into another. Fields made at each draw are replaced, not changed:
 * a field's value is not its attribute once the user has touched it. */
function morph(parent, kids, kept) {
  let i = 0;
  for (const k of kids) {
    const old = parent.childNodes[i++];
    if (old === k) continue;
    if (old && alike(old, k) && !kept.has(old) && !kept.has(k)) patch(old, k, kept);
    else parent.insertBefore(k, old || null);
  }
  while (parent.childNodes.length > i) parent.lastChild.remove();
}

function alike(a, b) {
  if (a.nodeType !== b.nodeType) return false;
  if (a.nodeType === Node.TEXT_NODE) return true;
  return a.nodeType === Node.ELEMENT_NODE && a.namespaceURI === b.namespaceURI &&
    a.tagName === b.tagName && !a.matches('input, select, textarea');
}

function patch(old, k, kept) {
  if (old.nodeType === Node.TEXT_NODE) {
    if (old.data !== k.data) old.data = k.data;
    return;
  }
  for (const a of [...old.attributes])
    if (a.name !== 'style' && !k.hasAttribute(a.name)) old.removeAttribute(a.name);
  for (const a of k.attributes)
    if (a.name !== 'style' && old.getAttribute(a.name) !== a.value) old.setAttribute(a.name, a.value);
  /* CSP: no style="" is set, but the style object may be */
  if (old.style.cssText !== k.style.cssText) old.style.cssText = k.style.cssText;
  for (const h of old.on || []) old[h] = null;
  for (const h of k.on || []) old[h] = k[h];
  old.on = k.on;
  morph(old, [...k.childNodes], kept);
}

/* The nodes of a new draw made before it: those a view keeps. */
function keptIn(kids, kept = new Set()) {
  for (const k of kids) {
    if (k.nodeType !== Node.ELEMENT_NODE) continue;
    if (k.gen !== drawGen) kept.add(k);
    else keptIn(k.childNodes, kept);
  }
  return kept;
}

/* Draws the view again. The same view is not drawn again under the user's
 * typing (events redraw it every few seconds on a busy farm): that waits
 * until the field loses focus. A view's forms are made once and kept, so a
 * redraw keeps what is typed in them; the rest of a redraw goes into the
 * elements already there (morph). Another view replaces main's content. */
let refreshing = false, again = false, held = false;
async function refresh() {
  if (!view) return;
  if (view === drawn && editing()) { held = true; return; }
  if (refreshing) { again = true; return; }
  refreshing = true;
  const v = view;
  drawGen++;
  try {
    const content = await v.draw();
    if (v === view && v === drawn && editing()) held = true; /* typed in while drawing */
    else if (v === view) {
      const kids = [content].flat(Infinity).filter((k) => k)
        .map((k) => (k instanceof Node ? k : document.createTextNode(String(k))));
      if (v === drawn) morph($('main'), kids, keptIn(kids));
      else $('main').replaceChildren(...kids);
      drawn = v;
    }
  } catch (e) {
    if (v === view && e.status !== 401) {
      $('main').replaceChildren(el('p', { class: 'error' }, e.message));
      drawn = v;
    }
  }
  refreshing = false;
  if (again) { again = false; refresh(); }
}
$('main').addEventListener('focusout', () => {
  if (held) { held = false; setTimeout(refresh, 0); } /* once focus has moved on */
});

function graphsView(q) {
  const upload = uploadForm();
  let editing = q.get('edit'); /* a graph to edit: read into the form once */
  return {
    async draw() {
      if (editing) {
        const name = editing, v = q.get('version');
        editing = null;
        const g = await get('/api/v1/graphs/' + encodeURIComponent(name) +
          (v ? '?version=' + encodeURIComponent(v) : ''));
        upload.edit(JSON.stringify(g.graph, null, 2) + '\n', 'version ' + g.version + ' of ' +
          g.name + ': change it and Upload, for a new version');
      }
      const [graphs, summary] = await Promise.all([get('/api/v1/graphs'),
        get('/api/v1/summary')]);
      const total = summary.total;
      const rows = graphs.graphs.map((g) => el('tr', { class: 'click', onclick: () => {
        location.hash = '#/graph/' + encodeURIComponent(g.name); } },
      el('td', {}, link('#/graph/' + encodeURIComponent(g.name), g.name)),
      el('td', { class: 'num' }, g.version), el('td', { class: 'num' }, g.versions),
      el('td', { class: 'num' }, g.id), el('td', { class: 'muted' }, when(g.created_ms))));
      return [el('h1', {}, 'Graphs'),
        el('div', { class: 'toolbar' }, el('span', { class: 'muted' }, 'every task:'),
          stateBar(total), STATES.filter((s) => total[s]).map((s) =>
            [link('#/tasks?state=' + s, s + ' ' + total[s]), ' '])),
        rows.length ? table(['graph', '#version', '#versions', '#id', 'uploaded'], rows)
          : el('p', { class: 'muted' }, 'No graph yet: upload one below, or braid submit ' +
            'GRAPH.json'),
        upload.show(graphs.graphs)];
    },
  };
}

/* Marks a form's field as wrong, with the message beside it, and puts the
 * cursor there (at the position a JSON error names). */
function fieldBad(field, box, message, at) {
  box.textContent = message;
  field.setAttribute('aria-invalid', 'true');
  field.focus();
  if (at !== undefined) field.setSelectionRange(at, at);
}

function fieldGood(field, box) {
  box.textContent = '';
  field.removeAttribute('aria-invalid');
}

/* The line and column a message names as "graph:LINE:COLUMN: ..." (the
 * server's graph errors), as a position in text; undefined when none. */
function positionOf(text, message) {
  const m = /^graph:(\d+):(\d+):/.exec(message);
  if (!m) return undefined;
  let at = 0;
  for (let line = 1; line < Number(m[1]); line++) {
    const nl = text.indexOf('\n', at);
    if (nl < 0) return undefined;
    at = nl + 1;
  }
  return Math.min(at + Number(m[2]) - 1, text.length);
}

/* The Upload form of the graphs page (POST /api/v1/graphs), made once per
 * view like the Submit form: a graph file read into the text field, or a
 * graph pasted there. Text that is not a JSON object is never sent; what is
 * sent is the text itself, so the server's refusal (shown as it comes,
 * with its line and column) points into it. */
function uploadForm() {
  let latest = new Map(); /* a graph's name: the id of its latest version */
  const file = el('input', { id: 'upload-file', type: 'file', accept: '.json,application/json' });
  const from = el('span', { class: 'muted' });
  const text = el('textarea', { id: 'upload-text', rows: 10, spellcheck: 'false',
    placeholder: '{"name": ..., "nodes": [...], "wires": [...]}',
    'aria-describedby': 'upload-error' });
  const error = el('div', { id: 'upload-error', class: 'error message' });
  const button = el('button', { type: 'submit' }, 'Upload');
  const made = el('ul', { id: 'uploaded', class: 'submitted' });
  text.addEventListener('input', () => { fieldGood(text, error); from.textContent = ''; });
  file.addEventListener('change', async () => {
    const f = file.files[0];
    if (!f) return;
    try {
      text.value = await f.text();
      fieldGood(text, error);
      from.textContent = 'read from ' + f.name;
    } catch (err) {
      fieldBad(file, error, 'Cannot read ' + f.name + ': ' + err.message);
    }
  });

  const send = async (e) => {
    e.preventDefault();
    let g;
    try {
      g = JSON.parse(text.value);
    } catch (err) {
      const at = /at position (\d+)/.exec(err.message);
      return fieldBad(text, error, 'Not JSON: ' + err.message, at ? Number(at[1]) : undefined);
    }
    if (g === null || typeof g !== 'object' || Array.isArray(g))
      return fieldBad(text, error, 'A graph is a JSON object: {"name": ..., "nodes": [...]}');
    fieldGood(text, error);
    button.disabled = true; /* one click, one upload */
    const sent = text.value;
    try {
      const r = (await api('POST', '/api/v1/graphs', sent, true)).data;
      const same = latest.get(r.name) === r.id;
      const href = '#/graph/' + encodeURIComponent(r.name) + '?version=' + r.version;
      made.prepend(el('li', {}, link(href, r.name + ' version ' + r.version),
        ' (graph id ' + r.id + ')', same ? ' unchanged: the same as its latest version' : ''));
      flash('graph ' + r.name + (same ? ' unchanged, version ' : ' uploaded, version ') +
        r.version);
      latest.set(r.name, r.id);
    } catch (err) {
      if (err.status !== 401) fieldBad(text, error, err.message, positionOf(sent, err.message));
    }
    button.disabled = false;
    refresh();
  };

  const box = el('section', { class: 'upload' }, el('h2', {}, 'Upload a graph'),
    el('p', { class: 'muted' }, 'A new graph, or a new version of one: a graph of the same ' +
      'name whose content changed. Tasks already made keep their version.'),
    el('form', { id: 'upload-form', novalidate: true, onsubmit: send },
      el('label', { for: 'upload-file' }, 'file'), el('div', {}, file, ' ', from),
      el('label', { for: 'upload-text' }, 'graph'), el('div', {}, text, error),
      el('span'), el('div', {}, button)),
    made);
  let focus = false;
  return {
    show(graphs) {
      latest = new Map(graphs.map((g) => [g.name, g.id]));
      /* once the page shows it (the view is drawn right after this) */
      if (focus) setTimeout(() => { text.focus(); text.setSelectionRange(0, 0); });
      focus = false;
      return box;
    },
    /* a graph's text to edit (a graph page's Edit): in the field, the cursor there */
    edit(graphText, said) {
      text.value = graphText;
      fieldGood(text, error);
      from.textContent = said;
      focus = true;
    },
  };
}

/* The Submit form of a graph's page (POST /api/v1/submissions), made once
 * per view so that a redraw keeps what is typed; show(g) points it at the
 * version the page shows. The attributes are checked here: text that is not
 * a JSON object is never sent. */
function submitForm() {
  let g = null;
  const attrs = el('textarea', { id: 'submit-attrs', rows: 6, spellcheck: 'false',
    'aria-describedby': 'submit-attrs-error' });
  const attrsError = el('div', { id: 'submit-attrs-error', class: 'error' });
  const node = el('select', { id: 'submit-node' });
  const name = el('input', { id: 'submit-name', type: 'text', placeholder: 'the graph\'s name' });
  const priority = el('input', { id: 'submit-priority', type: 'number', step: '1', value: '0',
    'aria-describedby': 'submit-priority-error' });
  const priorityError = el('span', { id: 'submit-priority-error', class: 'error' });
  const group = el('input', { id: 'submit-group', type: 'text', placeholder: 'none' });
  const button = el('button', { type: 'submit' }, 'Submit');
  const target = el('span', { class: 'muted' });
  const made = el('ul', { id: 'submitted', class: 'submitted' });
  attrs.addEventListener('input', () => fieldGood(attrs, attrsError));
  priority.addEventListener('input', () => fieldGood(priority, priorityError));

  const send = async (e) => {
    e.preventDefault();
    let a;
    try {
      a = attrs.value.trim() ? JSON.parse(attrs.value) : {};
    } catch (err) {
      const at = /at position (\d+)/.exec(err.message);
      return fieldBad(attrs, attrsError, 'Not JSON: ' + err.message,
        at ? Number(at[1]) : undefined);
    }
    if (a === null || typeof a !== 'object' || Array.isArray(a))
      return fieldBad(attrs, attrsError, 'The attributes must be a JSON object: ' +
        '{"name": value, ...}');
    fieldGood(attrs, attrsError);
    const p = priority.value.trim();
    if (priority.validity.badInput || (p !== '' && !/^-?\d+$/.test(p)))
      return fieldBad(priority, priorityError, 'a whole number');
    fieldGood(priority, priorityError);
    const body = { graph: g.id, attrs: a };
    if (p !== '') body.priority = Number(p);
    if (node.value) body.node = node.value;
    if (name.value.trim()) body.name = name.value.trim();
    if (group.value.trim()) body.group = group.value.trim();
    button.disabled = true; /* one click, one task */
    await change('submission refused', async () => {
      const r = (await api('POST', '/api/v1/submissions', body)).data;
      made.prepend(el('li', {}, link('#/task/' + r.task, 'task ' + r.task),
        ' at ' + r.node + ', ', link('#/tasks?group=' + r.group,
          'group ' + (r.group_name || r.group))));
      return 'task ' + r.task + ' submitted to ' + r.graph;
    });
    button.disabled = false;
  };

  const row = (label, ...field) => [el('label', { for: field[0].id }, label),
    el('div', {}, field)];
  const box = el('section', { class: 'submit' }, el('h2', {}, 'Submit a task'),
    el('form', { id: 'submit-form', novalidate: true, onsubmit: send },
      row('attributes', attrs, attrsError),
      row('start at', node), row('name', name), row('priority', priority, ' ', priorityError),
      row('group', group),
      el('span'), el('div', {}, button, ' ', target)),
    made);
  return {
    open() { box.scrollIntoView({ block: 'start' }); attrs.focus({ preventScroll: true }); },
    show(graph) {
      const start = graph.graph.start; /* a node's name, or {node, attrs} */
      if (!g) { /* the start's attributes, for changing: the server adds them anyway */
        const sa = start && typeof start === 'object' ? start.attrs : null;
        attrs.value = JSON.stringify(sa || {}, null, 2);
      }
      if (!g || g.id !== graph.id) {
        const first = start && typeof start === 'object' ? start.node : start;
        node.replaceChildren(el('option', { value: '' }, 'the start node' +
          (first ? ' (' + first + ')' : '')),
        (graph.graph.nodes || []).map((n) => el('option', { value: n.name }, n.name)));
      }
      g = graph;
      target.textContent = 'to ' + g.name + ' version ' + g.version + ' (graph id ' + g.id + ')';
      return box;
    },
  };
}

function graphView(name, q) {
  const form = submitForm();
  return {
    async draw() {
      const want = q.get('version');
      const g = await get('/api/v1/graphs/' + encodeURIComponent(name) +
        (want ? '?version=' + encodeURIComponent(want) : ''));
      const [summary, versions] = await Promise.all([
        get('/api/v1/summary?graph=' + g.id),
        get('/api/v1/graphs/' + encodeURIComponent(name) + '/versions')]);
      const counts = {};
      for (const n of summary.nodes) counts[n.node] = n.counts;
      const nodes = (g.graph.nodes || []).map((n) => n.name);
      for (const n of Object.keys(counts)) if (!nodes.includes(n)) nodes.push(n);
      const types = {};
      for (const n of g.graph.nodes || []) types[n.name] = n.type;
      const cell = (node, s) => {
        const n = (counts[node] || {})[s] || 0;
        if (!n) return el('td', { class: 'num zero' }, 0);
        return el('td', { class: 'num' }, link('#/tasks?graph=' + g.id + '&node=' +
          encodeURIComponent(node) + '&state=' + s, n));
      };
      const rows = nodes.map((node) => el('tr', {},
        el('td', {}, link('#/tasks?graph=' + g.id + '&node=' + encodeURIComponent(node), node)),
        el('td', { class: 'muted' }, types[node] || '(not in this version)'),
        el('td', {}, stateBar(counts[node] || {})),
        STATES.map((s) => cell(node, s))));
      const pick = el('select', { onchange: (e) => { location.hash = '#/graph/' +
        encodeURIComponent(name) + '?version=' + e.target.value; } },
      versions.versions.map((v) => el('option', { value: v.version,
        selected: v.version === g.version }, 'version ' + v.version)));
      return [el('h1', {}, name),
        el('div', { class: 'toolbar' }, pick, el('span', { class: 'muted' },
          'graph id ' + g.id + ', uploaded ' + when(g.created_ms)),
        link('#/tasks?graph=' + g.id, 'all its tasks'),
        el('a', { id: 'edit-graph', href: '#/?edit=' + encodeURIComponent(name) + '&version=' +
          g.version }, 'Edit'),
        el('button', { type: 'button', onclick: () => form.open() }, 'Submit a task')),
        el('div', { class: 'diagram-box' }, diagram(g.graph, counts, g.id)),
        table(['node', 'type', 'tasks', ...STATES.map((x) => '#' + x)], rows),
        form.show(g)];
    },
  };
}

function tasksView(q) {
  const filter = new URLSearchParams();
  for (const k of ['graph', 'node', 'state', 'parent', 'group'])
    if (q.get(k)) filter.set(k, q.get(k));
  let pages = 1;
  return {
    async draw() {
      const tasks = [];
      let after = null;
      for (let i = 0; i < pages; i++) {
        const f = new URLSearchParams(filter);
        f.set('limit', '200');
        if (after) f.set('after', after);
        const page = await get('/api/v1/tasks?' + f);
        tasks.push(...page.tasks);
        after = page.next;
        if (!after) break;
      }
      const rows = tasks.map((t) => el('tr', { class: 'click', onclick: () => {
        location.hash = '#/task/' + t.id; } },
      el('td', { class: 'num' }, link('#/task/' + t.id, t.id)), el('td', {}, t.name),
      el('td', {}, t.node), el('td', {}, stateTag(t.state), t.paused ? ' paused' : ''),
      el('td', { class: 'num' }, t.priority), el('td', { class: 'num' }, t.attempts),
      el('td', { class: 'num' }, t.parent ? link('#/task/' + t.parent, t.parent) : ''),
      el('td', {}, t.split ? t.split.element + '/' + t.split.count : ''),
      el('td', { class: 'muted' }, when(t.updated_ms))));
      const states = el('select', { onchange: (e) => {
        const f = new URLSearchParams(filter);
        if (e.target.value) f.set('state', e.target.value); else f.delete('state');
        location.hash = '#/tasks?' + f;
      } }, el('option', { value: '' }, 'every state'),
      STATES.map((s) => el('option', { value: s, selected: q.get('state') === s }, s)));
      const said = [...filter.entries()].filter(([k]) => k !== 'state')
        .map(([k, v]) => k + ' ' + v).join(', ');
      const g = q.get('group');
      /* a whole submission at once: what `braid cancel --group` and the
       * others do, on every unfinished task of the group; called by the
       * name it was given, if any */
      const gs = g ? groupShown(g, await groupName(g)) : '';
      const groupButtons = g ? el('div', { class: 'toolbar', id: 'group-actions' },
        el('span', {}, 'Group ' + gs + ':'),
        el('button', { type: 'button', onclick: () => actGroup(g, gs, 'retry') }, 'Retry'),
        el('button', { type: 'button', onclick: () => actGroup(g, gs, 'pause') }, 'Pause'),
        el('button', { type: 'button', onclick: () => actGroup(g, gs, 'resume') }, 'Resume'),
        el('button', { type: 'button', class: 'danger', onclick: () => {
          if (confirm('Cancel every unfinished task of group ' + gs +
            '? Its running jobs are killed.')) actGroup(g, gs, 'cancel');
        } }, 'Cancel')) : null;
      return [el('h1', {}, 'Tasks'),
        el('div', { class: 'toolbar' }, states, el('span', { class: 'muted' }, said),
          filter.toString() ? link('#/tasks', 'clear') : null),
        groupButtons,
        rows.length ? table(['#id', 'name', 'node', 'state', '#priority', '#attempts',
          '#parent', 'split', 'updated'], rows) : el('p', { class: 'muted' }, 'No task.'),
        after ? el('p', {}, el('button', { type: 'button', onclick: () => {
          pages++; refresh(); } }, 'More')) : null];
    },
  };
}

/* Makes a change through the API: call makes its requests and returns what
 * to say it did; else the flash says why not, after who (what was acted on;
 * forbidden: what to say to a 403; a 401 is the login's to tell). Either
 * way the view is drawn again. */
async function change(who, call, forbidden) {
  try {
    flash(await call());
  } catch (e) {
    if (e.status === 403 && forbidden) flash(who + ': ' + forbidden, true);
    else if (e.status !== 401) flash(who + ': ' + e.message, true);
  }
  refresh();
}

function act(id, what, body) {
  const who = 'task ' + id + ': ' + what;
  return change(who, async () => {
    await api(what === 'priority' ? 'PUT' : 'POST', '/api/v1/tasks/' + id + '/' + what, body);
    return who + ' done';
  });
}

/* The name a submission was given for group id g, or null (none, or the
 * names cannot be read). A group gets its name when it is made and keeps
 * it, so each id is asked about once, not at every redraw of a page that
 * shows it (a failed answer is not kept). */
const groupNames = new Map();
async function groupName(g) {
  const id = String(g);
  if (groupNames.has(id)) return groupNames.get(id);
  try {
    const names = (await get('/api/v1/groups')).groups || {};
    for (const [name, gid] of Object.entries(names)) groupNames.set(String(gid), name);
    if (!groupNames.has(id)) groupNames.set(id, null);
    return groupNames.get(id);
  } catch (e) {
    return null;
  }
}

function groupShown(g, name) {
  return name ? name + ' (' + g + ')' : String(g);
}

function actGroup(g, shown, what) {
  return change('group ' + shown + ': ' + what, async () => {
    const r = await api('POST', '/api/v1/groups/' + encodeURIComponent(g) + '/' + what);
    return 'group ' + shown + ': ' + what + ', ' + r.data.tasks +
      (r.data.tasks === 1 ? ' task' : ' tasks');
  });
}

/* The priority of the task view: a field and a button, made once per view
 * (see submitForm); show(p) gives the field the task's priority unless the
 * user has typed another since it was last set. */
function priorityForm(id) {
  let typed = false;
  const input = el('input', { id: 'priority-input', type: 'number', step: '1', class: 'short',
    'aria-label': 'priority', 'aria-describedby': 'priority-error' });
  const error = el('span', { id: 'priority-error', class: 'error' });
  input.addEventListener('input', () => { typed = true; fieldGood(input, error); });
  const form = el('form', { id: 'priority-form', novalidate: true,
    onsubmit: (e) => {
      e.preventDefault();
      const p = input.value.trim();
      if (input.validity.badInput || !/^-?\d+$/.test(p))
        return fieldBad(input, error, 'a whole number (higher runs first)');
      fieldGood(input, error);
      typed = false;
      act(id, 'priority', { priority: Number(p) });
    } }, input, ' ', el('button', { type: 'submit' }, 'Set'), ' ', error);
  return { show(p) { if (!typed) input.value = String(p); return form; } };
}

function taskView(id) {
  const priority = priorityForm(Number(id));
  return {
    task: Number(id),
    async draw() {
      const t = await get('/api/v1/tasks/' + encodeURIComponent(id));
      let log = null;
      if (t.invocations && t.invocations.length) {
        try {
          const r = await api('GET', '/api/v1/tasks/' + t.id + '/log');
          log = r.data;
          const size = Number(r.headers.get('X-Braid-Log-Size') || 0);
          if (log.length > 65536) log = '[... ' + (size - 65536) + ' bytes before]\n' +
            log.slice(-65536);
        } catch (e) {
          log = '(' + e.message + ')';
        }
      }
      const buttons = [
        el('button', { type: 'button', onclick: () => act(t.id, 'retry') }, 'Retry'),
        el('button', { type: 'button', onclick: () => act(t.id, t.paused ? 'resume' : 'pause') },
          t.paused ? 'Resume' : 'Pause'),
        el('button', { type: 'button', class: 'danger', onclick: () => {
          if (confirm('Cancel task ' + t.id + '? A running job is killed.')) act(t.id, 'cancel');
        } }, 'Cancel')];
      const kv = [['state', [stateTag(t.state), t.paused ? ' paused' : '']],
        ['node', [t.node, el('span', { class: 'muted' }, ' port ' + t.port)]],
        ...(t.waiting ? [['waiting', t.waiting]] : []),
        ['graph', link('#/tasks?graph=' + t.graph_id, 'graph id ' + t.graph_id)],
        ['group', t.group ? link('#/tasks?group=' + t.group,
          groupShown(t.group, await groupName(t.group))) : ''],
        ['parent', t.parent ? link('#/task/' + t.parent, t.parent) : ''],
        ['children', [t.live_children + ' live ', link('#/tasks?parent=' + t.id, 'list')]],
        ['split', t.split ? 'element ' + t.split.element + ' of ' + t.split.count +
          ' (split ' + t.split.id + ')' : ''],
        ['priority', priority.show(t.priority)], ['attempts', t.attempts],
        ['created', when(t.created_ms)], ['updated', when(t.updated_ms)]];
      if (t.error) kv.push(['error', el('span', { class: 'error' }, t.error)]);
      const invs = (t.invocations || []).map((i) => el('tr', {},
        el('td', { class: 'num' }, i.id), el('td', { class: 'num' }, i.attempt),
        el('td', {}, i.status), el('td', { class: 'num' }, i.exit_code),
        el('td', {}, i.worker || ''), el('td', { class: 'num' }, duration(i.runtime)),
        el('td', { class: 'muted' }, when(i.started_ms)), el('td', { class: 'error' },
          i.error || '')));
      return [el('h1', {}, 'Task ' + t.id + ': ' + t.name),
        el('div', { class: 'toolbar' }, buttons),
        el('dl', { class: 'kv' }, kv.map(([k, v]) => [el('dt', {}, k), el('dd', {}, v)])),
        el('h2', {}, 'Attributes'), el('pre', {}, JSON.stringify(t.attrs || {}, null, 2)),
        el('h2', {}, 'Invocations'),
        invs.length ? table(['#id', '#attempt', 'status', '#exit', 'worker', '#runtime',
          'started', 'error'], invs) : el('p', { class: 'muted' },
          ['done', 'error', 'cancelled', 'dead'].includes(t.state) ? 'None.' : 'None yet.'),
        log !== null ? [el('h2', {}, 'Log of the last invocation'), el('pre', {}, log)] : null];
    },
  };
}

/* Sets or removes a farm limit (admin tokens): a name and a maximum, made
 * once per view so a redraw keeps what is typed; a click on a limit's row
 * fills it in. */
function limitForm() {
  const name = el('input', { id: 'limit-name', type: 'text', size: 14, 'aria-label': 'limit',
    placeholder: 'name', 'aria-describedby': 'limit-error' });
  const max = el('input', { id: 'limit-max', type: 'number', min: '0', step: '1',
    class: 'short', 'aria-label': 'maximum', 'aria-describedby': 'limit-error' });
  const error = el('span', { id: 'limit-error', class: 'error' });
  for (const f of [name, max]) f.addEventListener('input', () => fieldGood(f, error));
  const send = (n, m) => change('limit ' + n, async () => {
    await api('PUT', '/api/v1/limits/' + encodeURIComponent(n), { max: m });
    max.value = '';
    return 'limit ' + n + (m === null ? ' removed' : ': at most ' + m);
  }, 'setting limits needs an admin token');
  const form = el('form', { id: 'limit-form', class: 'toolbar', novalidate: true,
    onsubmit: (e) => {
      e.preventDefault();
      const n = name.value.trim(), m = max.value.trim();
      if (!/^[A-Za-z0-9_.:-]+$/.test(n))
        return fieldBad(name, error, 'a name of letters, digits, - _ . :');
      if (max.validity.badInput || !/^\d+$/.test(m))
        return fieldBad(max, error, 'a whole number, 0 or more');
      send(n, Number(m));
    } }, 'Limit ', name, ' at most ', max, ' ', el('button', { type: 'submit' }, 'Set'), ' ',
  el('button', { type: 'button', class: 'danger', onclick: () => {
    const n = name.value.trim();
    if (!n) return fieldBad(name, error, 'the limit to remove');
    send(n, null);
  } }, 'Remove'), ' ', error);
  return {
    form,
    pick(n, m) { name.value = n; max.value = m === null ? '' : String(m); max.focus(); },
  };
}

function workersView() {
  const limits = limitForm();
  return {
    async draw() {
      const [w, lims] = await Promise.all([get('/api/v1/workers'), get('/api/v1/limits')]);
      const drain = (id, on) => change(id, async () => {
        await api('POST', '/api/v1/workers/' + encodeURIComponent(id) + '/drain',
          { drain: on });
        return id + (on ? ' drains' : ' takes work again');
      });
      const rows = w.workers.map((x) => el('tr', {},
        el('td', {}, x.id), el('td', {}, x.host), el('td', {}, x.state),
        el('td', { class: 'num' }, x.slots), el('td', { class: 'num' }, x.running.length),
        el('td', {}, x.running.map((r) => [link('#/task/' + r.task, r.task), ' '])),
        el('td', {}, (x.tags || []).join(', ')),
        el('td', { class: 'muted' }, when(x.last_seen_ms)),
        el('td', {}, el('button', { type: 'button', onclick: () => drain(x.id, !x.drain) },
          x.drain ? 'Undrain' : 'Drain'))));
      const lim = Object.entries(lims.limits).map(([k, v]) => el('tr', { class: 'click',
        onclick: () => limits.pick(k, v.max) },
      el('td', {}, k), el('td', { class: 'num' }, v.used),
      el('td', { class: 'num' }, v.max === null ? 'none' : v.max)));
      return [el('h1', {}, 'Workers'),
        rows.length ? table(['worker', 'host', 'state', '#slots', '#running', 'tasks', 'tags',
          'last seen', ''], rows)
          : el('p', { class: 'muted' }, 'No agent has registered: braid agent --server URL'),
        el('h2', {}, 'Limits'),
        el('p', { class: 'muted' }, 'A job that asks for a limit (its node\'s limits) waits ' +
          'while that limit is at its maximum: licences, a file server\'s load.'),
        lim.length ? table(['limit', '#used', '#max'], lim) : null,
        limits.form];
    },
  };
}

/* The server's tokens (admin tokens only): each with its role and name,
 * revoked with a button; a new one is shown once, when it is made. */
function tokensView() {
  const role = el('select', { id: 'new-token-role', 'aria-label': 'role' },
    ['user', 'agent', 'admin'].map((r) => el('option', { value: r }, r)));
  const name = el('input', { id: 'new-token-name', type: 'text', size: 20,
    'aria-label': 'name', placeholder: 'who or what uses it' });
  const made = el('div', { id: 'new-token' });
  const form = el('form', { id: 'token-form', class: 'toolbar', onsubmit: (e) => {
    e.preventDefault();
    change('new token', async () => {
      const r = (await api('POST', '/api/v1/tokens', { role: role.value,
        name: name.value.trim() })).data;
      name.value = '';
      made.replaceChildren(el('p', {}, 'New ' + r.role + ' token ' + r.id +
        (r.name ? ' (' + r.name + ')' : '') + '; copy it now, it is not shown again:'),
      el('p', {}, el('code', { id: 'new-token-text' }, r.token)));
      return 'token ' + r.id + ' made';
    });
  } }, 'New ', role, ' token for ', name, ' ', el('button', { type: 'submit' }, 'Make'));
  const revoke = (t) => {
    if (!confirm('Revoke token ' + t.id + (t.name ? ' (' + t.name + ')' : '') +
      '? What uses it is refused from now on.')) return;
    change('token ' + t.id, async () => {
      await api('DELETE', '/api/v1/tokens/' + encodeURIComponent(t.id));
      return 'token ' + t.id + ' revoked';
    });
  };
  return {
    async draw() {
      let list;
      try {
        list = (await get('/api/v1/tokens')).tokens;
      } catch (e) {
        if (e.status !== 403) throw e;
        return [el('h1', {}, 'Tokens'), el('p', { id: 'tokens-admin-only' },
          'Tokens are managed with an admin token, and this one is not. The server\'s ' +
          'first admin token is in farm.braid.admin-token beside its store; give one with ' +
          'the Token button.')];
      }
      const rows = list.map((t) => el('tr', {}, el('td', {}, t.id), el('td', {}, t.role),
        el('td', {}, t.name), el('td', { class: 'muted' }, when(t.created_ms)),
        el('td', {}, el('button', { type: 'button', class: 'danger',
          onclick: () => revoke(t) }, 'Revoke'))));
      return [el('h1', {}, 'Tokens'),
        rows.length ? table(['id', 'role', 'name', 'made', ''], rows)
          : el('p', { class: 'muted' }, 'No token.'),
        form, made];
    },
  };
}

/* ---- live: the event stream, read with fetch (EventSource sends no token) ---- */

let soon = null;
function refreshSoon(ms) {
  if (!soon) soon = setTimeout(() => { soon = null; refresh(); }, ms);
}

async function listen() {
  let lastId = null, wait = 1000;
  for (;;) {
    if (!token) { await new Promise((r) => setTimeout(r, 1000)); continue; }
    const live = $('live');
    try {
      const res = await fetch('/api/v1/events' + (lastId ? '?since=' + lastId : ''),
        { headers: { Authorization: 'Bearer ' + token } });
      if (!res.ok || !res.body) throw new Error('HTTP ' + res.status);
      live.textContent = 'live';
      live.className = 'live on';
      wait = 1000;
      /* without an event to start from, what changed before the stream was
       * up (since the page was drawn, before the login) is not sent: the
       * view is drawn again. A reconnection asks for what it missed, or
       * is told of a gap. */
      if (!lastId) refreshSoon(0);
      const reader = res.body.getReader();
      const dec = new TextDecoder();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let end;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          const ev = { event: 'message', data: '' };
          for (const line of buf.slice(0, end).split('\n')) {
            const c = line.indexOf(':');
            if (c <= 0) continue;
            const k = line.slice(0, c), v = line.slice(c + 1).replace(/^ /, '');
            if (k === 'id') lastId = v;
            else if (k === 'event') ev.event = v;
            else if (k === 'data') ev.data += v;
          }
          buf = buf.slice(end + 2);
          onEvent(ev);
        }
      }
    } catch (e) {
      /* below: offline, then again */
    }
    live.textContent = 'offline';
    live.className = 'live off';
    await new Promise((r) => setTimeout(r, wait));
    wait = Math.min(wait * 2, 15000);
  }
}

function onEvent(ev) {
  if (!view) return;
  if (ev.event === 'task' && view.task !== undefined) {
    let t = null;
    try { t = JSON.parse(ev.data); } catch (e) { return; }
    if (t && t.id === view.task) refreshSoon(300);
    return;
  }
  /* a busy farm sends many events: the view is drawn again at most every 2 s */
  if (ev.event === 'task' || ev.event === 'worker' || ev.event === 'gap') refreshSoon(2000);
}

/* ---- start ---- */

$('login-form').addEventListener('submit', (e) => {
  e.preventDefault();
  token = $('token-input').value.trim();
  localStorage.setItem('braid.token', token);
  $('token-input').value = '';
  $('login').hidden = true;
  health();
  refresh();
});
$('token-button').addEventListener('click', () => {
  if ($('login').hidden) showLogin(''); else $('login').hidden = true;
});
window.addEventListener('hashchange', route);

async function health() {
  try {
    const h = await get('/health');
    $('server').textContent = 'braid ' + h.version + ', up ' + duration(h.uptime_s);
  } catch (e) {
    $('server').textContent = '';
  }
}

if (!token) showLogin('');
health();
route();
listen();
