// The analytics page: logs in at the users service (its origin is in the page's
// <meta name="recsys-users-url">), keeps the token in this script's memory only, and reads
// the analytics routes of this origin with it. Every value reaches the document as text
// (textContent, SVG attributes), never as markup.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const usersUrl = document.querySelector('meta[name="recsys-users-url"]').content;
  const SVG = 'http://www.w3.org/2000/svg';
  const COUNTERS = ['views', 'cart_adds', 'cart_removes', 'purchases', 'units_sold', 'updates'];
  const FIGURES = [
    ['users', 'users'],
    ['products', 'live products'],
    ['events_total', 'events'],
    ['events_last_hour', 'events, last hour'],
    ['active_users_last_hour', 'active users, last hour'],
  ];

  /** The admin's token; only ever in this variable. */
  let token = null;

  /** The latest request of the top table and of the chart: an older answer is not shown. */
  const latest = { top: 0, series: 0 };

  /** A failed call: the HTTP status and the API's error message. */
  class Failure extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  /** The API's own message of a failed answer, else its status. */
  function messageOf(body, status) {
    const error = body && body.error;
    return error && error.message ? error.message : `HTTP ${status}`;
  }

  /** GET `path` of this origin with the token; its JSON, or a Failure. */
  async function api(path) {
    let response;
    try {
      response = await fetch(path, {
        headers: { Authorization: `Bearer ${token}` },
        cache: 'no-store',
      });
    } catch (e) {
      throw new Failure(0, `the analytics service did not answer (${e.message})`);
    }
    const body = await response.json().catch(() => null);
    if (!response.ok) throw new Failure(response.status, messageOf(body, response.status));
    return body;
  }

  function element(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function show(id, text) {
    const node = $(id);
    node.textContent = text || '';
    node.hidden = !text;
  }

  /** Which part of the page shows: 'login', 'refusal' or 'dashboard'. */
  function view(name) {
    for (const part of ['login', 'refusal', 'dashboard']) $(part).hidden = part !== name;
    $('logout').hidden = name === 'login';
    $('refresh').hidden = name !== 'dashboard';
  }

  function logout() {
    token = null;
    $('session').textContent = '';
    for (const id of ['summary-figures', 'series-chart', 'product-result', 'user-result']) {
      $(id).replaceChildren();
    }
    $('events-by-type').tBodies[0].replaceChildren();
    $('top-table').tBodies[0].replaceChildren();
    show('series-caption', '');
    show('top-caption', '');
    show('dashboard-error', '');
    view('login');
  }

  /** A call's failure: back to the login when the token is no longer good, else shown. */
  function failed(error, where) {
    if (error.status === 401) {
      logout();
      show('login-error', `${error.message}: log in again`);
    } else if (error.status === 403) {
      refuse(error);
    } else {
      show(where, error.status ? `${error.message} (HTTP ${error.status})` : error.message);
    }
  }

  function refuse(error) {
    token = null;
    for (const id of ['summary-figures', 'series-chart']) $(id).replaceChildren();
    $('events-by-type').tBodies[0].replaceChildren();
    $('top-table').tBodies[0].replaceChildren();
    show('refusal-message', `${error.message} (HTTP ${error.status}): this account may not see the analytics.`);
    view('refusal');
  }

  async function login(event) {
    event.preventDefault();
    show('login-error', '');
    const email = $('email').value.trim();
    const password = $('password').value;
    if (!usersUrl) {
      show('login-error', 'This page does not know where the users service is: set ANALYTICS_USERS_URL.');
      return;
    }
    $('login-button').disabled = true;
    try {
      let response;
      try {
        response = await fetch(`${usersUrl}/users/login`, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ email, password }),
        });
      } catch (e) {
        show('login-error', `The users service at ${usersUrl} did not answer this page ` +
          `(${e.message}). Its CORS_ORIGINS must contain ${location.origin}.`);
        return;
      }
      const body = await response.json().catch(() => null);
      if (!response.ok) {
        show('login-error', messageOf(body, response.status));
        return;
      }
      token = body.token;
      $('password').value = '';
      $('session').textContent = email;
      await enter();
    } finally {
      $('login-button').disabled = false;
    }
  }

  /** After a login: the summary decides whether this account may see the analytics. */
  async function enter() {
    let summary;
    try {
      summary = await api('/analytics/summary');
    } catch (error) {
      if (error.status === 403) {
        refuse(error);
      } else {
        failed(error, 'login-error');
      }
      return;
    }
    view('dashboard');
    renderSummary(summary);
    await Promise.all([loadTop(), loadSeries()]);
  }

  async function refresh() {
    show('dashboard-error', '');
    try {
      renderSummary(await api('/analytics/summary'));
    } catch (error) {
      failed(error, 'dashboard-error');
      return;
    }
    await Promise.all([loadTop(), loadSeries()]);
  }

  function renderSummary(summary) {
    const figures = FIGURES.map(([field, label]) => {
      const figure = element('div', null, 'figure');
      figure.dataset.field = field;
      figure.append(element('span', summary[field], 'value'), element('span', label, 'label'));
      return figure;
    });
    $('summary-figures').replaceChildren(...figures);
    const rows = Object.keys(summary.events_by_type).sort().map((type) => {
      const row = element('tr');
      row.dataset.type = type;
      row.append(element('th', type), element('td', summary.events_by_type[type], 'num'));
      return row;
    });
    $('events-by-type').tBodies[0].replaceChildren(...rows);
  }

  async function loadTop() {
    const by = $('top-by').value;
    const limit = $('top-limit').value;
    const recent = $('top-window').value;
    const query = new URLSearchParams({ by, limit });
    if (recent) query.set('window', recent);
    const request = ++latest.top;
    let products;
    try {
      products = await api(`/analytics/products/top?${query}`);
    } catch (error) {
      if (request === latest.top) failed(error, 'dashboard-error');
      return;
    }
    if (request !== latest.top) return;
    for (const th of $('top-table').tHead.rows[0].cells) {
      th.classList.toggle('ranked', th.dataset.counter === by);
    }
    const rows = products.map((product, i) => {
      const row = element('tr');
      row.dataset.productId = product.product_id;
      const link = element('button', product.product_id, 'link');
      link.type = 'button';
      link.addEventListener('click', () => lookup('product', product.product_id));
      const cell = element('td');
      cell.append(link);
      row.append(element('td', i + 1, 'num'), cell);
      for (const counter of COUNTERS) {
        const td = element('td', product[counter], counter === by ? 'num ranked' : 'num');
        td.dataset.counter = counter;
        row.append(td);
      }
      const state = product.deleted_at ? 'deleted' : product.created_at ? 'live' : 'never created';
      row.append(element('td', state, `state ${state.replace(' ', '-')}`));
      return row;
    });
    if (rows.length === 0) {
      const empty = element('tr');
      const td = element('td', recent ? 'No product event in this window.' : 'No product event yet.', 'note');
      td.colSpan = 9;
      empty.append(td);
      rows.push(empty);
    }
    $('top-table').tBodies[0].replaceChildren(...rows);
    const windowName = $('top-window').selectedOptions[0].textContent;
    show('top-caption', recent
      ? `Counts of the events of the ${windowName}, from the top of the hour it reaches back to; ` +
        'only products with an event in it. Click a product to look it up (its totals).'
      : 'Counts since the first event. Click a product to look it up.');
  }

  /** `date` as `MM-DD HH:00` (hourly) or `YYYY-MM-DD` (daily), in UTC. */
  function label(iso, resolution) {
    return resolution === 'day' ? iso.slice(0, 10) : `${iso.slice(5, 10)} ${iso.slice(11, 16)}`;
  }

  async function loadSeries() {
    const type = $('series-type').value;
    const hours = Number($('series-window').value);
    const resolution = $('series-resolution').value;
    const to = new Date();
    const from = new Date(to.getTime() - hours * 3600 * 1000);
    const query = new URLSearchParams({
      type, from: from.toISOString(), to: to.toISOString(),
    });
    const request = ++latest.series;
    let buckets;
    try {
      buckets = await api(`/analytics/timeseries?${query}`);
    } catch (error) {
      if (request === latest.series) failed(error, 'dashboard-error');
      return;
    }
    if (request !== latest.series) return;
    // Daily points add up the API's hourly buckets of each UTC day.
    let points = buckets.map((b) => ({ at: b.hour, count: b.count }));
    if (resolution === 'day') {
      const days = new Map();
      for (const b of buckets) {
        const day = b.hour.slice(0, 10);
        days.set(day, (days.get(day) || 0) + b.count);
      }
      points = [...days].map(([day, count]) => ({ at: day, count }));
    }
    const chart = $('series-chart');
    chart.dataset.type = type;
    chart.dataset.from = from.toISOString();
    chart.dataset.to = to.toISOString();
    chart.dataset.resolution = resolution;
    chart.replaceChildren(drawChart(points, resolution));
    const total = points.reduce((sum, p) => sum + p.count, 0);
    show('series-caption', `${total} ${type} events from ${from.toISOString().slice(0, 16)}Z ` +
      `to ${to.toISOString().slice(0, 16)}Z, ${points.length} ${resolution === 'day' ? 'daily' : 'hourly'} ` +
      'points (UTC; the current one is still filling).');
  }

  function svg(tag, attributes, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  /** A bar chart of `points` ({at, count}); each bar carries its point in data attributes. */
  function drawChart(points, resolution) {
    const width = 960;
    const height = 240;
    const left = 48;
    const bottom = 28;
    const top = 12;
    const plotWidth = width - left - 8;
    const plotHeight = height - top - bottom;
    const max = Math.max(1, ...points.map((p) => p.count));
    const root = svg('svg', {
      viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': 'events over time',
    });
    // Horizontal guides at 0, half and the top of the scale, labelled with whole counts.
    for (const value of [...new Set([0, Math.round(max / 2), max])]) {
      const y = top + plotHeight - (value / max) * plotHeight;
      root.append(svg('line', { x1: left, x2: width - 8, y1: y, y2: y, class: 'guide' }));
      root.append(svg('text', { x: left - 6, y: y + 4, class: 'axis', 'text-anchor': 'end' }, String(value)));
    }
    const step = plotWidth / Math.max(points.length, 1);
    const gap = step > 6 ? Math.min(step * 0.2, 6) : 0;
    points.forEach((point, i) => {
      const h = (point.count / max) * plotHeight;
      const bar = svg('rect', {
        x: left + i * step + gap / 2,
        y: top + plotHeight - h,
        width: Math.max(step - gap, 1),
        height: h,
        class: 'bar',
        'data-at': point.at,
        'data-count': point.count,
      });
      bar.append(svg('title', {}, `${label(point.at, resolution)}: ${point.count}`));
      root.append(bar);
    });
    // Time labels: first, middle and last point.
    const marks = [...new Set([0, Math.floor((points.length - 1) / 2), points.length - 1])];
    for (const i of marks.filter((i) => i >= 0)) {
      const anchor = i === 0 ? 'start' : i === points.length - 1 ? 'end' : 'middle';
      const x = anchor === 'start' ? left + i * step : anchor === 'end' ? left + (i + 1) * step : left + (i + 0.5) * step;
      root.append(svg('text', { x, y: height - 8, class: 'axis', 'text-anchor': anchor }, label(points[i].at, resolution)));
    }
    return root;
  }

  /** Shows one product's or user's statistics (kind 'product' or 'user'). */
  async function lookup(kind, id) {
    const input = $(`${kind}-id`);
    const result = $(`${kind}-result`);
    const value = (id || input.value).trim();
    input.value = value;
    if (!value) return;
    result.replaceChildren(element('p', 'Loading…', 'note'));
    let stats;
    try {
      stats = await api(`/analytics/${kind === 'product' ? 'products' : 'users'}/${encodeURIComponent(value)}`);
    } catch (error) {
      if (error.status === 401 || error.status === 403) {
        failed(error, 'dashboard-error');
        return;
      }
      result.replaceChildren(element('p', `${error.message} (HTTP ${error.status})`, 'error'));
      return;
    }
    const list = element('dl');
    for (const field of Object.keys(stats)) {
      const term = element('dt', field);
      const detail = element('dd', stats[field] === null ? '—' : stats[field]);
      detail.dataset.field = field;
      list.append(term, detail);
    }
    result.replaceChildren(list);
    input.closest('section').scrollIntoView({ block: 'nearest' });
  }

  $('users-url').textContent = usersUrl || '(unknown: set ANALYTICS_USERS_URL)';
  $('login-form').addEventListener('submit', login);
  $('logout').addEventListener('click', logout);
  $('refresh').addEventListener('click', refresh);
  $('top-by').addEventListener('change', loadTop);
  $('top-limit').addEventListener('change', loadTop);
  $('top-window').addEventListener('change', loadTop);
  for (const id of ['series-type', 'series-window', 'series-resolution']) {
    $(id).addEventListener('change', loadSeries);
  }
  $('product-form').addEventListener('submit', (event) => {
    event.preventDefault();
    lookup('product');
  });
  $('user-form').addEventListener('submit', (event) => {
    event.preventDefault();
    lookup('user');
  });
})();
