// SillyTavern as the oracle: run SillyTavern's own front end (public/script.js and everything it imports, unmodified)
// under node with a jsdom document, answer its server calls from memory, and record the exact text-completion prompt
// and stop strings that its Generate() builds for each case.
//
//   npm install --prefix tests/st_oracle        (jsdom, once)
//   node tests/st_oracle/oracle.mjs ST_CHECKOUT tests/st_oracle/cases.json tests/st_oracle/goldens.json
//
// ST_CHECKOUT is a SillyTavern source tree (git tag 1.12.6 was used for goldens.json); nothing of it is copied into
// the output. cases.json (written by cases.py) holds our inputs: cards, chats, settings, and per case the instruct
// preset, context template and system prompt as paths to JSON files (relative to cases.json, or absolute). Per case
// the script does what a user does in the browser: it loads the checkout's default settings
// (default/content/settings.json) with the text completion API selected and the case's settings and system prompt
// applied, offers the cases' presets as ST's preset lists, picks the instruct preset and the context template in
// their drop-downs (ST's own change handlers apply them), selects the character, imports its embedded lorebook with
// ST's "Import Card Lore" (importEmbeddedWorldInfo), opens the chat, and calls Generate(type, {}, dryRun = true). The
// prompt is the one ST passes to GENERATE_AFTER_COMBINE_PROMPTS, the stop strings those of getTextGenGenerationData.
// goldens.json gets only those outputs, with the case ids and preset paths.
//
// Group chats: `python -m tests.st_oracle.group_cases` writes group_cases.json (cards, ST group definitions, group
// chats, and per case the group, the member who speaks and the turn); then
//   node tests/st_oracle/oracle.mjs ST_CHECKOUT tests/st_oracle/group_cases.json tests/st_oracle/group_goldens.json
// For such a case the server offers every member as a character and the group (its members and muted members as
// avatar files, generation mode, join prefix and suffix) as ST's only group, each member's embedded lorebook is
// imported as above, the group is opened (openGroupById loads its chat), and Generate(type, { force_chid }) runs
// outside a dry run: that is ST's own group reply (generateGroupWrapper drafts the forced member and calls
// Generate('group_chat' | 'impersonate' | 'continue') for it), since a dry run in a group builds the first enabled
// member's prompt instead. The prompt and stop strings are taken at GENERATE_AFTER_DATA, before any request to a
// backend, and the case ends there; it fails unless ST's name2 is the speaker's name.
//
// `python -m tests.st_oracle.shipped ST_CHECKOUT` runs this script over the presets the checkout ships (in a
// temporary folder) and compares moechat's prompts with them; it writes nothing into the repository.
//
// Shims, and only these: the browser globals jsdom lacks (matchMedia, CSS.supports, ResizeObserver,
// IntersectionObserver, dialog methods), XMLHttpRequest/fetch answered by `route()` below from the case data and the
// checkout's public/ files, and a loader hook that makes node read public/*.js as ES modules.
// One node process per case: ST keeps its state in module globals.

import { register } from 'node:module';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import vm from 'node:vm';
import { fileURLToPath, pathToFileURL } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const [, , stRoot, casesPath, outPath, onlyCase] = process.argv;
if (!stRoot || !casesPath || !outPath) {
    console.error('usage: node oracle.mjs ST_CHECKOUT cases.json goldens.json');
    process.exit(2);
}
const pub = path.join(stRoot, 'public');
const content = path.join(stRoot, 'default', 'content');
const input = JSON.parse(fs.readFileSync(casesPath, 'utf8'));
const readPreset = ref => JSON.parse(fs.readFileSync(path.resolve(path.dirname(casesPath), ref), 'utf8'));

function presets(kind) {
    // The presets the cases name, offered as ST's list of that kind (the first file of a name wins, as in ST).
    const refs = [...new Set(input.cases.map(c => c[kind]))];
    return refs.map(readPreset);
}

if (onlyCase === undefined) {
    // Parent: one child per case, then the goldens file (ST's version and its outputs per case).
    const results = [];
    for (const c of input.cases) {
        const child = spawnSync(process.execPath, [fileURLToPath(import.meta.url), stRoot, casesPath, outPath, c.id], {
            encoding: 'utf8', maxBuffer: 64 << 20, timeout: 120_000,
        });
        const line = (child.stdout || '').split('\n').find(l => l.startsWith('RESULT '));
        if (!line) {
            console.error(`case ${c.id} failed:\n${(child.stdout || '').slice(-3000)}\n${(child.stderr || '').slice(-3000)}`);
            process.exit(1);
        }
        const { prompt, stops } = JSON.parse(line.slice(7));
        results.push({ id: c.id, instruct: c.instruct, context: c.context, sysprompt: c.sysprompt, prompt, stops });
        console.error(`ok ${c.id}`);
    }
    const version = JSON.parse(fs.readFileSync(path.join(stRoot, 'package.json'), 'utf8')).version;
    const golden = {
        sillytavern: version,
        how: input.groups
            ? `tests/st_oracle/oracle.mjs: SillyTavern's group reply (Generate with force_chid) under node + jsdom, inputs in ${path.basename(casesPath)}`
            : `tests/st_oracle/oracle.mjs: SillyTavern Generate(dryRun) under node + jsdom, inputs in ${path.basename(casesPath)}`,
        results,
    };
    fs.writeFileSync(outPath, JSON.stringify(golden, null, 1) + '\n');
    process.exit(0);
}

// ---- child: one case --------------------------------------------------------------------------------------------
const theCase = input.cases.find(c => c.id === onlyCase);
// A group case (group_cases.json): the group's members are the characters, in the group's order; else the one card.
const group = theCase.group ? input.groups[theCase.group] : null;
const cardKeys = group ? group.members : [theCase.card];
const chatLines = input.chats[theCase.chat ?? theCase.card];
register(pathToFileURL(path.join(HERE, 'module_hook.mjs')).href, { data: { pub: pathToFileURL(pub).href } });

const { JSDOM, VirtualConsole } = await import('jsdom');
const html = fs.readFileSync(path.join(pub, 'index.html'), 'utf8');
const dom = new JSDOM(html, { url: 'http://localhost:8000/', pretendToBeVisual: true, virtualConsole: new VirtualConsole() });
const win = dom.window;
globalThis.window = globalThis;
for (const key of Object.getOwnPropertyNames(win)) {
    if (!(key in globalThis)) {
        try { globalThis[key] = win[key]; } catch { /* read-only */ }
    }
}
for (const key of ['document', 'navigator', 'localStorage', 'sessionStorage', 'location', 'getComputedStyle', 'Event',
    'CustomEvent', 'KeyboardEvent', 'MouseEvent', 'addEventListener', 'removeEventListener', 'dispatchEvent']) {
    const value = typeof win[key] === 'function' && /^[a-z]/.test(key) ? win[key].bind(win) : win[key];
    Object.defineProperty(globalThis, key, { value, configurable: true, writable: true });
}
globalThis.CSS = { supports: () => false, escape: s => s };
globalThis.matchMedia = () => ({ matches: false, addListener() {}, removeListener() {}, addEventListener() {}, removeEventListener() {} });
globalThis.ResizeObserver = class { observe() {} unobserve() {} disconnect() {} };
globalThis.IntersectionObserver = class { observe() {} unobserve() {} disconnect() {} };
globalThis.scrollTo = () => {};
win.HTMLElement.prototype.scrollIntoView = function () {};
Object.defineProperty(win.HTMLElement.prototype, 'innerText', {
    get() { return this.textContent; }, set(value) { this.textContent = value; }, configurable: true,
});
win.HTMLDialogElement.prototype.showModal = function () { this.open = true; };
win.HTMLDialogElement.prototype.show = function () { this.open = true; };
win.HTMLDialogElement.prototype.close = function () { this.open = false; };

// ---- the server, from memory ------------------------------------------------------------------------------------
const settings = JSON.parse(fs.readFileSync(path.join(content, 'settings.json'), 'utf8'));
settings.firstRun = false; // onboarding done
settings.username = input.user;
settings.main_api = 'textgenerationwebui';
settings.max_context = input.max_context;
settings.amount_gen = input.amount_gen;
Object.assign(settings.world_info_settings, input.settings?.world_info_settings ?? {});
Object.assign(settings.power_user, input.settings?.power_user ?? {});
settings.power_user.tokenizer = 0; // NONE: ST's character estimate; no tokenizer server
settings.power_user.persona_description = input.persona ?? '';
settings.power_user.world_import_dialog = false;
const sysprompt = readPreset(theCase.sysprompt);
settings.power_user.sysprompt = { enabled: true, name: sysprompt.name, content: sysprompt.content };
const instructPreset = readPreset(theCase.instruct);
const contextPreset = readPreset(theCase.context);
const worlds = {};
const avatarOf = key => (group ? `${key}.png` : 'case.png');
const characterList = cardKeys.map(key => stCharacter(input.cards[key], avatarOf(key)));
// ST's group file (groups/ID.json), its members and muted members named by their avatar files as ST stores them.
const stGroup = group && {
    id: 'case-group', name: group.name, chat_id: 'case group chat', chats: ['case group chat'],
    members: group.members.map(avatarOf), disabled_members: group.muted.map(avatarOf),
    generation_mode: group.generation_mode, generation_mode_join_prefix: group.join_prefix,
    generation_mode_join_suffix: group.join_suffix, activation_strategy: 1, allow_self_responses: false,
    avatar_url: '', fav: false, chat_metadata: {}, past_metadata: {},
};

function stCharacter(v2, avatar) {
    // What ST's server returns for a PNG card: the V2 object with the V1 fields mirrored from `data` (readFromV2).
    const out = structuredClone(v2);
    for (const key of ['name', 'description', 'personality', 'scenario', 'first_mes', 'mes_example']) out[key] = v2.data[key] ?? '';
    out.avatar = avatar;
    out.chat = 'case chat';
    out.json_data = JSON.stringify(v2);
    return out;
}

function route(method, pathname, body) {
    if (process.env.ORACLE_DEBUG) process.stderr.write(`route ${method} ${pathname}\n`);
    const file = path.join(pub, decodeURIComponent(pathname));
    if (method === 'GET' && fs.existsSync(file) && fs.statSync(file).isFile()) return [200, fs.readFileSync(file, 'utf8')];
    const json = value => [200, JSON.stringify(value)];
    switch (pathname) {
        case '/csrf-token': return json({ token: 'oracle' });
        case '/api/settings/get': return json({
            settings: JSON.stringify(settings),
            koboldai_settings: [], koboldai_setting_names: [], novelai_settings: [], novelai_setting_names: [],
            openai_settings: [], openai_setting_names: [], textgenerationwebui_presets: [], textgenerationwebui_preset_names: [],
            world_names: Object.keys(worlds).sort(), themes: [], movingUIPresets: [], quickReplyPresets: [],
            instruct: presets('instruct'), context: presets('context'), sysprompt: presets('sysprompt'),
            enable_extensions: false, enable_extensions_auto_update: false, enable_accounts: false,
        });
        case '/api/characters/all': return json(characterList);
        case '/api/chats/get': return json(chatLines);
        case '/api/groups/all': return json(stGroup ? [stGroup] : []);
        case '/api/chats/group/get': return json(chatLines);
        case '/api/worldinfo/get': return worlds[body.name] ? json(worlds[body.name]) : [404, '{}'];
        case '/api/worldinfo/edit': worlds[body.name] = body.data; return json({ ok: true });
        case '/api/characters/merge-attributes':
            return json({ ok: true });
        case '/api/avatars/get': case '/api/backgrounds/all': case '/api/plugins/list':
            return json([]);
        default: return json({});
    }
}

function parseBody(body) {
    try { return typeof body === 'string' ? JSON.parse(body) : {}; } catch { return {}; }
}

globalThis.fetch = async (url, opts = {}) => {
    const u = new URL(String(url), 'http://localhost:8000/');
    const [status, text] = route((opts.method || 'GET').toUpperCase(), u.pathname, parseBody(opts.body));
    return new Response(text, { status, headers: { 'content-type': 'application/json' } });
};
globalThis.XMLHttpRequest = class {
    open(method, url, async = true) { Object.assign(this, { method, url, async, readyState: 1 }); }
    setRequestHeader() {}
    getAllResponseHeaders() { return 'content-type: application/json\r\n'; }
    getResponseHeader(name) { return name.toLowerCase() === 'content-type' ? 'application/json' : null; }
    overrideMimeType() {}
    abort() {}
    send(body) {
        const u = new URL(String(this.url), 'http://localhost:8000/');
        const [status, text] = route(String(this.method).toUpperCase(), u.pathname, parseBody(body));
        Object.assign(this, { status, statusText: status === 200 ? 'OK' : 'Not Found', responseText: text, response: text, readyState: 4 });
        const fire = () => { this.onreadystatechange?.(); this.onload?.(); };
        if (this.async) setTimeout(fire, 0); else fire();
    }
};

// ---- ST's own code ----------------------------------------------------------------------------------------------
for (const m of html.matchAll(/<script src="([^"]+)"><\/script>/g)) {
    try { vm.runInThisContext(fs.readFileSync(path.join(pub, m[1]), 'utf8'), { filename: m[1] }); } catch { /* a UI library */ }
}
// jsdom's selector engine rejects two selectors that browsers accept (':focus-within', an unclosed '[...'): such a
// lookup finds nothing instead of throwing.
for (const name of ['find', 'filter']) {
    const original = jQuery[name];
    jQuery[name] = Object.assign(function (...args) {
        try { return original.apply(this, args); } catch { return name === 'find' ? (args[2] || []) : []; }
    }, original);
}
const errors = [];
const say = (...a) => process.stderr.write(a.join(' ') + '\n');
const emit = line => process.stdout.write(line + '\n');
for (const level of ['log', 'debug', 'info', 'warn', 'error', 'trace', 'table']) console[level] = () => {};
process.on('unhandledRejection', e => errors.push(String(e?.stack || e).slice(0, 300)));
process.on('uncaughtException', e => errors.push(String(e?.stack || e).slice(0, 300)));
const st = await import(pathToFileURL(path.join(pub, 'script.js')).href);
const wi = await import(pathToFileURL(path.join(pub, 'scripts', 'world-info.js')).href);
const pu = await import(pathToFileURL(path.join(pub, 'scripts', 'power-user.js')).href);
const gc = await import(pathToFileURL(path.join(pub, 'scripts', 'group-chats.js')).href);

const deadline = Date.now() + 60_000;
while (!st.characters.length || !pu.power_user.instruct) {
    if (Date.now() > deadline) { say('ST did not start', st.characters.length, !!pu.power_user.instruct, errors.join('\n')); process.exit(1); }
    await new Promise(r => setTimeout(r, 50));
}
await new Promise(r => setTimeout(r, 200));
say('started');

$('#instruct_presets').val(instructPreset.name).trigger('change');
pu.power_user.instruct.enabled = true;
$('#context_presets').val(contextPreset.name).trigger('change');
for (const [key, value] of Object.entries(theCase.context_overrides ?? {})) pu.power_user.context[key] = value;
for (const [key, value] of Object.entries(theCase.instruct_overrides ?? {})) pu.power_user.instruct[key] = value;
say('presets', pu.power_user.instruct.preset, pu.power_user.context.preset);
if (!group) {
    await st.selectCharacterById('0');
    say('selected', st.chat.length);
}
for (const [chid, character] of characterList.entries()) {
    if (!character.data.character_book) continue;
    $('#import_character_info').data('chid', String(chid));
    await wi.importEmbeddedWorldInfo(true);
    // ST saves the link with the character form (/api/characters/edit writes data.extensions.world); as its server:
    const bookName = character.data.character_book.name || `${character.data.name}'s Lorebook`;
    character.data.extensions = { ...character.data.extensions, world: bookName };
    character.json_data = JSON.stringify({ ...JSON.parse(character.json_data), data: character.data });
    await st.getCharacters();
}
if (group) {
    await gc.openGroupById(stGroup.id);
    say('group opened', gc.selected_group, st.chat.length);
}
const unlinked = characterList.filter((c, chid) => c.data.character_book && !st.characters[chid]?.data?.extensions?.world);
if (pu.power_user.instruct.preset !== instructPreset.name || pu.power_user.context.preset !== contextPreset.name) {
    say(`preset not selected: ${pu.power_user.instruct.preset} / ${pu.power_user.context.preset}`);
    process.exit(1);
}

if (unlinked.length) throw new Error('a card\'s lorebook is not linked');
if (pu.power_user.sysprompt.content !== sysprompt.content) throw new Error('system prompt not applied');

let captured = null;
let stops = null;
st.eventSource.on(st.event_types.GENERATE_AFTER_COMBINE_PROMPTS, data => { captured = data.prompt; });
st.eventSource.on(st.event_types.GENERATE_AFTER_DATA, data => {
    stops = data.stopping_strings ?? data.stop ?? null;
    if (!group) return;
    // A group reply is built only inside ST's group generation (a dry run builds the first enabled member's): the
    // prompt is complete here, before the request to the backend, so the case ends without one.
    const speaker = input.cards[theCase.speaker].data.name;
    if (st.name2 !== speaker || captured === null) {
        say(`group reply built for ${st.name2}, not ${speaker}`);
        process.exit(1);
    }
    emit('RESULT ' + JSON.stringify({ prompt: captured, stops }));
    process.exit(0);
});
if (group) {
    // What the group's reply does (generateGroupWrapper, via Generate outside a dry run): force_chid drafts the speaker,
    // whose prompt Generate('group_chat' | 'impersonate' | 'continue') then builds as for any reply.
    st.setOnlineStatus('oracle');
    await st.Generate(theCase.type ?? 'normal', { force_chid: group.members.indexOf(theCase.speaker) });
    say(`group generation ended without a prompt: ${errors.join('\n')}`);
    process.exit(1);
}
await st.Generate(theCase.type ?? 'normal', {}, true);
if (captured === null) throw new Error(`no prompt captured: ${errors.join('\n')}`);
emit('RESULT ' + JSON.stringify({ prompt: captured, stops }));
process.exit(0);
