// The greffon dashboard: a small ES module, no build step. It renders the
// page the address names from the /v1 API (the session cookie stands for
// the token; state changes carry the page's CSRF token), and re-reads the
// shown data when /v1/events says something changed. Every element is
// built with the DOM API: no data is ever parsed as HTML.

const csrf = document.querySelector('meta[name="greffon-csrf"]').content;
const main = document.getElementById('main');

// ---- DOM and API helpers -------------------------------------------------

/** Creates an element: props are attributes, `on*` functions listeners. */
function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'value') {
      el.value = value;
    } else if (key === 'checked') {
      el.checked = Boolean(value);
    } else {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

let ids = 0;
/** A fresh id for label/input and aria-* pairs. */
const uid = (prefix) => `${prefix}-${++ids}`;

/** Calls the API; answers {ok, status, data}. A lost session reloads the
 *  page, which then shows the login form. */
async function api(method, path, body) {
  const headers = { 'x-csrf-token': csrf };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const resp = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'same-origin',
  });
  if (resp.status === 401) {
    location.reload();
    return new Promise(() => {});
  }
  const text = await resp.text();
  let data = text;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    // Plain text (a crash dump): kept as is.
  }
  return { ok: resp.ok, status: resp.status, data };
}

/** The data of a successful GET, or throws its error message. */
async function load(path) {
  const r = await api('GET', path);
  if (!r.ok) throw new Error(errorText(r));
  return r.data;
}

function errorText(r) {
  const d = r.data;
  if (d && typeof d === 'object' && d.error) {
    return d.kind ? `${d.error} (${d.kind}, HTTP ${r.status})` : d.error;
  }
  return `HTTP ${r.status}: ${typeof d === 'string' ? d : JSON.stringify(d)}`;
}

/** A fresh alert: screen readers announce it when it appears. */
function alertBox(message) {
  return h('div', { role: 'alert', class: 'error' }, message);
}

/** Replaces the message shown in `slot` (an alert, a status, or none). */
function show(slot, node) {
  slot.replaceChildren(...(node ? [node] : []));
}

const json = (v) => JSON.stringify(v, null, 2);

function when(t) {
  if (!t) return '—';
  const d = new Date(t);
  return Number.isNaN(d.getTime()) ? String(t) : d.toLocaleString();
}

function section(title, ...children) {
  const id = uid('h');
  return h('section', { 'aria-labelledby': id }, h('h2', { id }, title), children);
}

function field(label, value) {
  return [h('dt', {}, label), h('dd', {}, value === '' || value === null || value === undefined ? '—' : value)];
}

// ---- A form generated from a JSON Schema --------------------------------

/** Follows `$ref` into `$defs` and picks the non-null member of an
 *  `anyOf`/`oneOf` (Pydantic's Optional). */
function resolve(prop, root) {
  let p = prop || {};
  for (let i = 0; i < 8; i++) {
    if (p.$ref && p.$ref.startsWith('#/$defs/')) {
      p = { ...(root.$defs || {})[p.$ref.slice(8)], ...withoutKeys(p, ['$ref']) };
      continue;
    }
    const union = p.anyOf || p.oneOf;
    if (union) {
      const member = union.find((m) => m.type !== 'null') || {};
      p = { ...member, ...withoutKeys(p, ['anyOf', 'oneOf']) };
      continue;
    }
    if (p.allOf && p.allOf.length === 1) {
      p = { ...p.allOf[0], ...withoutKeys(p, ['allOf']) };
      continue;
    }
    break;
  }
  const type = Array.isArray(p.type) ? p.type.find((t) => t !== 'null') : p.type;
  return { ...p, type };
}

function withoutKeys(o, keys) {
  const copy = { ...o };
  for (const k of keys) delete copy[k];
  return copy;
}

/** What a field's hint says: type, bounds, default, description. */
function hint(p) {
  const parts = [p.enum ? 'one of the choices' : p.type || 'JSON'];
  const min = p.minimum ?? p.exclusiveMinimum;
  const max = p.maximum ?? p.exclusiveMaximum;
  if (min !== undefined || max !== undefined) {
    parts.push(`${min ?? '…'} to ${max ?? '…'}${p.exclusiveMinimum !== undefined || p.exclusiveMaximum !== undefined ? ' (exclusive)' : ''}`);
  }
  if (p.minLength !== undefined || p.maxLength !== undefined) {
    parts.push(`length ${p.minLength ?? 0} to ${p.maxLength ?? '…'}`);
  }
  if (p.default !== undefined) parts.push(`default ${JSON.stringify(p.default)}`);
  if (p.description) parts.push(p.description);
  if (!['string', 'integer', 'number', 'boolean'].includes(p.type) && !p.enum) parts.push('as JSON');
  return parts.join(' · ');
}

/** One input per property, labelled with its name; `read()` gives the
 *  arguments object, or throws naming the field that is not JSON. The
 *  browser's own validation is off: the host's names the field and rule. */
function schemaFields(schema) {
  const root = schema || {};
  const props = root.properties || {};
  const required = new Set(root.required || []);
  const readers = [];
  const rows = Object.entries(props).map(([name, raw]) => {
    const p = resolve(raw, root);
    const id = uid('f');
    const hintId = `${id}-hint`;
    const common = { id, name, 'aria-describedby': hintId, required: required.has(name) };
    let input;
    if (Array.isArray(p.enum)) {
      input = h('select', common,
        required.has(name) ? null : h('option', { value: '' }, '(none)'),
        p.enum.map((v, i) => h('option', { value: String(i), selected: JSON.stringify(v) === JSON.stringify(p.default) }, String(v))));
      readers.push(() => (input.value === '' ? undefined : p.enum[Number(input.value)]));
    } else if (p.type === 'boolean') {
      input = h('input', { ...common, type: 'checkbox', checked: p.default === true });
      readers.push(() => input.checked);
    } else if (p.type === 'integer' || p.type === 'number') {
      input = h('input', {
        ...common, type: 'number', inputmode: p.type === 'integer' ? 'numeric' : 'decimal',
        step: p.type === 'integer' ? '1' : 'any', min: p.minimum ?? null, max: p.maximum ?? null,
        value: p.default ?? null,
      });
      readers.push(() => {
        const v = input.value.trim();
        if (v === '') return undefined;
        const n = Number(v);
        return Number.isFinite(n) ? n : v;
      });
    } else if (p.type === 'string') {
      input = h('input', {
        ...common, type: 'text', value: p.default ?? null,
        minlength: p.minLength ?? null, maxlength: p.maxLength ?? null,
      });
      readers.push(() => (input.value === '' ? undefined : input.value));
    } else {
      input = h('textarea', { ...common, rows: 3, value: p.default === undefined ? null : json(p.default) });
      readers.push(() => {
        if (input.value.trim() === '') return undefined;
        try {
          return JSON.parse(input.value);
        } catch {
          throw new Error(`field '${name}': not valid JSON`);
        }
      });
    }
    return h('div', { class: 'field' },
      h('label', { for: id }, name),
      input,
      h('small', { id: hintId, class: required.has(name) ? 'req' : 'muted' }, (required.has(name) ? 'required · ' : '') + hint(p)));
  });
  const names = Object.keys(props);
  return {
    nodes: rows.length ? rows : [h('p', { class: 'muted' }, 'No arguments.')],
    read() {
      const args = {};
      names.forEach((name, i) => {
        const v = readers[i]();
        if (v !== undefined) args[name] = v;
      });
      return args;
    },
  };
}

// ---- Pages ---------------------------------------------------------------

/** The calls and errors per plugin, from the Prometheus text. */
async function callCounts() {
  const counts = {};
  try {
    const text = await (await fetch('/metrics')).text();
    for (const line of text.split('\n')) {
      const m = line.match(/^greffon_calls_total\{plugin="([^"]*)",outcome="([^"]*)"\} (\d+)/);
      if (!m) continue;
      const c = (counts[m[1]] ||= { calls: 0, errors: 0 });
      c.calls += Number(m[3]);
      if (m[2] !== 'ok') c.errors += Number(m[3]);
    }
  } catch {
    // Without metrics the counts show as zero.
  }
  return counts;
}

function stateText(p) {
  return p.state === 'failed' && p.failure ? `failed: ${p.failure.reason}` : p.state;
}

function reach(access) {
  const out = [];
  if (access.network) out.push(`network: ${access.network.length ? access.network.join(', ') : 'none'}`);
  if (access.read && access.read.length) out.push(`reads: ${access.read.join(', ')}`);
  if (access.write && access.write.length) out.push(`writes: ${access.write.join(', ')}`);
  return out.length ? out.join('; ') : 'nothing beyond its own code';
}

async function pluginsPage() {
  const list = h('div', { class: 'cards' });
  const slot = h('div');
  main.replaceChildren(h('h1', {}, 'Plugins'), slot, list);
  async function refresh() {
    try {
      const [plugins, counts] = await Promise.all([load('/v1/plugins'), callCounts()]);
      show(slot, plugins.length ? null : h('p', {}, 'No plugins under plugins/ yet.'));
      list.replaceChildren(...plugins.map((p) => {
        const id = uid('p');
        const c = counts[p.name] || { calls: 0, errors: 0 };
        return h('article', { class: `card state-${p.state}`, 'aria-labelledby': id },
          h('h2', { id }, h('a', { href: `/plugins/${encodeURIComponent(p.name)}` }, p.name)),
          h('p', {}, p.description || h('span', { class: 'muted' }, 'No description.')),
          h('dl', {},
            field('State', h('span', { class: 'state' }, stateText(p))),
            field('Permissions', p.permissions.length ? p.permissions.join(', ') : 'none'),
            field('Reach', reach(p.access || {})),
            field('Calls', String(c.calls)),
            field('Errors', String(c.errors))));
      }));
    } catch (e) {
      show(slot, alertBox(e.message));
    }
  }
  await refresh();
  return { title: 'Plugins', topics: ['plugins'], refresh };
}

async function pluginPage(name) {
  const path = `/v1/plugins/${encodeURIComponent(name)}`;
  const heading = h('h1', {}, name);
  const slot = h('div');
  const about = h('div');
  const dumps = h('div');
  const audit = h('div');
  const actionSlot = h('div');
  const buttons = ['Enable', 'Disable', 'Reload'].map((label) => h('button', {
    type: 'button',
    onclick: async (ev) => {
      const button = ev.currentTarget;
      button.disabled = true;
      show(actionSlot, h('p', { role: 'status' }, `${label}…`));
      const r = await api('POST', `${path}/${label.toLowerCase()}`);
      show(actionSlot, r.ok ? h('p', { role: 'status' }, `${label}: done, now ${stateText(r.data)}.`) : alertBox(errorText(r)));
      await refresh();
    },
  }, label));
  const [enable, disable, reload] = buttons;

  const info = await api('GET', path);
  if (!info.ok) {
    main.replaceChildren(heading, alertBox(errorText(info)));
    return { title: name, topics: [], refresh: async () => {} };
  }
  const p = info.data;
  const form = runForm(name, p.schema);
  main.replaceChildren(
    h('p', {}, h('a', { href: '/' }, '← All plugins')),
    heading, slot,
    section('State', about, h('div', { class: 'actions' }, buttons), actionSlot),
    section('Run', form),
    section('Schema', h('pre', { tabindex: '0' }, p.schema ? json(p.schema) : 'No valid schema.')),
    section('Meta', h('pre', { tabindex: '0' }, p.meta ? json(p.meta) : 'No valid meta.')),
    section('Crash dumps', dumps),
    section('Recent audit records', audit));

  async function refresh() {
    const r = await api('GET', path);
    if (!r.ok) {
      show(slot, alertBox(errorText(r)));
      return;
    }
    show(slot, null);
    const q = r.data;
    enable.disabled = q.state === 'enabled';
    disable.disabled = q.state === 'disabled';
    reload.disabled = q.state !== 'enabled';
    about.replaceChildren(h('p', {}, q.description || ''), h('dl', {},
      field('State', h('span', { class: 'state' }, stateText(q))),
      field('Version', q.version),
      field('Declares', q.permissions.length ? q.permissions.join(', ') : 'no permission'),
      field('Granted', q.granted ? (q.granted.length ? q.granted.join(', ') : 'nothing') : 'not enabled'),
      field('Reach', reach(q.access || {})),
      field('Secrets', q.secrets && q.secrets.length ? q.secrets.map((s) => `${s.name} (${s.set ? 'set' : 'not set'})`).join(', ') : 'none'),
      field('Timeout', `${q.timeout_s} s`),
      field('Workers', workersText(q.workers)),
      field('Worker crashes', String(q.worker_crashes))));
    await Promise.all([refreshDumps(), refreshAudit()]);
  }

  function workersText(w) {
    if (!w || !(w.busy + w.idle)) return `not running (pool of ${w ? w.size : 1})`;
    return `${w.busy + w.idle} of ${w.size} running: ${w.busy} busy, ${w.idle} idle; ${w.queued} queued`;
  }

  async function refreshDumps() {
    const r = await api('GET', `${path}/dumps`);
    if (!r.ok) return show(dumps, alertBox(errorText(r)));
    if (!r.data.length) return show(dumps, h('p', { class: 'muted' }, 'No crash dump.'));
    dumps.replaceChildren(h('ul', { class: 'plain' }, r.data.map((d) => {
      const body = h('pre', { tabindex: '0' }, 'Loading…');
      const details = h('details', {
        ontoggle: async () => {
          if (!details.open) return;
          const t = await api('GET', `${path}/dumps/${encodeURIComponent(d.file)}`);
          body.textContent = t.ok ? t.data : errorText(t);
        },
      }, h('summary', {}, `${when(d.time)} — ${d.phase} — ${d.error}`), body);
      return h('li', {}, details);
    })));
  }

  async function refreshAudit() {
    const r = await api('GET', `/v1/logs?category=audit&plugin=${encodeURIComponent(name)}&limit=20`);
    if (!r.ok) return show(audit, alertBox(errorText(r)));
    audit.replaceChildren(recordsTable(r.data, 'Audit records'));
  }

  await refresh();
  return { title: name, topics: ['plugins'], refresh };
}

/** The run form of a plugin: its fields, a Run button, the result. */
function runForm(name, schema) {
  const fields = schemaFields(schema);
  const slot = h('div');
  const result = h('pre', { 'aria-label': 'Result', tabindex: '0', hidden: true });
  const run = h('button', { type: 'submit' }, 'Run');
  const form = h('form', {
    novalidate: true,
    onsubmit: async (ev) => {
      ev.preventDefault();
      let args;
      try {
        args = fields.read();
      } catch (e) {
        show(slot, alertBox(e.message));
        return;
      }
      run.disabled = true;
      show(slot, h('p', { role: 'status' }, 'Running…'));
      try {
        const r = await api('POST', `/v1/plugins/${encodeURIComponent(name)}/run`, args);
        result.hidden = !r.ok;
        if (r.ok) result.textContent = json(r.data);
        if (!r.ok) show(slot, alertBox(errorText(r)));
        else if (r.data && typeof r.data === 'object' && 'error' in r.data) show(slot, alertBox(`The plugin answered an error: ${r.data.error}`));
        else show(slot, h('p', { role: 'status' }, 'Done.'));
      } finally {
        run.disabled = false;
      }
    },
  }, fields.nodes, h('div', { class: 'actions' }, run), slot, result);
  return form;
}

function recordsTable(records, caption) {
  if (!records.length) return h('p', { class: 'muted' }, 'No records.');
  const known = new Set(['timestamp', 'level', 'target', 'event', 'message', 'plugin']);
  return h('div', { class: 'scroll', tabindex: '0', role: 'region', 'aria-label': caption },
    h('table', {},
      h('caption', {}, caption),
      h('thead', {}, h('tr', {}, ['Time', 'Level', 'What', 'Plugin', 'Details'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, records.map((r) => {
        const rest = Object.fromEntries(Object.entries(r).filter(([k]) => !known.has(k)));
        return h('tr', {},
          h('td', {}, when(r.timestamp)),
          h('td', {}, r.level || ''),
          h('td', {}, [r.event, r.message].filter(Boolean).join(': ')),
          h('td', {}, r.plugin || ''),
          h('td', {}, h('code', {}, Object.keys(rest).length ? JSON.stringify(rest) : '')));
      }))));
}

function triggerText(t) {
  if (t.kind === 'cron') return `cron ${t.expr}${t.tz ? ` (${t.tz})` : ''}`;
  if (t.kind === 'interval') return `every ${t.every_s} s`;
  if (t.kind === 'date') return `once at ${when(t.at)}`;
  return JSON.stringify(t);
}

async function tasksPage() {
  const list = h('div', { class: 'cards' });
  const slot = h('div');
  const plugins = await load('/v1/plugins').catch(() => []);
  // Tasks whose history is open: a live refresh keeps it open.
  const opened = new Set();
  main.replaceChildren(h('h1', {}, 'Tasks'), slot, list, section('New task', newTaskForm(plugins, () => refresh())));

  async function refresh() {
    try {
      const tasks = await load('/v1/tasks');
      const lastRuns = await Promise.all(tasks.map((t) => load(`/v1/tasks/${t.id}/runs?limit=1`).catch(() => [])));
      show(slot, tasks.length ? null : h('p', {}, 'No task yet.'));
      list.replaceChildren(...tasks.map((t, i) => taskCard(t, lastRuns[i][0], refresh, opened)));
    } catch (e) {
      show(slot, alertBox(e.message));
    }
  }
  await refresh();
  return { title: 'Tasks', topics: ['tasks'], refresh };
}

function taskCard(t, last, refresh, opened) {
  const id = uid('t');
  const slot = h('div');
  const history = h('div', { hidden: true });
  const path = `/v1/tasks/${t.id}`;
  const act = (label, method, url, body) => h('button', {
    type: 'button',
    onclick: async (ev) => {
      ev.currentTarget.disabled = true;
      show(slot, h('p', { role: 'status' }, `${label}…`));
      const r = await api(method, url, body);
      show(slot, r.ok ? null : alertBox(errorText(r)));
      await refresh();
    },
  }, label);
  const remove = h('button', {
    type: 'button',
    onclick: () => show(slot, h('p', {}, `Delete task ${t.name} and its runs? `,
      act('Yes, delete', 'DELETE', path),
      h('button', { type: 'button', onclick: () => show(slot, null) }, 'Cancel'))),
  }, 'Delete');
  const loadHistory = async () => {
    const r = await api('GET', `${path}/runs?limit=20`);
    history.replaceChildren(r.ok ? runsTable(r.data) : alertBox(errorText(r)));
  };
  const toggleHistory = h('button', {
    type: 'button',
    'aria-expanded': String(opened.has(t.id)),
    onclick: async (ev) => {
      const open = history.hidden;
      history.hidden = !open;
      ev.currentTarget.setAttribute('aria-expanded', String(open));
      if (open) opened.add(t.id);
      else opened.delete(t.id);
      if (open) await loadHistory();
    },
  }, 'History');
  if (opened.has(t.id)) {
    history.hidden = false;
    loadHistory();
  }
  return h('article', { class: 'card', 'aria-labelledby': id },
    h('h2', { id }, t.name),
    h('dl', {},
      field('Plugin', h('a', { href: `/plugins/${encodeURIComponent(t.plugin)}` }, t.plugin)),
      field('Trigger', triggerText(t.trigger)),
      field('Next fire', t.enabled ? when(t.next_run_at) : 'disabled'),
      field('Last run', last ? `${last.status} (${when(last.finished_at || last.started_at)})` : 'never'),
      field('Arguments', h('code', {}, JSON.stringify(t.args)))),
    h('div', { class: 'actions' },
      act('Run now', 'POST', `${path}/run`, {}),
      t.enabled ? act('Disable', 'PATCH', path, { enabled: false }) : act('Enable', 'PATCH', path, { enabled: true }),
      remove, toggleHistory),
    slot, history);
}

function runsTable(runs) {
  if (!runs.length) return h('p', { class: 'muted' }, 'No run yet.');
  return h('div', { class: 'scroll', tabindex: '0', role: 'region', 'aria-label': 'Runs' },
    h('table', {},
      h('caption', {}, 'Runs, newest first'),
      h('thead', {}, h('tr', {}, ['Run', 'Kind', 'Status', 'Scheduled for', 'Finished', 'Result or error'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, runs.map((r) => h('tr', {},
        h('td', {}, `#${r.id}${r.attempt > 1 ? ` (attempt ${r.attempt})` : ''}`),
        h('td', {}, r.kind),
        h('td', {}, r.status),
        h('td', {}, when(r.scheduled_for)),
        h('td', {}, when(r.finished_at)),
        h('td', {}, h('code', {}, r.error || (r.result === null || r.result === undefined ? '' : JSON.stringify(r.result)))))))));
}

function newTaskForm(plugins, created) {
  const slot = h('div');
  const labelled = (label, input, help) => {
    const id = uid('n');
    input.id = id;
    return h('div', { class: 'field' }, h('label', { for: id }, label), input, help ? h('small', { class: 'muted' }, help) : null);
  };
  const name = h('input', { type: 'text', name: 'name', required: true });
  const plugin = h('select', { name: 'plugin', required: true },
    plugins.map((p) => h('option', { value: p.name }, `${p.name}${p.state === 'enabled' ? '' : ` (${p.state})`}`)));
  const kind = h('select', { name: 'trigger' },
    h('option', { value: 'interval' }, 'every N seconds'),
    h('option', { value: 'cron' }, 'cron expression'),
    h('option', { value: 'date' }, 'once, at a date'));
  const every = h('input', { type: 'number', min: '1', step: '1', value: '3600' });
  const expr = h('input', { type: 'text', value: '0 * * * *' });
  const tz = h('input', { type: 'text', placeholder: 'host zone' });
  const at = h('input', { type: 'datetime-local' });
  const everyRow = labelled('Every (seconds)', every);
  const exprRow = labelled('Cron expression', expr, 'minute hour day month weekday, e.g. 0 8 * * 1-5');
  const tzRow = labelled('Time zone', tz, 'an IANA zone such as Europe/Paris; empty: the host\'s');
  const atRow = labelled('At', at, 'local time of this browser');
  const argsBox = h('fieldset', {}, h('legend', {}, 'Arguments'));
  let fields = schemaFields(null);

  function showTrigger() {
    everyRow.hidden = kind.value !== 'interval';
    exprRow.hidden = tzRow.hidden = kind.value !== 'cron';
    atRow.hidden = kind.value !== 'date';
  }
  async function showArgs() {
    const p = plugins.find((x) => x.name === plugin.value);
    fields = schemaFields(p ? p.schema : null);
    argsBox.replaceChildren(h('legend', {}, 'Arguments'), ...fields.nodes);
  }
  kind.addEventListener('change', showTrigger);
  plugin.addEventListener('change', showArgs);
  showTrigger();
  showArgs();

  const submit = h('button', { type: 'submit' }, 'Create');
  return h('form', {
    novalidate: true,
    onsubmit: async (ev) => {
      ev.preventDefault();
      let body;
      try {
        const trigger = kind.value === 'interval' ? { kind: 'interval', every_s: Number(every.value) }
          : kind.value === 'cron' ? { kind: 'cron', expr: expr.value, ...(tz.value ? { tz: tz.value } : {}) }
            : { kind: 'date', at: at.value ? new Date(at.value).toISOString() : '' };
        body = { name: name.value, plugin: plugin.value, args: fields.read(), trigger };
      } catch (e) {
        show(slot, alertBox(e.message));
        return;
      }
      submit.disabled = true;
      const r = await api('POST', '/v1/tasks', body);
      submit.disabled = false;
      if (!r.ok) {
        show(slot, alertBox(errorText(r)));
        return;
      }
      show(slot, h('p', { role: 'status' }, `Task ${r.data.name} created.`));
      name.value = '';
      await created();
    },
  }, labelled('Name', name), labelled('Plugin', plugin), labelled('Trigger', kind),
  everyRow, exprRow, tzRow, atRow, argsBox, h('div', { class: 'actions' }, submit), slot);
}

/** The options of `LLM().infer`, with the input type of each. */
const LLM_OPTIONS = [
  ['max_tokens', 'number', '1'], ['temperature', 'number', 'any'], ['top_p', 'number', 'any'],
  ['top_k', 'number', '1'], ['seed', 'number', '1'], ['repeat_penalty', 'number', 'any'],
];

async function llmPage() {
  const prompt = h('textarea', { id: 'prompt', rows: 4, required: true });
  const system = h('textarea', { id: 'system', rows: 2 });
  const stop = h('input', { id: 'stop', type: 'text' });
  const options = LLM_OPTIONS.map(([n, , step]) => [n, h('input', { id: `o-${n}`, type: 'number', step })]);
  const answer = h('pre', { 'aria-label': 'Generated text', 'aria-live': 'polite', tabindex: '0' });
  const slot = h('div');
  const go = h('button', { type: 'submit' }, 'Generate');
  let controller = null;
  const cancel = h('button', { type: 'button', disabled: true, onclick: () => controller && controller.abort() }, 'Stop');

  async function generate(ev) {
    ev.preventDefault();
    const opts = {};
    for (const [n, input] of options) if (input.value !== '') opts[n] = Number(input.value);
    if (system.value.trim()) opts.system = system.value;
    if (stop.value.trim()) opts.stop = stop.value.split(',').map((s) => s.trim()).filter(Boolean);
    answer.textContent = '';
    show(slot, h('p', { role: 'status' }, 'Generating…'));
    controller = new AbortController();
    go.disabled = true;
    cancel.disabled = false;
    try {
      const resp = await fetch('/v1/llm/infer', {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'text/event-stream', 'x-csrf-token': csrf },
        body: JSON.stringify({ prompt: prompt.value, options: opts, stream: true }),
        signal: controller.signal,
      });
      if (!resp.ok || !(resp.headers.get('content-type') || '').startsWith('text/event-stream')) {
        const text = await resp.text();
        let data = text;
        try { data = JSON.parse(text); } catch { /* plain text */ }
        show(slot, alertBox(errorText({ status: resp.status, data })));
        return;
      }
      await readEvents(resp.body, (event, data) => {
        const d = JSON.parse(data);
        if (event === 'token') answer.textContent += d.text;
        if (event === 'error') show(slot, alertBox(d.error));
        if (event === 'done') {
          show(slot, h('p', { role: 'status' },
            `Done: ${d.finish_reason}, ${d.prompt_tokens} prompt + ${d.completion_tokens} generated tokens.`));
        }
      });
    } catch (e) {
      show(slot, e.name === 'AbortError' ? h('p', { role: 'status' }, 'Stopped.') : alertBox(e.message));
    } finally {
      go.disabled = false;
      cancel.disabled = true;
      controller = null;
    }
  }

  const row = (label, input) => h('div', { class: 'field' }, h('label', { for: input.id }, label), input);
  main.replaceChildren(h('h1', {}, 'Local LLM'),
    h('form', { novalidate: true, onsubmit: generate },
      row('Prompt', prompt),
      h('details', {}, h('summary', {}, 'Options'),
        h('div', { class: 'grid' }, options.map(([n, input]) => row(n, input))),
        row('system', system), row('stop (comma-separated)', stop)),
      h('div', { class: 'actions' }, go, cancel)),
    slot, section('Answer', answer));
  return { title: 'LLM', topics: [], refresh: async () => {} };
}

/** Reads server-sent events from a fetch body, calling `on(event, data)`. */
async function readEvents(body, on) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = 'message';
      const data = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) event = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      }
      if (data.length) on(event, data.join('\n'));
    }
  }
}

async function logsPage() {
  const params = new URLSearchParams(location.search);
  const category = h('select', { id: 'category' },
    ['server', 'plugin', 'llm', 'audit'].map((c) => h('option', { value: c, selected: c === (params.get('category') || 'audit') }, c)));
  const filter = h('input', { id: 'filter', type: 'search', value: params.get('q') || '' });
  const plugin = h('input', { id: 'plugin', type: 'text', value: params.get('plugin') || '' });
  const out = h('div');
  let timer = null;

  async function refresh() {
    const q = new URLSearchParams({ category: category.value, limit: '200' });
    if (filter.value) q.set('q', filter.value);
    if (plugin.value) q.set('plugin', plugin.value);
    const shown = new URLSearchParams(q);
    shown.delete('limit');
    history.replaceState(null, '', `/logs?${shown}`);
    const r = await api('GET', `/v1/logs?${q}`);
    out.replaceChildren(r.ok ? recordsTable(r.data, `Last ${category.value} records, newest first`) : alertBox(errorText(r)));
  }
  const soon = () => {
    clearTimeout(timer);
    timer = setTimeout(refresh, 250);
  };
  category.addEventListener('change', refresh);
  filter.addEventListener('input', soon);
  plugin.addEventListener('input', soon);
  const row = (label, input) => h('div', { class: 'field' }, h('label', { for: input.id }, label), input);
  main.replaceChildren(h('h1', {}, 'Logs'),
    h('form', { class: 'grid', role: 'search', onsubmit: (ev) => { ev.preventDefault(); refresh(); } },
      row('Category', category), row('Filter', filter), row('Plugin', plugin)),
    out);
  await refresh();
  return { title: 'Logs', topics: ['plugins', 'tasks'], refresh };
}

// ---- Routing and live updates --------------------------------------------

const ROUTES = [
  [/^\/$/, () => pluginsPage()],
  [/^\/plugins\/([^/]+)$/, (m) => pluginPage(decodeURIComponent(m[1]))],
  [/^\/tasks$/, () => tasksPage()],
  [/^\/llm$/, () => llmPage()],
  [/^\/logs$/, () => logsPage()],
];

let current = { topics: [], refresh: async () => {} };
let rendering = 0;

async function render(focus) {
  const ticket = ++rendering;
  for (const a of document.querySelectorAll('nav a')) {
    const here = a.getAttribute('href') === location.pathname
      || (a.getAttribute('href') === '/' && location.pathname.startsWith('/plugins/'));
    if (here) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const route = ROUTES.map(([re, page]) => [location.pathname.match(re), page]).find(([m]) => m);
  main.replaceChildren(h('p', {}, 'Loading…'));
  let page;
  try {
    page = route ? await route[1](route[0]) : notFound();
  } catch (e) {
    main.replaceChildren(alertBox(e.message));
    page = { title: 'Error', topics: [], refresh: async () => {} };
  }
  if (ticket !== rendering) return;
  current = page;
  document.title = `${page.title} — greffon`;
  if (focus) main.focus();
}

function notFound() {
  main.replaceChildren(h('h1', {}, 'Not found'), h('p', {}, h('a', { href: '/' }, 'All plugins')));
  return { title: 'Not found', topics: [], refresh: async () => {} };
}

document.addEventListener('click', (ev) => {
  const a = ev.target.closest('a');
  if (!a || a.origin !== location.origin || a.hash || ev.button !== 0
    || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
  ev.preventDefault();
  history.pushState(null, '', a.pathname + a.search);
  render(true);
});
window.addEventListener('popstate', () => render(true));

document.getElementById('logout').addEventListener('click', async () => {
  await fetch('/logout', { method: 'POST', headers: { 'x-csrf-token': csrf }, credentials: 'same-origin' });
  location.assign('/');
});

/** Re-reads the shown page when the host says its data changed; changes
 *  that arrive while it re-reads make one more pass, not one each. */
function live() {
  const status = document.getElementById('live-status');
  const events = new EventSource('/v1/events');
  let busy = false;
  let again = false;
  const changed = async (topic) => {
    if (!current.topics.includes(topic)) return;
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    try {
      do {
        again = false;
        await current.refresh();
      } while (again);
    } finally {
      busy = false;
    }
  };
  events.addEventListener('open', () => { status.textContent = 'Live: changes appear as they happen.'; });
  events.addEventListener('error', () => { status.textContent = 'Reconnecting to the server…'; });
  events.addEventListener('plugins', () => changed('plugins'));
  events.addEventListener('tasks', () => changed('tasks'));
}

render(false);
live();
