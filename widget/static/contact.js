// Calltrack contact widget: a "Call me back" button and an accessible dialog, loaded lazily by
// the snippet when the site enables it (`cfg.c` is this file's URL). It posts
// `{k, s, phone, message, lang}` to `/contact` next to this file (widget/contact_http.py) and shows
// the server's sentence: the confirmation, the outside-hours notice or the error.
//
// `calltrack('contact', {phone, message})` sends the request without opening the dialog and
// shows the confirmation in a small notice. The snippet keeps commands it does not know in
// `calltrack.u` (arrays of arguments) until this file replaces `u` with an object whose push()
// handles them (the analytics-queue pattern). `window.__calltrack_contact(args)` does the same
// and returns a promise of `{ok, id, outside_hours, message}` or `{ok: false, code, message}`.
// The session id comes from the snippet's `calltrack.s()` (a value is accepted too).
//
// Everything lives in a shadow root, so the merchant's CSS does not restyle it and ours does not
// leak. Like the snippet, it never throws into the page and never writes to the console.
(() => {
  const W = window, D = document;
  if (W.__calltrack_contact) return;
  const cfg = W.__calltrack_cfg || {};
  let endpoint, statusUrl;
  try {
    const here = cfg.c || (D.currentScript && D.currentScript.src);
    endpoint = new URL('contact', here).href;
    statusUrl = new URL('contact/status', here);
    statusUrl.searchParams.set('k', cfg.k || '');
  } catch (e) {
    return;
  }
  const lang = /^fr\b/i.test(navigator.language || '') ? 'fr' : 'en';
  statusUrl.searchParams.set('lang', lang);
  const T = {
    en: {
      open: 'Call me back',
      title: 'Call me back',
      intro: 'Leave your number: an advisor calls you back in a few minutes.',
      phone: 'Your phone number',
      hint: 'Add the country code (+44, +33…) if you are outside the country.',
      message: 'Message',
      optional: '(optional)',
      send: 'Call me back',
      sending: 'Sending…',
      close: 'Close',
      missing: 'Enter your phone number.',
      network: 'Your request could not be sent. Check your connection and try again.',
      unavailable: 'Our service is briefly unavailable and your request could not be sent. Please try again in a minute.',
    },
    fr: {
      open: 'Être rappelé',
      title: 'Être rappelé',
      intro: 'Laissez votre numéro : un conseiller vous rappelle dans quelques minutes.',
      phone: 'Votre numéro de téléphone',
      hint: 'Ajoutez l’indicatif (+33, +32…) si vous êtes à l’étranger.',
      message: 'Message',
      optional: '(facultatif)',
      send: 'Être rappelé',
      sending: 'Envoi…',
      close: 'Fermer',
      missing: 'Saisissez votre numéro de téléphone.',
      network: 'Votre demande n’a pas pu être envoyée. Vérifiez votre connexion et réessayez.',
      unavailable: 'Notre service est momentanément indisponible et votre demande n’a pas pu être envoyée. Réessayez dans une minute.',
    },
  }[lang];

  const CSS = `
:host{all:initial}
*{box-sizing:border-box}
.w{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2733}
button{font:inherit;cursor:pointer}
.launch{position:fixed;right:20px;bottom:20px;z-index:2147483000;display:flex;align-items:center;gap:8px;
  padding:12px 18px;border:0;border-radius:999px;background:#12355b;color:#fff;font-weight:600;
  box-shadow:0 4px 14px rgba(0,0,0,.25)}
.launch:hover{background:#0d2743}
.launch svg{width:18px;height:18px;fill:currentColor}
.back{position:fixed;inset:0;z-index:2147483001;background:rgba(16,24,40,.35)}
.dlg{position:fixed;right:20px;bottom:20px;z-index:2147483002;width:360px;max-width:calc(100vw - 24px);
  max-height:calc(100vh - 40px);overflow:auto;background:#fff;border-radius:12px;padding:20px;
  box-shadow:0 12px 40px rgba(0,0,0,.3)}
.head{display:flex;align-items:center;justify-content:space-between;gap:12px}
h2{margin:0;font-size:18px;color:#12355b}
.x{border:0;background:transparent;color:#5b6673;font-size:24px;line-height:1;padding:2px 8px;border-radius:6px}
.x:hover{background:#eef1f4}
p{margin:8px 0}
.intro,.hint{color:#5b6673;font-size:14px}
.hint{font-size:13px;margin:4px 0 0}
.notice{background:#fff6e5;border-left:4px solid #c98a00;padding:8px 10px;border-radius:4px;font-size:14px}
label{display:block;margin:14px 0 4px;font-weight:600;font-size:14px}
label span{font-weight:400;color:#5b6673}
input,textarea{display:block;width:100%;padding:9px 10px;border:1px solid #aab3bd;border-radius:6px;
  font:inherit;color:inherit;background:#fff}
input[aria-invalid=true]{border-color:#b4461b;box-shadow:0 0 0 1px #b4461b}
textarea{resize:vertical;min-height:64px}
.err{color:#b4461b;font-weight:600;font-size:14px;margin:10px 0 0}
.err:empty,.live:empty{display:none}
.send,.ok{margin-top:14px;width:100%;padding:11px 14px;border:0;border-radius:6px;background:#12355b;color:#fff;font-weight:600}
.send[disabled]{opacity:.6;cursor:progress}
.live{background:#e9f6ef;border-left:4px solid #1f7a5a;padding:10px 12px;border-radius:4px}
.toast{position:fixed;right:20px;bottom:84px;z-index:2147483000;display:flex;gap:10px;align-items:flex-start;
  max-width:340px;background:#fff;border-radius:10px;padding:12px 12px 12px 16px;box-shadow:0 6px 24px rgba(0,0,0,.25)}
.toast.bad{border-left:4px solid #b4461b}
.toast:not(.on){display:none}
.toast p{margin:0}
.toast .x{font-size:20px}
:focus-visible{outline:3px solid #f0b400;outline-offset:2px}
@media (max-width:480px){.dlg{right:12px;left:12px;bottom:12px;width:auto}
  .launch{right:14px;bottom:14px;padding:15px}.launch svg{width:22px;height:22px}
  .launch span{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
  .toast{right:12px;left:12px;bottom:80px;max-width:none}}
@media (prefers-reduced-motion:no-preference){.dlg{animation:up .18s ease-out}
  @keyframes up{from{transform:translateY(12px);opacity:0}to{transform:none;opacity:1}}}`;

  // Build elements with DOM APIs only: no markup strings, so server text is always plain text.
  const el = (tag, props, ...kids) => {
    const e = D.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v == null) continue;
      if (k in e && typeof v != 'string' || k == 'className' || k == 'textContent') e[k] = v;
      else e.setAttribute(k, v);
    }
    for (const k of kids) e.append(k);
    return e;
  };
  const icon = () => {
    const ns = 'http://www.w3.org/2000/svg', s = D.createElementNS(ns, 'svg'), p = D.createElementNS(ns, 'path');
    s.setAttribute('viewBox', '0 0 24 24');
    s.setAttribute('aria-hidden', 'true');
    s.setAttribute('focusable', 'false');
    p.setAttribute('d', 'M6.6 10.8a15.1 15.1 0 0 0 6.6 6.6l2.2-2.2a1 1 0 0 1 1-.25 11.4 11.4 0 0 0 3.6.57 1 1 0 0 1 1 1V20a1 1 0 0 1-1 1A17 17 0 0 1 3 4a1 1 0 0 1 1-1h3.5a1 1 0 0 1 1 1c0 1.25.2 2.45.57 3.57a1 1 0 0 1-.25 1z');
    s.append(p);
    return s;
  };

  let host, root, launch, back, dlg, form, phone, message, err, live, send, ok, notice, toast, toastText,
    opener = null, statusAt = 0, toastTimer = 0;

  const build = () => {
    // The widget's own language, whatever the page's (<html lang="fr"> with an English widget
    // would be read by screen readers with a French voice).
    host = el('div', {'data-calltrack-noswap': '', lang});
    root = host.attachShadow({mode: 'open'});
    try {
      const sheet = new CSSStyleSheet();
      sheet.replaceSync(CSS);
      root.adoptedStyleSheets = [sheet];
    } catch (e) {
      root.append(el('style', {textContent: CSS}));
    }
    launch = el('button', {type: 'button', className: 'launch', 'aria-haspopup': 'dialog', 'aria-expanded': 'false',
      'aria-controls': 'ct-dialog'}, icon(), el('span', {textContent: T.open}));
    back = el('div', {className: 'back', hidden: true});
    phone = el('input', {id: 'ct-phone', name: 'phone', type: 'tel', autocomplete: 'tel', inputmode: 'tel',
      required: '', 'aria-required': 'true', 'aria-describedby': 'ct-hint ct-error', maxlength: '40'});
    message = el('textarea', {id: 'ct-message', name: 'message', rows: '3', maxlength: '1000'});
    err = el('p', {id: 'ct-error', className: 'err', role: 'alert'});
    send = el('button', {type: 'submit', className: 'send', textContent: T.send});
    notice = el('p', {className: 'notice', hidden: true});
    form = el('form', {noValidate: true},
      el('label', {for: 'ct-phone', textContent: T.phone}), phone,
      el('p', {id: 'ct-hint', className: 'hint', textContent: T.hint}),
      el('label', {for: 'ct-message'}, T.message + ' ', el('span', {textContent: T.optional})), message,
      err, send);
    // The confirmation region exists from the start: screen readers announce changes to a live
    // region they already know, not one that appears with its text.
    live = el('p', {className: 'live', role: 'status', 'aria-live': 'polite'});
    ok = el('button', {type: 'button', className: 'ok', textContent: T.close, hidden: true});
    dlg = el('div', {id: 'ct-dialog', className: 'dlg', role: 'dialog', 'aria-modal': 'true',
      'aria-labelledby': 'ct-title', 'aria-describedby': 'ct-intro', tabindex: '-1', hidden: true},
      el('div', {className: 'head'},
        el('h2', {id: 'ct-title', textContent: T.title}),
        el('button', {type: 'button', className: 'x', 'aria-label': T.close, textContent: '×'})),
      el('p', {id: 'ct-intro', className: 'intro', textContent: T.intro}),
      notice, form, live, ok);
    toastText = el('p', {role: 'status', 'aria-live': 'polite'});
    toast = el('div', {className: 'toast'}, toastText,
      el('button', {type: 'button', className: 'x', 'aria-label': T.close, textContent: '×'}));
    root.append(el('div', {className: 'w', lang}, launch, back, dlg, toast));
    D.body.append(host);

    launch.addEventListener('click', open);
    back.addEventListener('click', close);
    ok.addEventListener('click', close);
    dlg.querySelector('.x').addEventListener('click', close);
    toast.querySelector('.x').addEventListener('click', () => toast.classList.remove('on'));
    dlg.addEventListener('keydown', trap);
    form.addEventListener('submit', submit);
    phone.addEventListener('input', () => { phone.removeAttribute('aria-invalid'); err.textContent = '' });
  };

  const focusables = () => [...dlg.querySelectorAll('button,input,textarea,[href]')]
    .filter(e => !e.disabled && !e.closest('[hidden]') && e.getClientRects().length);
  // Keep Tab inside the dialog while it is open; Escape closes it.
  const trap = e => {
    if (e.key == 'Escape') { e.preventDefault(); close(); return }
    if (e.key != 'Tab') return;
    const f = focusables(), first = f[0], last = f[f.length - 1], at = root.activeElement;
    if (!first) return;
    if (e.shiftKey && (at == first || at == dlg)) { e.preventDefault(); last.focus() }
    else if (!e.shiftKey && at == last) { e.preventDefault(); first.focus() }
  };

  const refreshStatus = () => {
    if (Date.now() - statusAt < 6e4) return;
    statusAt = Date.now();
    fetch(statusUrl.href).then(r => r.ok && r.json()).then(j => {
      notice.textContent = j && !j.open && j.message || '';
      notice.hidden = !notice.textContent;
    }).catch(() => {});
  };

  function open() {
    const active = root.activeElement || D.activeElement;
    opener = active && active != D.body ? active : launch;
    if (!form.hidden || live.textContent) reset();
    back.hidden = dlg.hidden = false;
    launch.setAttribute('aria-expanded', 'true');
    refreshStatus();
    phone.focus();
  }
  function close() {
    if (dlg.hidden) return;
    back.hidden = dlg.hidden = true;
    launch.setAttribute('aria-expanded', 'false');
    // Back to where the visitor was: the button that opened the dialog, usually.
    const to = opener && opener.isConnected ? opener : launch;
    opener = null;
    try { to.focus() } catch (e) { launch.focus() }
  }
  const reset = () => {
    form.hidden = false;
    ok.hidden = true;
    live.textContent = err.textContent = '';
    phone.removeAttribute('aria-invalid');
  };

  const sessionId = () => {
    try {
      const s = W.calltrack && W.calltrack.s;
      return (typeof s == 'function' ? s() : s) || null;
    } catch (e) {
      return null;
    }
  };

  // POST the request; resolves to the result object, never rejects. While Calltrack's
  // database or a worker is away (502-504: a failover, a restart behind the proxy; or no
  // answer at all while the browser is online: a lone worker restarting) it is sent again
  // after 3, 6 and 12 s, the button still saying "Sending…": a request for a call back is a
  // customer waiting. (One that was stored but answered 504 by a proxy may arrive twice;
  // advisors see both, which beats none.)
  const post = (number, text, tries = 0) => {
    const again = () => new Promise(wait => setTimeout(wait, 3e3 << tries))
      .then(() => post(number, text, tries + 1));
    const body = {
      k: cfg.k, s: sessionId(), phone: String(number || '').trim(),
      message: text ? String(text).slice(0, 1000) : null, lang: navigator.language || lang,
    };
    // A string body goes as text/plain: a "simple" cross-origin request, no preflight.
    return fetch(endpoint, {method: 'POST', body: JSON.stringify(body)})
      .then(r => r.status > 501 && r.status < 505
        ? (tries < 3 ? again() : {ok: false, code: 'unavailable', message: T.unavailable})
        : r.json().then(j => r.status == 201
          ? {ok: true, id: j.id, outside_hours: !!j.outside_hours, message: j.message}
          : {ok: false, code: (j.error || {}).code || 'error', message: (j.error || {}).message || T.network}),
        () => tries < 3 && navigator.onLine !== false ? again() : {ok: false, code: 'network', message: T.network})
      .catch(() => ({ok: false, code: 'network', message: T.network}));
  };

  function submit(e) {
    e.preventDefault();
    if (send.disabled) return;
    err.textContent = '';
    if (!phone.value.trim()) {
      phone.setAttribute('aria-invalid', 'true');
      err.textContent = T.missing;
      phone.focus();
      return;
    }
    send.disabled = true;
    send.textContent = T.sending;
    form.setAttribute('aria-busy', 'true');
    post(phone.value, message.value).then(res => {
      send.disabled = false;
      send.textContent = T.send;
      form.removeAttribute('aria-busy');
      if (res.ok) {
        form.hidden = true;
        notice.hidden = true;
        live.textContent = res.message;
        ok.hidden = false;
        phone.value = message.value = '';
        ok.focus();
      } else {
        err.textContent = res.message;
        if (res.code == 'invalid_phone') phone.setAttribute('aria-invalid', 'true');
        phone.focus();
      }
    });
  }

  const showToast = res => {
    toast.classList.toggle('bad', !res.ok);
    toastText.textContent = res.message;
    toast.classList.add('on');
    clearTimeout(toastTimer);
    // Long enough to read twice; the close button is there for those who want it gone sooner.
    toastTimer = setTimeout(() => toast.classList.remove('on'), 15e3);
  };

  const api = args => {
    try {
      const a = args || {};
      return post(a.phone, a.message).then(res => { try { showToast(res) } catch (e) {} return res });
    } catch (e) {
      return Promise.resolve({ok: false, code: 'error', message: T.network});
    }
  };

  // Take over the snippet's queue of commands it left to us: [name, args] arrays.
  const drain = () => {
    const ct = W.calltrack;
    if (!ct || !ct.ct || ct.u && ct.u.ours) return;
    const q = Array.isArray(ct.u) ? ct.u : [];
    ct.u = {ours: 1, push: a => { if (a && a[0] == 'contact') api(a[1]) }};
    q.forEach(a => ct.u.push(a));
  };
  const start = () => {
    try {
      build();
      W.__calltrack_contact = api;
      drain();
      // The snippet normally loads us once it is set up; if not yet, look again shortly.
      setTimeout(drain, 0);
      setTimeout(drain, 1500);
    } catch (e) {}
  };
  D.body ? start() : D.addEventListener('DOMContentLoaded', start);
})();
