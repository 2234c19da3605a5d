// Shared helpers of the end-to-end tests (environment from run.sh).
import { spawnSync } from 'node:child_process';
import OpenAI from 'openai';

export const URL = process.env.DS_E2E_URL;
export const KEY = process.env.DS_E2E_KEY;
export const MODEL = process.env.DS_E2E_MODEL;
export const SMALL_URL = process.env.DS_E2E_SMALL_URL;
// The server of the structured-output tests (same key; a longer context: tool declarations take
// ~300 tokens of the tiny tokenizer) and its log.
export const STRUCT_URL = process.env.DS_E2E_STRUCT_URL ?? URL;
export const STRUCT_LOG = process.env.DS_E2E_STRUCT_LOG ?? `${process.env.DS_E2E_LOG_DIR}/main.log`;

export function client(opts = {}) {
  return new OpenAI({ baseURL: `${URL}/v1`, apiKey: KEY, maxRetries: 0, timeout: 120000, ...opts });
}

// fetch against the main server with the API key; body objects are sent as JSON.
export async function call(path, { method = 'POST', body, key = KEY, headers = {}, base = URL, signal } = {}) {
  const h = { ...headers };
  if (key) h.Authorization = `Bearer ${key}`;
  let payload = body;
  if (body !== undefined && typeof body !== 'string') {
    payload = JSON.stringify(body);
    h['Content-Type'] = 'application/json';
  }
  const res = await fetch(`${base}${path}`, { method, headers: h, body: payload, signal });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.status, text, json, headers: res.headers };
}

// The data payloads of an SSE body ("[DONE]" kept as a string).
export function sseEvents(text) {
  const out = [];
  for (const block of text.split('\n\n')) {
    if (!block) continue;
    if (!block.startsWith('data: ')) throw new Error(`bad SSE block: ${JSON.stringify(block)}`);
    const data = block.slice(6);
    out.push(data === '[DONE]' ? data : JSON.parse(data));
  }
  return out;
}

// Prometheus text → Map(series → value).
export async function metrics(base = URL, key = KEY) {
  const r = await call('/metrics', { method: 'GET', base, key });
  if (r.status !== 200) throw new Error(`/metrics: ${r.status}`);
  const m = new Map();
  for (const line of r.text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    m.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return m;
}
export const metric = (m, series) => m.get(series) ?? 0;

// Token ids of a completions logprobs object requested with return_tokens_as_token_ids.
export const idsOf = (tokens) => tokens.map((t) => Number(t.slice('token_id:'.length)));

// `deltaserve generate` (the model CLI, no server) on token ids: the greedy continuation.
export function generateCli(ids, maxTokens) {
  const r = spawnSync(process.env.DS_E2E_BIN, ['--log-level', 'warn', 'generate', '--model', process.env.DS_E2E_MODEL_DIR,
    '--ids', ids.join(','), '--max-tokens', String(maxTokens), '--ignore-eos', '--threads', '1'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`deltaserve generate failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop());
}

// Deterministic "random" ordinary token ids (the tiny vocabulary has 1,790 ordinary tokens).
export function promptIds(n, salt) {
  const out = [];
  let x = 12345 + salt * 7919;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) % 2147483648;
    out.push(x % 1790);
  }
  return out;
}
