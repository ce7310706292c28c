// Calltrack visitor snippet: pageviews, visible time on page, cart, consent, and dynamic number
// insertion (DNI). Protocol: docs/collect-protocol.md. The server sends it as
// `window.__calltrack_cfg={...};` followed by calltrack.min.js, this file minified by terser
// (infra/build-snippet.sh), which renames locals but not these shared names, and the whole must
// stay under 3,000 bytes gzipped (widget/snippet_size.py), so names used often are one or two
// letters; they are listed here.
//
//   C  configuration {k, u, cm, b}        S  session id (memory; localStorage with consent)
//   V  visitor id (only with consent)     c  consent: null unknown, true, false
//   G  Global Privacy Control is on       P  page id, new for each pageview (SPA included)
//   A  visible ms counted so far          Z  performance.now() when it became visible, or 0
//   X  time sent by the last leave        Q  events waiting for the first answer (session id)
//   T  match table: [digits as written, replacement digits, replacement number, number]
//   RE candidate runs of digits           L  the swaps in force (`n`)
//   J  L as JSON, to notice a change; set once the numbers are known (answer, stored, timeout)
//   H  [element, its visibility] hidden until the swap
//   M  swaps stored by an earlier page   Y  path and query of the current page
//   F  `calltrack('number', cb)` callbacks             E  e164 those callbacks last received
//
// It must never throw and never write to the console: everything that touches the page, the
// network, storage or merchant callbacks runs inside try/catch or a promise that is caught.
((W, D, N) => {
  if (W.calltrack?.ct) return; // the tag was pasted twice: the first copy does the work
  const C = W.__calltrack_cfg || {}, U = C.u, B = C.b || [],
    // cm: not_required, or (older servers) required, the default.
    NR = /^n/.test(C.cm), R = D.documentElement, js = JSON.stringify, now = () => performance.now(),
    vis = () => !D.hidden,
    // localStorage may be missing or throw (blocked cookies, private modes): ls(k) reads,
    // ls(k, text) writes, ls(k, 0) removes.
    ls = (k, v) => {
      try {
        const s = localStorage;
        return v == null ? s.getItem(k) : v ? s.setItem(k, v) : s.removeItem(k)
      } catch {}
    },
    // Storage is allowed after consent, or when the site does not require it; GPC always wins.
    ok = () => !G && (c || c == null && NR),
    // 96 random bits in decimal digits (16 to 30 of them; the server takes 16-32 hex digits).
    id = () => crypto.getRandomValues(new Uint32Array(3)).join('');
  // G: Global Privacy Control, from the browser or (an answer's `g`) its Sec-GPC header.
  let G = !!N.globalPrivacyControl, S = null, V = null, c = null, P = id(), A = 0, Z = vis() && now(), X,
    Q = Promise.resolve(), T = [], RE, L, J, H = [], F = [], E = 0, M, Y;

  // ---- Consent remembered from an earlier page: the keys only exist if consent allowed them.
  if (!G) {
    V = ls('ct_v');
    try {
      const o = JSON.parse(ls('ct_s'));
      // A session ends after 30 minutes without activity (the server's rule too).
      if (Date.now() - o?.t < 18e5) { S = o.s; M = o.n }
    } catch {}
    if ((V || ls('ct_s')) && !NR) c = true
  }
  const forget = () => { V = null; ls('ct_v', 0); ls('ct_s', 0) },
  save = () => {
    if (ok() && S) {
      ls('ct_s', js({s: S, n: L, t: Date.now()}));
      V && ls('ct_v', V)
    }
  },

  // ---- Transport. An event carries the page's state when it happened; the session and visitor
  // ids are filled in when it leaves, so that events queued behind the first request (until S is
  // known) reach the server with the session that request opened.
  send = (t, x, b) => {
    if (!U) return;
    x = {k: C.k, t, p: P, gpc: G, ...x};
    // n: retries so far. While Calltrack's database or a worker is away (502-504: a failover,
    // a restart behind the proxy; or no answer at all: a lone worker restarting) the event is
    // sent again after 5, 10 and 20 s, as long as the page is open, so a landing pageview
    // keeps its ad click. The numbers settle meanwhile (the safety timeout); events queued
    // behind the first one wait for it. (After a retry `got` also sees the outer chain end,
    // with nothing: `use` ignores an unchanged list.)
    // (setTimeout passes n + 1 on: the promise resolves to the next attempt's number.)
    const again = n => new Promise(w => setTimeout(w, 5e3 << n, n + 1)).then(go),
    go = (n = 0) => {
      try {
        x.s = S; x.c = c; x.v = ok() ? V : null;
        const j = js(x);
        // A string body goes as text/plain;charset=UTF-8: a "simple" request, no CORS preflight
        // (and fetch sends no cookies cross-origin). The last event of a page (hidden,
        // pagehide) goes as a beacon, which survives the unload.
        if (b && N.sendBeacon?.(U, j)) return;
        return fetch(U, {method: 'POST', body: j, keepalive: true})
          .then(r => r.status > 501 && n < 3 ? again(n) : r.ok && r.json(),
            e => n < 3 ? again(n) : e).then(got, got)
      } catch { got() }
    };
    S || b ? go() : Q = Q.then(go)
  },
  got = j => {
    try {
      // Any answer, even 204/404/500 or a network error, settles the numbers: with none, the
      // business number shows (and hidden elements come back) without waiting for the timeout.
      use(j?.n || L || []);
      // (g: GPC sent as a header only: nothing stays on the device, consent or not.)
      if (j?.s) { j.g && forget(G = true); S = j.s; V = j.v || V; save() }
    } catch {}
  },

  // ---- Visible time on the page, pings and leaves.
  dur = () => Math.round(A + (Z && now() - Z)),
  // On hidden, pagehide and SPA navigation. Hidden and pagehide often both fire for the same
  // page with the same time: send it once.
  leave = b => X != (X = dur()) && send('leave', {d: X}, b),

  // ---- Single-page apps: a navigation changes the path or the query. Hash changes are anchors
  // within the page, and replaceState calls that keep the URL (routers save scroll positions
  // that way) are no navigation either.
  key = () => location.pathname + location.search,
  nav = () => {
    if (Y == (Y = key())) return;
    leave();
    A = 0; Z = vis() && now(); X = -1; P = id();
    // Routers usually set document.title after pushState: read it one task later (with this
    // navigation's address and page id, taken now: a redirect, pushState then replaceState in
    // one task, is two). No referrer: the same page.
    setTimeout(x => send('pageview', {...x, ti: D.title}), 0, {u: location.href, p: P})
  },

  // ---- Dynamic number insertion.
  // Digit strings a number can be written as, longest first so a longer form wins:
  // 0033 1 23 45 67 89, +33 (0)1 23 45 67 89, +33 1 23 45 67 89, 01 23 45 67 89.
  // (nat is the national number with its trunk prefix, so the prefix is nat minus the NSN.)
  forms = x => {
    const n = x.e164.slice(x.cc.length + 1);
    return ['00' + x.cc + n, x.cc + x.nat.slice(0, -n.length) + n, x.cc + n, x.nat]
  },
  // Build T from [from, to] pairs; without `to` the entries only find (and hide) numbers.
  tab = ps => {
    T = ps.flatMap(([f, t]) => forms(f).map((a, i) => [a, t && forms(t)[i], t, f]));
    T.sort((a, b) => b[0].length - a[0].length);
    // A candidate: a digit, then digits and the separators people write between them (\s has
    // U+00A0), at least as many digits as the shortest form, so dates and prices fail fast.
    // It starts with a digit (a + before it is looked at separately): the engine skips fast.
    T[0] && (RE = RegExp('\\d(?:[\\s.()/-]*\\d){' + (T.at(-1)[0].length - 1) + ',}', 'g'))
  },
  // Elements whose text is matched across their inline children (<a>01 23 <b>45</b> 67 89</a>):
  // the inline elements that wrap parts of a number in practice. Any other element is a block.
  IN = /^([ABIUS]|EM|S(PAN|MALL|TRONG|U[BP])|FONT|MARK|LABEL)$/,
  // Whole names, any case: SVG's are lower case, and custom elements (<mat-card-title>) hold
  // page text. (<noscript> holds inert text while scripts run: rewriting it shows nothing.)
  SKIP = /^(S(CRIPT|TYLE)|T(EXTAREA|ITLE))$/i,
  NO = '[data-calltrack-noswap],[contenteditable]',
  TEL = 'a[href^="tel:" i]',
  blk = e => { while (IN.test(e.nodeName) && e.parentNode) e = e.parentNode; return e },
  // Candidate runs in s, each as [its digits, the position of each digit in s]. (matchAll
  // works on a copy of RE, so RE's lastIndex never needs resetting.)
  runs = s => [...s.matchAll(RE)].map(m =>
    [m[0].replace(/\D/g, ''), [...m[0].matchAll(/\d/g)].map(x => m.index + x.index)]),
  // How a number is written, digits aside, after its country code: 330 00 00 00 00; and its
  // national groups after the first (0113 496 0271: 496, 0271), the same in every form.
  sh = x => x.cc + x.national.replace(/\d/g, 0),
  gs = x => x.national?.match(/\d+/g).slice(1) || [],
  // Rewrite the numbers of T found in s into o (s as an array of characters; returned, or
  // undefined when nothing changed). A number starts and ends where a separator or the run's
  // edge is, so digits inside longer numbers never match. allow(first, last) says whether a
  // match (character positions) may be rewritten.
  sub = (s, allow) => {
    let o;
    for (const [d, p] of runs(s))
      for (let j = 0; j < d.length; j++) {
        if (j && p[j] - p[j - 1] == 1) continue;
        const e = T.find(([f]) => d.startsWith(f, j) && p[j + f.length] - p[j + f.length - 1] != 1);
        if (!e) continue;
        const [f, g, x, y] = e, q = p.slice(j, j += f.length), a = q[0], z = q.at(-1);
        j--;
        if (!allow(a, z) || !g) continue;
        o ||= s.split(''); // UTF-16 units, as positions are
        // Where the old number's groups after the first (020 7946 0018: 7946, 0018) would
        // begin on the page: b (its position), H (digits before it).
        const N = gs(x), H = f.length - gs(y).join('').length, b = q[H];
        // Written alike (same length and grouping): digit for digit, keeping whatever
        // grouping and markup the page uses (+34 912 345 678, 030-123 456 78).
        if (sh(x) == sh(y)) q.forEach((i, n) => o[i] = g[n]);
        else {
          // Else, where the page separates anything, what comes before the old number's last
          // groups (country code, (0), area code) takes the new number's digits one for one,
          // the rest after its last digit, and the new number's other groups follow in its
          // standard grouping with the page's separator (a space where the page's groups
          // start mid-way): 0113 496 0271 for 020 7946 0018 or 0207 946 0018, +49 (0) 30
          // 127231 for +49 (0) 30 1234 5678. Written with no separator: the digits alone. It
          // all goes in the first digit's place.
          // (Separators: the match spans more characters than it has digits.)
          let u = 0, t = g;
          const w = g.slice(0, -N.join('').length), sp = s.slice(b, z).match(/\D+|$/)[0] || ' ';
          if (N[0] && b + 1 && z - a >= f.length)
            t = s.slice(a, b).replace(/\d/g, _ => w.slice(u, ++u < H ? u : 1e9)).replace(/\d$/, '$&' + sp) + N.join(sp);
          o.fill('', a, z + 1)[a] = t
        }
      }
    return o
  },
  // Text nodes edited by us, with the text we set: their mutation records are ours to ignore.
  own = new WeakMap(),
  // Match over one run of text nodes that share a block (inline markup does not split it).
  group = g => {
    let s = '';
    const st = g.map(n => (s += n.data).length - n.length),
      at = i => st.findLastIndex(x => x <= i), // the node holding character i
      o = sub(s, (a, z) => {
        const ns = g.slice(at(a), at(z) + 1);
        if (ns.some(n => n.parentNode.closest(NO))) return;
        if (J) return 1;
        // Numbers not known yet: hide the smallest element holding the whole number until the
        // swap (or the safety timeout), so the business number never flashes.
        let e = ns[0].parentNode;
        while (!e.contains(ns.at(-1))) e = e.parentNode;
        if (!H.some(h => h[0] == e)) { H.push([e, e.style.visibility]); e.style.visibility = 'hidden' }
      });
    o && g.forEach((n, i) => {
      const t = o.slice(st[i], st[i + 1]).join('');
      t != n.data && own.set(n, n.data = t)
    })
  },
  // Rewrite (or, before the numbers are known, hide) the numbers in block r: its text nodes,
  // grouped by block (nested blocks are groups of their own).
  walk = r => {
    const w = D.createTreeWalker(r, 4); // NodeFilter.SHOW_TEXT
    let g = [], y, p, n, b, x;
    while (n = w.nextNode()) {
      if (n.parentNode != p) b = blk(p = n.parentNode);
      if (b != y) { group(g); g = []; y = b; x = SKIP.test(b.nodeName) }
      x || g.push(n)
    }
    group(g)
  },
  // Grouping every text node by block costs far more than one textContent and one regular
  // expression: find where a form's digits start in r's text (boundaries unchecked, as
  // textContent glues neighbouring blocks together), then, adding up text lengths, the text
  // nodes holding those digits, and walk only their blocks (or the blocks bs).
  scan = (r, bs) => {
    if (!T[0]) return;
    if (!bs) {
      const ks = [], w = D.createTreeWalker(r, 4);
      bs = new Set();
      for (const [d, p] of runs(r.textContent))
        for (let j = 0; j < d.length; j++) T.some(([f]) => d.startsWith(f, j)) && ks.push(p[j]);
      // ks is in ascending order: one pass over the text nodes finds them all.
      for (let n, o = 0, i = 0; i < ks.length && (n = w.nextNode());)
        for (o += n.length; ks[i] < o; i++) bs.add(blk(n.parentNode))
    }
    bs.forEach(walk);
    // tel: links keep the format they were written in, like text.
    if (J) for (const a of r.querySelectorAll(TEL))
      if (!a.closest(NO)) {
        const o = sub(a.getAttribute('href').replace(/%20/g, ' '), () => 1); // WordPress: %20
        o && a.setAttribute('href', o.join(''))
      }
  },
  // The swap of the first business number (of the first swap when there is none).
  num = () => L?.find(x => x.from.e164 == (B[0] || x.from).e164)?.to || B[0],
  call = f => { try { f(num(), L) } catch {} },
  // Swaps are known (n from an answer or storage; [] after an error or the timeout): rewrite the
  // page, show what was hidden, tell the callbacks. When a later answer changes the number, the
  // previous tracking numbers map to the new ones (or back to the business number).
  use = n => {
    const j = js(n), h = H, k = J, ps = n.map(x => [x.from, x.to]);
    if (j == J) return;
    L?.forEach(x => ps.push([x.to, n.find(y => y.from.e164 == x.from.e164)?.to || x.from]));
    L = n; J = j; H = [];
    tab(ps);
    // Before the first answer every business number on the page was found and hidden: only
    // those blocks (and tel: links, never hidden) need rewriting, not the whole page again.
    scan(R, !k && h.map(h => blk(h[0])));
    h.forEach(([e, v]) => e.style.visibility = v);
    E != (E = num()?.e164) && F.forEach(call)
  },

  // Later content (popups, lazy sections, SPA routes): rescan the blocks that changed, each
  // once (a block inside another changed block of the same batch is covered by it).
  mo = new MutationObserver(ms => {
    try {
      if (!T[0]) return;
      const rs = new Set();
      for (const m of ms) {
        const t = m.target;
        if (m.type == 'characterData') own.get(t) == t.data || rs.add(blk(t.parentNode || t));
        else for (const a of m.addedNodes) rs.add(a.nodeType == 1 && !IN.test(a.nodeName) ? a : blk(t))
      }
      for (const r of rs) {
        let a = r;
        while ((a = a.parentNode) && !rs.has(a));
        a || !r.isConnected || scan(r)
      }
    } catch {}
  }),

  // ---- Commands: calltrack('cart', {...}), ('consent', bool), ('number', cb), ('swap').
  // Other commands (e.g. 'contact') wait in calltrack.u for the lazily loaded contact widget,
  // which then replaces `u` with an object whose push() handles them (the analytics-queue
  // pattern); calltrack.s() is the session id, for the widget's request.
  cmds = {
    cart: x => send('cart', {cart: x}),
    consent: x => {
      // Each consenting browser makes its own visitor id at once: two browsers that shared a
      // consentless visit (same address and browser) part there (the server forks the visit).
      (c = !!x) ? V ||= id() : forget();
      send('consent', {});
      save()
    },
    number: f => { F.push(f); J && call(f) },
    swap: () => scan(R)
  },
  run = a => { try { (cmds[a[0]] || (() => (W.calltrack.u ||= []).push(a)))(a[1]) } catch {} },
  q = W.calltrack?.q;

  D.addEventListener('visibilitychange', () => {
    if (vis()) Z ||= now();
    else { A = dur(); Z = 0; leave(1) }
  });
  W.addEventListener('pagehide', () => leave(1));
  // Every 30 s of visible time: counts time on long pages and keeps the number's lease alive.
  setInterval(() => vis() && send('ping', {d: dur()}), 3e4);
  Y = key();
  for (const f of ['pushState', 'replaceState']) {
    const o = history[f];
    history[f] = function (...a) {
      const r = o.apply(this, a);
      try { nav() } catch {}
      return r
    }
  }
  W.addEventListener('popstate', nav);

  try {
    // Before the numbers are known, find the business numbers (to hide them); with swaps stored
    // by an earlier page of this session, rewrite them at once (in the same task: never seen).
    tab(B.map(b => [b]));
    scan(R);
    M && use(M);
    mo.observe(D, {childList: 1, subtree: 1, characterData: 1});
    setTimeout(() => J || use([]), 1500)
  } catch {}

  // y: how the page was loaded (0 navigate, 1 reload, 2 back_forward; the older Navigation
  // Timing API, far shorter to write than getEntriesByType): a consentless visit continues
  // on a reload or a link of the site, not on a page opened from elsewhere.
  send('pageview', {u: location.href, r: D.referrer || null, ti: D.title,
    y: performance.navigation?.type});
  (W.calltrack = (...a) => run(a)).ct = 1;
  W.calltrack.s = () => S;
  q?.forEach(run)
})(window, document, navigator);
