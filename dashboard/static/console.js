// Calltrack advisor console: live visitors, the callback queue, the visitor panel and
// screen-pops, fed by the hub websocket (docs/hub-protocol.md).
//
// Rules this file keeps:
// - Everything a visitor can send (titles, URLs, cart items, messages) reaches the page through
//   text nodes (`h()` below, `textContent`), never through HTML parsing; links are made only for
//   http(s) URLs.
// - The connection resumes: the last event id of each site is kept, a reconnect subscribes with
//   them and the hub replays what was missed; with a gap (or on the first connection) the state
//   is rebuilt from a snapshot, and events that arrive meanwhile are applied after it.
// - One alert per advisor, not per tab: only the tab holding the Web Lock `calltrack-notify`
//   beeps and shows desktop notifications; the others take over when it closes.
'use strict';
(() => {
  const boot = JSON.parse(document.getElementById('boot').textContent);
  const T = boot.t, LANG = boot.lang, ME = boot.user;
  const SITES = new Map(boot.sites.map(s => [s.key, s]));
  const $ = id => document.getElementById(id);
  const LOCALE = LANG === 'fr' ? 'fr-FR' : 'en-GB';
  // A visit ends after 30 minutes without activity (the tracker's rule); drop it from the list.
  const VISIT_TIMEOUT_MS = 30 * 60 * 1000;
  // Heartbeats (the snippet pings every 30 s while a page is visible) are not pushed to the
  // console: the live list is read again this often, and visitors no longer in it (not seen for
  // the snapshot's 5 minutes) leave it. Time on site stops 90 s after the last activity known.
  const REFRESH_MS = 60 * 1000, SEEN_SLACK_MS = 90 * 1000;
  // Replayed or late events older than this do not beep: the advisor saw them, or they are stale.
  const ALERT_MAX_AGE_MS = 2 * 60 * 1000;
  const TAGS = ['sale', 'lead', 'no_answer', 'spam'];
  const RINGING = new Set(['queued', 'initiated', 'ringing']);

  // ---- DOM helpers -----------------------------------------------------------------------------
  function h(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid == null || kid === false) continue;
      e.append(kid instanceof Node ? kid : String(kid));  // strings become text nodes
    }
    return e;
  }
  const tr = (key, vars) => (T[key] || key).replace(/\{(\w+)\}/g, (_, k) => vars && vars[k] != null ? vars[k] : '');
  const safeHref = url => {
    try {
      const u = new URL(url);
      return u.protocol === 'http:' || u.protocol === 'https:' ? u.href : null;
    } catch (e) { return null; }
  };
  const shortUrl = url => {
    try { const u = new URL(url); return u.pathname + u.search + u.hash; } catch (e) { return String(url || ''); }
  };
  const pageLink = (url, title, cls) => {
    const href = safeHref(url), label = title || shortUrl(url) || '—';
    return href
      ? h('a', {href, target: '_blank', rel: 'noopener noreferrer', title: url, class: cls}, label)
      : h('span', {title: url, class: cls}, label);
  };
  // Keep keyboard focus and half-made choices (an outcome picked, not yet saved) across
  // re-renders: controls carry a stable data-fk.
  const keepFocus = fn => {
    const key = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.fk : null;
    const picked = [...document.querySelectorAll('select[data-fk]')].filter(e => e.value).map(e => [e.dataset.fk, e.value]);
    fn();
    for (const [k, value] of picked) {
      const again = document.querySelector(`select[data-fk="${CSS.escape(k)}"]`);
      if (again && !again.value) again.value = value;
    }
    if (key && !(document.activeElement && document.activeElement.dataset.fk === key)) {
      const again = document.querySelector(`[data-fk="${CSS.escape(key)}"]`);
      if (again) again.focus();
    }
  };

  // ---- Formatting --------------------------------------------------------------------------------
  const money = (total, currency) => {
    if (total == null) return '—';
    try { return new Intl.NumberFormat(LOCALE, {style: 'currency', currency: currency || 'EUR'}).format(total); }
    catch (e) { return `${Number(total).toFixed(2)} ${currency || ''}`.trim(); }
  };
  const duration = ms => {
    const s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return `${s} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} min ${String(s % 60).padStart(2, '0')} s`;
    return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')}`;
  };
  const rtf = new Intl.RelativeTimeFormat(LOCALE, {numeric: 'auto'});
  const ago = iso => {
    const s = Math.round((Date.parse(iso) - Date.now()) / 1000);
    if (Math.abs(s) < 60) return rtf.format(s, 'second');
    if (Math.abs(s) < 3600) return rtf.format(Math.round(s / 60), 'minute');
    return rtf.format(Math.round(s / 3600), 'hour');
  };
  const clock = iso => iso ? new Date(iso).toLocaleTimeString(LOCALE, {hour: '2-digit', minute: '2-digit'}) : '';
  let regions = null;
  try { regions = new Intl.DisplayNames([LOCALE], {type: 'region'}); } catch (e) {}
  const country = code => {
    if (!code) return '';
    try { return regions ? regions.of(String(code).toUpperCase()) : code; } catch (e) { return code; }
  };
  const place = v => [v.city, country(v.country)].filter(Boolean).join(', ');
  // Without a location, a short stable label tells visitors apart in the list.
  const visitorName = v => place(v) || `${T.visitor} ${String(v.id || '').slice(0, 4).toUpperCase()}`;
  const deviceKind = v => v.device ? T['device_' + v.device] || v.device : '';
  const deviceText = v => [deviceKind(v), v.browser, v.os].filter(Boolean).join(' · ') || '—';
  const plural = new Intl.PluralRules(LOCALE);
  const count = (key, n) => tr(`${key}_${plural.select(n) === 'one' ? 'one' : 'other'}`, {n});
  const siteName = key => (SITES.get(key) || {}).name || key || '';
  const itemCount = cart => cart ? (cart.item_count != null ? cart.item_count : (cart.items || []).length) : 0;
  const streamKey = id => String(id).split('-').map(Number);
  const after = (a, b) => {
    const [am, as] = streamKey(a), [bm, bs] = streamKey(b);
    return am > bm || (am === bm && as > bs);
  };

  // ---- State ---------------------------------------------------------------------------------------
  const S = {
    visitors: new Map(),   // session id → SESSION_SUMMARY + {site, cart}
    requests: new Map(),   // request id → REQUEST
    pops: new Map(),       // call id → {call, session, cart, pages, until}
    panel: null,           // {id, data | null}
    lastIds: {},           // site key → last stream id applied
    filter: '',
    alerted: new Set(),
    snapshots: 0,
  };
  const shown = site => !S.filter || site === S.filter;

  // ---- Connection ------------------------------------------------------------------------------------
  let ws = null, seq = 0, backoff = 0, failures = 0, held = null, retry = 0, everOpen = false, pauseUntil = 0;
  const pending = new Map();

  const setConn = state => {
    const el = $('conn');
    el.dataset.state = state;
    el.replaceChildren();
    if (state === 'expired') {
      el.append(h('a', {href: '/login?next=/console'}, T.conn_expired));
    } else {
      el.append(T['conn_' + state] || state);
    }
  };

  function send(type, payload) {
    return new Promise((resolve, reject) => {
      if (!ws || ws.readyState !== WebSocket.OPEN) {
        reject({code: 'offline', message: T.err_offline});
        return;
      }
      const id = ++seq;
      pending.set(id, {resolve, reject});
      ws.send(JSON.stringify({id, type, ...(payload || {})}));
    });
  }

  let paused = false;  // the hub said live events do not reach us now (`status`)

  function connect() {
    clearTimeout(retry);
    setConn(everOpen ? 'offline' : 'connecting');
    const socket = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/console/ws`);
    ws = socket;
    let opened = false;
    socket.onopen = () => { opened = true; everOpen = true; failures = 0; paused = false; subscribe(socket); };
    socket.onmessage = e => {
      let msg;
      try { msg = JSON.parse(e.data); } catch (err) { return; }
      onMessage(msg, socket);
    };
    socket.onclose = () => {
      if (ws !== socket) return;
      ws = null;
      for (const p of pending.values()) p.reject({code: 'offline', message: T.err_offline});
      pending.clear();
      held = null;
      if (!opened) failures++;
      reconnectLater();
    };
  }

  function reconnectLater() {
    setConn('offline');
    // A refused upgrade looks like a network error; after two, ask the page whether we are
    // still signed in, and stop retrying when we are not.
    if (failures >= 2) {
      fetch('/console', {redirect: 'manual', credentials: 'same-origin', cache: 'no-store'}).then(r => {
        if (r.type === 'opaqueredirect' || r.status === 401 || r.status === 403) setConn('expired');
        else schedule();
      }, schedule);
      return;
    }
    schedule();
  }
  function schedule() {
    // Exponential backoff with jitter, capped at 15 s: a restarting server is not stampeded.
    const base = Math.min(15000, 500 * 2 ** backoff++);
    const wait = Math.max(base / 2 + Math.random() * base / 2, pauseUntil - Date.now());
    retry = setTimeout(connect, wait);
  }

  async function subscribe(socket) {
    const resuming = Object.keys(S.lastIds).length > 0;
    held = [];  // live events wait here until the snapshot (if any) is applied
    try {
      const res = await send('subscribe', {sites: null, last_event_ids: S.lastIds});
      if (!resuming || res.gap) {
        S.snapshots++;
        applySnapshot(await send('snapshot', {site: null}));
      }
      const queued = held || [];
      held = null;
      queued.forEach(applyEvent);
      backoff = 0;
      setConn(paused ? 'paused' : 'live');
      if (S.panel) loadPanel(S.panel.id, false);
    } catch (e) {
      held = null;
      if (ws === socket) socket.close();
    }
  }

  function onMessage(msg, socket) {
    if (msg.type === 'result') {
      const p = pending.get(msg.id);
      if (!p) return;
      pending.delete(msg.id);
      msg.success ? p.resolve(msg.result || {}) : p.reject(msg.error || {code: 'error', message: ''});
    } else if (msg.type === 'event') {
      held ? held.push(msg.event) : applyEvent(msg.event);
    } else if (msg.type === 'status') {
      // The hub's store (Redis) is away: live events stop until it is back, then a
      // `hub.resync` brings what was missed. Say so rather than show a stale "Live".
      paused = !msg.live;
      const state = $('conn').dataset.state;
      if (state === 'live' || state === 'paused') setConn(paused ? 'paused' : 'live');
    } else if (msg.type === 'ping') {
      if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({id: ++seq, type: 'pong'}));
    }
  }

  // ---- Applying state ----------------------------------------------------------------------------------
  function upsertVisitor(summary, site) {
    if (!summary || !summary.id) return null;
    const old = S.visitors.get(summary.id) || {};
    const v = {...old, ...summary, site: summary.site || site || old.site};
    // Pageview events carry no cart (the collect path reads none): keep the one we know.
    if (summary.cart_total == null && old.cart_total != null) {
      v.cart_total = old.cart_total;
      v.cart_currency = old.cart_currency;
    }
    if (summary.cart === undefined) v.cart = old.cart;
    S.visitors.set(v.id, v);
    return v;
  }

  function applySnapshot(snap) {
    S.visitors.clear();
    S.requests.clear();
    for (const v of snap.visitors || []) {
      const cart = v.cart || null;
      upsertVisitor({...v, cart}, v.site || v.site_key);
    }
    for (const r of snap.requests || []) S.requests.set(r.id, r);
    for (const c of snap.calls || []) {
      const call = c.call || c;
      if (RINGING.has(call.status) && call.direction !== 'outbound') {
        S.pops.set(call.id, {call, session: c.session || null, cart: c.cart || null, pages: c.pages || [], site: c.site});
      }
    }
    renderAll();
  }

  function applyEvent(ev) {
    if (!ev || !ev.kind) return;
    if (ev.site && ev.id) {
      const last = S.lastIds[ev.site];
      if (last && !after(ev.id, last)) return;  // already applied (replay overlap)
      S.lastIds[ev.site] = ev.id;
    }
    const d = ev.data || {};
    switch (ev.kind) {
      case 'visitor.pageview': {
        const v = upsertVisitor({...d.session, current_url: d.page && d.page.url || (d.session || {}).current_url,
          current_title: d.page && d.page.title || (d.session || {}).current_title}, ev.site);
        if (v && S.panel && S.panel.id === v.id && S.panel.data) {
          const pages = S.panel.data.pages || (S.panel.data.pages = []);
          const p = d.page || {};
          if (!pages.some(x => x.url === p.url && x.at === p.at)) pages.push(p);
          S.panel.data.session = {...S.panel.data.session, ...d.session};
          renderPanel();
        }
        renderVisitors();
        renderQueue();
        break;
      }
      case 'visitor.cart': {
        const v = S.visitors.get(d.session_id) || upsertVisitor({id: d.session_id}, ev.site);
        v.cart = d.cart;
        if (d.cart) { v.cart_total = d.cart.total; v.cart_currency = d.cart.currency; }
        for (const r of S.requests.values()) if (r.session_id === d.session_id) r.cart = d.cart;
        for (const p of S.pops.values()) if (p.session && p.session.id === d.session_id) p.cart = d.cart;
        if (S.panel && S.panel.id === d.session_id && S.panel.data) { S.panel.data.cart = d.cart; renderPanel(); }
        renderVisitors();
        renderQueue();
        renderPops();
        break;
      }
      case 'visitor.consent': {
        const v = S.visitors.get(d.session_id);
        if (v) v.consent = d.consent;
        break;
      }
      case 'contact.requested': {
        const r = d.request;
        if (!r) break;
        S.requests.set(r.id, r);
        renderQueue();
        if (!S.alerted.has(r.id) && Date.now() - Date.parse(ev.at || r.created_at) < ALERT_MAX_AGE_MS) {
          S.alerted.add(r.id);
          alertAdvisor(r);
        }
        refreshPanelFor(r.session_id);
        break;
      }
      case 'contact.claimed': {
        if (d.request) { S.requests.set(d.request.id, {...S.requests.get(d.request.id), ...d.request}); renderQueue(); }
        refreshPanelFor(d.request && d.request.session_id);
        break;
      }
      case 'contact.closed': {
        if (d.request) { S.requests.delete(d.request.id); renderQueue(); }
        refreshPanelFor(d.request && d.request.session_id);
        break;
      }
      case 'call.ringing': {
        const call = d.call || {};
        if (d.session) upsertVisitor({...d.session, cart: d.cart || (S.visitors.get(d.session.id) || {}).cart}, ev.site);
        S.pops.set(call.id, {call, session: d.session || null, cart: d.cart || null, pages: d.pages || [], site: ev.site});
        renderPops();
        renderVisitors();
        if (Date.now() - Date.parse(ev.at || call.started_at) < ALERT_MAX_AGE_MS) alertCall(call, ev.site);
        break;
      }
      case 'call.updated': {
        const call = d.call || {};
        const pop = S.pops.get(call.id);
        if (pop) {
          pop.call = {...pop.call, ...call};
          // Keep an ended call on screen a moment so the advisor sees how it ended.
          if (!RINGING.has(call.status) && call.status !== 'in-progress') pop.until = Date.now() + 8000;
          renderPops();
        }
        refreshPanelFor(call.session_id);
        break;
      }
      case 'call.tagged':
      case 'contact.tagged': {
        if (S.panel && S.panel.data) refreshPanelFor(S.panel.id);
        break;
      }
      case 'visitor.erased': {
        // Someone was erased (the event does not say who): nothing of theirs stays on screen.
        resync(false);
        break;
      }
      case 'hub.resync': {
        // Events were lost while the hub's Redis was away: the database has what they said.
        resync(true);
        break;
      }
    }
  }

  async function resync(alertNew) {
    // Rebuild from a snapshot (which no longer holds an erased person) and reload the panel.
    // After lost events, alert for the requests and ringing calls this console never heard of.
    const knownRequests = new Set(S.requests.keys()), knownCalls = new Set(S.pops.keys());
    try {
      const snap = await send('snapshot', {site: null});
      S.pops.clear();
      applySnapshot(snap);
    } catch (e) { return; }
    if (alertNew) {
      const now = Date.now();
      for (const r of S.requests.values()) {
        if (knownRequests.has(r.id) || S.alerted.has(r.id) || r.status !== 'open') continue;
        if (now - Date.parse(r.created_at) >= ALERT_MAX_AGE_MS) continue;
        S.alerted.add(r.id);
        alertAdvisor(r);
      }
      for (const [id, pop] of S.pops) {
        if (!knownCalls.has(id) && now - Date.parse(pop.call.started_at) < ALERT_MAX_AGE_MS) alertCall(pop.call, pop.site);
      }
    }
    const id = S.panel && S.panel.id;
    if (!id) return;
    try {
      const data = await send('visitor', {session_id: id});
      if (S.panel && S.panel.id === id) { S.panel.data = data; renderPanel(); }
    } catch (e) {
      if (S.panel && S.panel.id === id) closePanel();
    }
  }

  // ---- Alerts: one per advisor ---------------------------------------------------------------------------
  let leader = !('locks' in navigator);
  if (!leader) {
    // Held until the tab closes; the browser hands it to the next waiting tab.
    navigator.locks.request('calltrack-notify', () => new Promise(() => { leader = true; })).catch(() => { leader = true; });
  }
  let audio = null;
  const unlockAudio = () => {
    try {
      audio = audio || new (window.AudioContext || window.webkitAudioContext)();
      if (audio.state === 'suspended') audio.resume();
    } catch (e) {}
  };
  document.addEventListener('pointerdown', unlockAudio, {once: true});
  document.addEventListener('keydown', unlockAudio, {once: true});
  const beep = (tones) => {
    if (!audio) return;
    try {
      let t = audio.currentTime;
      for (const f of tones) {
        const o = audio.createOscillator(), g = audio.createGain();
        o.type = 'sine';
        o.frequency.value = f;
        g.gain.setValueAtTime(0.0001, t);
        g.gain.exponentialRampToValueAtTime(0.25, t + 0.02);
        g.gain.exponentialRampToValueAtTime(0.0001, t + 0.22);
        o.connect(g).connect(audio.destination);
        o.start(t);
        o.stop(t + 0.25);
        t += 0.18;
      }
    } catch (e) {}
  };
  const notify = (title, body, tag, onclick) => {
    if (!('Notification' in window) || Notification.permission !== 'granted') return;
    try {
      // The tag makes the system replace rather than stack a duplicate of the same request.
      const n = new Notification(title, {body, tag, lang: LANG});
      n.onclick = () => { window.focus(); onclick && onclick(); n.close(); };
    } catch (e) {}
  };
  function alertAdvisor(r) {
    if (!leader) return;
    beep([880, 1175]);
    notify(T.notify_title, tr('notify_body', {phone: r.phone_display || r.phone, site: siteName(r.site)}),
      `calltrack-request-${r.id}`, () => r.session_id && openPanel(r.session_id));
  }
  function alertCall(call, site) {
    if (!leader) return;
    beep([660, 880, 660]);
    notify(T.incoming, `${call.caller_display || call.caller || ''} · ${siteName(site)}`,
      `calltrack-call-${call.id}`, () => call.session_id && openPanel(call.session_id));
  }
  const notifyButton = $('notify');
  const updateNotifyButton = () => {
    const supported = 'Notification' in window;
    notifyButton.hidden = !supported || Notification.permission === 'denied';
    if (supported && Notification.permission === 'granted') {
      notifyButton.textContent = T.notify_on;
      notifyButton.disabled = true;
    }
  };
  notifyButton.addEventListener('click', () => {
    unlockAudio();
    Notification.requestPermission().then(updateNotifyButton, updateNotifyButton);
  });
  updateNotifyButton();

  // ---- Toast ------------------------------------------------------------------------------------------------
  let toastTimer = 0;
  function toast(text) {
    const el = $('toast');
    el.textContent = text;
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { el.hidden = true; }, 6000);
  }
  const errorText = err => T['err_' + (err && err.code)] || tr('err_generic', {msg: err && err.message || ''});

  // ---- Commands -------------------------------------------------------------------------------------------------
  async function act(button, type, payload) {
    button.disabled = true;
    button.setAttribute('aria-busy', 'true');
    try {
      return await send(type, payload);
    } catch (err) {
      toast(errorText(err));
      return null;
    } finally {
      if (button.isConnected) { button.disabled = false; button.removeAttribute('aria-busy'); }
    }
  }
  async function claim(r, button) {
    const res = await act(button, 'claim', {request_id: r.id});
    if (res && res.request) { S.requests.set(r.id, {...r, ...res.request}); renderQueue(); }
  }
  async function callBack(r, button) {
    button.textContent = T.calling;
    const res = await act(button, 'callback', {request_id: r.id});
    if (button.isConnected) button.textContent = T.call_back;
    if (res && res.call_id) { r.call_id = res.call_id; renderQueue(); }
  }
  async function tagTarget(target, id, select, button) {
    if (!select.value) { select.focus(); return; }
    const res = await act(button, 'tag', {target, target_id: id, tag: select.value});
    if (res && target === 'request') { S.requests.delete(id); renderQueue(); }
    if (res && S.panel) refreshPanelFor(S.panel.id);
  }
  const tagPicker = (target, id, fkBase) => {
    const label = `${fkBase}-label`;
    const select = h('select', {'aria-labelledby': label, 'data-fk': `${fkBase}-select`},
      h('option', {value: ''}, `${T.outcome}…`),
      TAGS.map(t => h('option', {value: t}, T['tag_' + t])));
    const button = h('button', {type: 'button', class: 'small secondary', 'data-fk': `${fkBase}-save`,
      onclick: () => tagTarget(target, id, select, button)}, 'OK');
    return h('span', {class: 'tagger'}, h('span', {id: label, class: 'sr-only'}, T.outcome), select, button);
  };

  // ---- Rendering: the queue ---------------------------------------------------------------------------------
  function statusBadge(r) {
    if (r.status === 'open') return h('span', {class: 'badge open'}, T.status_open);
    if (r.status === 'closed') return h('span', {class: 'badge'}, T.status_closed);
    const who = r.claimed_by || {};
    if (who.id === ME.id) return h('span', {class: 'badge mine'}, T.status_mine);
    return h('span', {class: 'badge taken'}, tr('status_taken', {who: (who.email || '').split('@')[0] || '?'}));
  }

  function requestItem(r) {
    const v = r.session_id ? S.visitors.get(r.session_id) || {} : {};
    const visitor = {...(r.visitor || {}), ...v};
    const cart = v.cart || r.cart;
    const phoneId = `req-${r.id}-phone`;
    const mine = r.status === 'claimed' && r.claimed_by && r.claimed_by.id === ME.id;
    const takenByOther = r.status === 'claimed' && !mine;
    const actions = h('div', {class: 'actions'},
      r.status === 'open' && h('button', {type: 'button', class: 'claim', 'data-fk': `req-${r.id}-claim`,
        'aria-describedby': phoneId, onclick: e => claim(r, e.currentTarget)}, T.claim),
      !takenByOther && h('button', {type: 'button', class: 'secondary call', 'data-fk': `req-${r.id}-call`,
        'aria-describedby': phoneId, onclick: e => callBack(r, e.currentTarget)}, T.call_back),
      !takenByOther && tagPicker('request', r.id, `req-${r.id}-tag`),
      r.session_id && h('button', {type: 'button', class: 'link', 'data-fk': `req-${r.id}-view`,
        'aria-describedby': phoneId, onclick: () => openPanel(r.session_id)}, `${T.view} →`));
    const context = [];
    if (cart && itemCount(cart)) context.push(h('span', {class: 'cart-pill'}, `${money(cart.total, cart.currency)} · ${count('items', itemCount(cart))}`));
    if (visitor.current_url) context.push(pageLink(visitor.current_url, visitor.current_title, 'page'));
    if (visitor.channel) context.push(h('span', {class: 'chan'}, [visitor.channel, visitor.campaign].filter(Boolean).join(' · ')));
    if (!r.session_id) context.push(h('span', {class: 'muted'}, T.no_session));
    return h('li', {class: `request ${r.status}${S.panel && S.panel.id === r.session_id ? ' selected' : ''}`, 'data-id': r.id},
      h('div', {class: 'req-head'},
        h('span', {class: 'phone', id: phoneId}, r.phone_display || r.phone),
        statusBadge(r),
        r.outside_hours && h('span', {class: 'badge warn'}, T.outside_hours),
        h('span', {class: 'spacer'}),
        h('time', {datetime: r.created_at, 'data-ago': r.created_at, title: clock(r.created_at)}, ago(r.created_at)),
        SITES.size > 1 && h('span', {class: 'site'}, siteName(r.site))),
      r.message && h('p', {class: 'msg'}, h('span', {class: 'sr-only'}, `${T.message}: `), r.message),
      context.length ? h('div', {class: 'req-context'}, context) : null,
      actions);
  }

  function renderQueue() {
    const items = [...S.requests.values()].filter(r => r.status !== 'closed' && shown(r.site))
      .sort((a, b) => Date.parse(a.created_at) - Date.parse(b.created_at));
    $('queue-count').textContent = items.length;
    keepFocus(() => {
      $('queue-body').replaceChildren(items.length
        ? h('ul', {class: 'requests'}, items.map(requestItem))
        : h('p', {class: 'empty'}, T.no_requests));
    });
  }

  // ---- Rendering: live visitors ---------------------------------------------------------------------------
  function visitorRow(v) {
    const cart = v.cart;
    const total = cart ? cart.total : v.cart_total;
    const selected = S.panel && S.panel.id === v.id;
    return h('tr', {class: selected ? 'selected' : null, 'data-id': v.id, onclick: e => {
      if (!e.target.closest('a,button')) openPanel(v.id);
    }},
      h('td', {class: 'who'},
        h('button', {type: 'button', class: 'link strong', 'data-fk': `vis-${v.id}`, 'aria-pressed': selected ? 'true' : 'false',
          onclick: () => openPanel(v.id)}, visitorName(v)),
        SITES.size > 1 && h('div', {class: 'muted small'}, siteName(v.site))),
      h('td', {class: 'page'}, pageLink(v.current_url, v.current_title, 'title'),
        h('div', {class: 'muted small url'}, shortUrl(v.current_url))),
      h('td', {class: 'num'}, h('span', {'data-since': v.started_at, 'data-seen': v.last_seen_at}, v.started_at ? duration(onSite(v.started_at, v.last_seen_at)) : '—'),
        v.pageviews != null && h('div', {class: 'muted small'}, count('pages', v.pageviews))),
      h('td', {class: 'num'}, total != null && Number(total) > 0
        ? [h('strong', null, money(total, cart ? cart.currency : v.cart_currency)),
           cart && h('div', {class: 'muted small'}, count('items', itemCount(cart)))]
        : h('span', {class: 'muted'}, '—')),
      h('td', null, h('span', {class: 'chan'}, v.channel || '—'),
        v.campaign && h('div', {class: 'muted small'}, v.campaign)),
      h('td', null, deviceKind(v) || '—',
        h('div', {class: 'muted small'}, [v.browser, v.os].filter(Boolean).join(' · '))));
  }

  function renderVisitors() {
    const now = Date.now();
    for (const [id, v] of S.visitors) {
      if (v.last_seen_at && now - Date.parse(v.last_seen_at) > VISIT_TIMEOUT_MS && !(S.panel && S.panel.id === id)) S.visitors.delete(id);
    }
    const list = [...S.visitors.values()].filter(v => shown(v.site) && v.started_at)
      .sort((a, b) => Date.parse(b.last_seen_at || 0) - Date.parse(a.last_seen_at || 0));
    $('visitors-count').textContent = list.length;
    keepFocus(() => {
      if (!list.length) { $('visitors-body').replaceChildren(h('p', {class: 'empty'}, T.no_visitors)); return; }
      $('visitors-body').replaceChildren(h('table', {class: 'visitors'},
        h('caption', {class: 'sr-only'}, T.visitors),
        h('thead', null, h('tr', null,
          ['col_visitor', 'col_page', 'col_time', 'col_cart', 'col_channel', 'col_device'].map(k => h('th', {scope: 'col'}, T[k])))),
        h('tbody', null, list.map(visitorRow))));
    });
  }

  // ---- Rendering: screen-pops -----------------------------------------------------------------------------------
  function popCard(p) {
    const call = p.call || {};
    const s = p.session || (call.session_id && S.visitors.get(call.session_id)) || null;
    const cart = p.cart || (s && (S.visitors.get(s.id) || {}).cart);
    const state = RINGING.has(call.status) ? 'ringing' : call.status === 'in-progress' ? 'answered' : 'ended';
    const title = {ringing: T.incoming, answered: T.in_progress, ended: T.call_ended}[state];
    return h('section', {class: `pop ${state}`, 'aria-label': title},
      h('div', {class: 'pop-head'},
        h('span', {class: 'pulse', 'aria-hidden': 'true'}),
        h('strong', null, title),
        h('span', {class: 'phone'}, call.caller_display || call.caller || ''),
        h('span', {class: 'muted'}, siteName(p.site || call.site)),
        h('span', {class: 'spacer'}),
        s && h('button', {type: 'button', class: 'small', 'data-fk': `pop-${call.id}-open`, onclick: () => openPanel(s.id)}, T.open_visitor),
        h('button', {type: 'button', class: 'small ghost-dark', 'data-fk': `pop-${call.id}-dismiss`,
          onclick: () => { S.pops.delete(call.id); renderPops(); }}, T.dismiss)),
      s ? h('div', {class: 'pop-body'},
        h('div', null, h('div', {class: 'label'}, T.channel),
          h('div', null, [s.channel, s.source && s.medium ? `${s.source} / ${s.medium}` : s.source, s.campaign].filter(Boolean).join(' · ') || '—')),
        h('div', null, h('div', {class: 'label'}, T.cart),
          cart && itemCount(cart)
            ? [h('strong', null, `${money(cart.total, cart.currency)} · ${count('items', itemCount(cart))}`),
               h('ul', {class: 'mini'}, (cart.items || []).slice(0, 4).map(i => h('li', null, `${i.qty || 1} × ${i.name || i.sku || ''}`)))]
            : h('span', {class: 'muted'}, T.empty_cart)),
        h('div', null, h('div', {class: 'label'}, T.journey),
          h('ol', {class: 'mini'}, (p.pages || []).slice(-5).reverse().map(pg => h('li', null, pageLink(pg.url, pg.title)))))
      ) : h('div', {class: 'pop-body muted'}, T.unmatched));
  }
  function renderPops() {
    const now = Date.now();
    for (const [id, p] of S.pops) if (p.until && p.until < now) S.pops.delete(id);
    keepFocus(() => $('pops').replaceChildren(...[...S.pops.values()].filter(p => shown(p.site || (p.call || {}).site)).map(popCard)));
  }

  // ---- Rendering: the visitor panel -----------------------------------------------------------------------------
  function openPanel(id) {
    if (!id) return;
    loadPanel(id, true);
    renderVisitors();
    renderQueue();
  }
  async function loadPanel(id, focus) {
    const same = S.panel && S.panel.id === id;
    S.panel = {id, data: same ? S.panel.data : null};
    if (!same) renderPanel();
    if (focus) $('panel-title').focus();
    try {
      const data = await send('visitor', {session_id: id});
      if (!S.panel || S.panel.id !== id) return;
      S.panel.data = data;
      if (data.session) upsertVisitor({...data.session, cart: data.cart || null}, data.site);
      renderPanel();
    } catch (err) {
      if (S.panel && S.panel.id === id && !S.panel.data) {
        $('panel-body').replaceChildren(h('p', {class: 'error'}, errorText(err)));
      }
    }
  }
  let refreshTimer = 0;
  function refreshPanelFor(sessionId) {
    if (!sessionId || !S.panel || S.panel.id !== sessionId) return;
    // Several events for one visitor often come together (claim, call, tag): reload once.
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(() => S.panel && S.panel.id === sessionId && loadPanel(sessionId, false), 150);
  }
  function closePanel() {
    S.panel = null;
    renderPanel();
    renderVisitors();
    renderQueue();
  }

  const dl = rows => h('dl', {class: 'facts'}, rows.filter(r => r[1]).map(([k, v]) => [h('dt', null, k), h('dd', null, v)]));

  function renderPanel() {
    const body = $('panel-body');
    const panel = S.panel;
    if (!panel) {
      $('panel-title').textContent = T.visitor;
      $('panel-close').hidden = true;
      body.replaceChildren(h('p', {class: 'muted'}, T.pick_visitor));
      return;
    }
    const live = S.visitors.get(panel.id) || {};
    const data = panel.data;
    if (!data) { body.replaceChildren(h('p', {class: 'muted'}, T.loading)); return; }
    const s = {...data.session, ...live};
    const cart = live.cart || data.cart;
    const pages = (data.pages || []).slice().sort((a, b) => Date.parse(b.at || 0) - Date.parse(a.at || 0));
    const current = pages[0] || {url: s.current_url, title: s.current_title};
    $('panel-title').textContent = visitorName({...s, id: panel.id});
    $('panel-close').hidden = false;
    keepFocus(() => body.replaceChildren(
      h('div', {class: 'panel-top'},
        h('span', {class: 'chan big'}, s.channel || '—'),
        s.campaign && h('span', {class: 'muted small'}, s.campaign)),
      h('div', {class: 'now'}, h('div', {class: 'label'}, T.now_on),
        pageLink(current.url, current.title, 'now-title'),
        h('div', {class: 'muted small url'}, shortUrl(current.url)),
        h('div', {class: 'muted small'}, s.started_at && h('span', {'data-since': s.started_at, 'data-seen': s.last_seen_at}, duration(onSite(s.started_at, s.last_seen_at))),
          ' · ', count('pages', s.pageviews != null ? s.pageviews : pages.length),
          s.consent === false && [' · ', T.consent_no])),
      h('h3', null, T.cart, cart && itemCount(cart) ? h('span', {class: 'count'}, money(cart.total, cart.currency)) : null),
      cart && (cart.items || []).length
        ? h('table', {class: 'cart'},
            h('thead', null, h('tr', null, h('th', {scope: 'col'}, T.col_item), h('th', {scope: 'col', class: 'num'}, T.qty), h('th', {scope: 'col', class: 'num'}, T.total))),
            h('tbody', null, cart.items.map(i => h('tr', null,
              h('td', null, i.name || '', i.sku && h('div', {class: 'muted small'}, i.sku)),
              h('td', {class: 'num'}, i.qty != null ? i.qty : ''),
              h('td', {class: 'num'}, i.price != null ? money(Number(i.price) * Number(i.qty || 1), cart.currency) : '')))),
            h('tfoot', null, h('tr', null, h('th', {scope: 'row', colspan: '2'}, T.total), h('td', {class: 'num strong'}, money(cart.total, cart.currency)))))
        : h('p', {class: 'muted'}, T.empty_cart),
      h('h3', null, T.source),
      dl([[T.channel, s.channel], [T.src, s.source], [T.medium, s.medium], [T.campaign, s.campaign], [T.keyword, s.term],
        [T.landing, s.landing_url && pageLink(s.landing_url, shortUrl(s.landing_url))]]),
      h('h3', null, T.geo, ' · ', T.device),
      dl([[T.geo, [s.city, s.region, country(s.country)].filter(Boolean).join(', ')], [T.device, deviceText(s)], [T.language, s.language]]),
      h('h3', null, T.journey, h('span', {class: 'count'}, String(pages.length))),
      pages.length
        ? h('ol', {class: 'timeline'}, pages.map(p => h('li', null,
            h('time', {datetime: p.at}, clock(p.at)), pageLink(p.url, p.title), h('div', {class: 'muted small url'}, shortUrl(p.url)))))
        : h('p', {class: 'muted'}, T.none),
      h('h3', null, T.calls),
      (data.calls || []).length
        ? h('ul', {class: 'history calls'}, data.calls.map(c => h('li', null,
            h('div', null, h('strong', null, c.direction === 'outbound' ? T.outbound : T.inbound), ' · ',
              clock(c.started_at), ' · ', c.status || '', c.duration_s != null ? ` · ${duration(c.duration_s * 1000)}` : '',
              c.outcome_tag && h('span', {class: 'badge'}, T['tag_' + c.outcome_tag] || c.outcome_tag)),
            tagPicker('call', c.id, `call-${c.id}-tag`))))
        : h('p', {class: 'muted'}, T.no_calls),
      h('h3', null, T.visitor_requests),
      (data.requests || []).length
        ? h('ul', {class: 'history asks'}, data.requests.map(r => h('li', null,
            h('div', null, h('strong', null, r.phone_display || r.phone), ' · ', clock(r.created_at), ' ', statusBadge(r),
              r.outcome && h('span', {class: 'badge'}, T['tag_' + r.outcome] || r.outcome)),
            r.message && h('p', {class: 'msg'}, r.message))))
        : h('p', {class: 'muted'}, T.none)));
  }

  function renderAll() {
    renderQueue();
    renderVisitors();
    renderPops();
    if (S.panel) renderPanel();
  }

  // ---- Clock: time on site ticks, relative times and stale visits refresh ---------------------------------------
  function onSite(since, seen) {
    const end = seen ? Math.min(Date.now(), Date.parse(seen) + SEEN_SLACK_MS) : Date.now();
    return Math.max(0, end - Date.parse(since));
  }
  setInterval(() => {
    for (const el of document.querySelectorAll('[data-since]')) el.textContent = duration(onSite(el.dataset.since, el.dataset.seen));
  }, 1000);
  // The live list read again (see REFRESH_MS): who is still there, and when they were last seen.
  setInterval(async () => {
    if (!ws || ws.readyState !== 1 || held || paused) return;
    try {
      // Events keep arriving while the snapshot is on its way: a visitor seen since it was
      // asked for (server time, give or take the clocks) stays, and keeps what it showed.
      const asked = Date.now() - 30 * 1000;
      const snap = await send('snapshot', {site: null});
      const live = new Map((snap.visitors || []).map(v => [v.id, v]));
      for (const [id, v] of S.visitors) {
        if (live.has(id) || (S.panel && S.panel.id === id)) continue;
        if (!v.last_seen_at || Date.parse(v.last_seen_at) < asked) S.visitors.delete(id);
      }
      for (const v of live.values()) {
        const known = S.visitors.get(v.id);
        if (known && Date.parse(known.last_seen_at || 0) > Date.parse(v.last_seen_at || 0)) continue;
        upsertVisitor({...v, cart: v.cart || known?.cart || null}, v.site || v.site_key);
      }
      renderVisitors();
    } catch (e) { /* the next round tries again */ }
  }, REFRESH_MS);
  setInterval(() => {
    for (const el of document.querySelectorAll('[data-ago]')) el.textContent = ago(el.dataset.ago);
    renderVisitors();
    renderPops();
  }, 15000);

  $('panel-close').addEventListener('click', closePanel);
  $('site-filter').addEventListener('change', e => { S.filter = e.target.value; renderAll(); });
  document.addEventListener('keydown', e => { if (e.key === 'Escape' && S.panel && document.activeElement.closest('#panel')) closePanel(); });

  // Test and debugging hook: drop the socket as a network failure would, and stay away a while.
  window.__calltrackConsole = {
    drop: (awayMs) => { pauseUntil = Date.now() + (awayMs || 0); if (ws) ws.close(); },
    send,
    state: S,
    isLeader: () => leader,
  };
  renderAll();
  connect();
})();
