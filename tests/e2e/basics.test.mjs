// Models, health, auth, tokenize/detokenize, metrics format.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { URL, KEY, MODEL, client, call, metrics } from './helpers.mjs';

test('GET /health needs no key', async () => {
  const r = await fetch(`${URL}/health`);
  assert.equal(r.status, 200);
});

test('models.list through the SDK', async () => {
  const list = await client().models.list();
  const ids = [];
  for await (const m of list) ids.push(m.id);
  assert.deepEqual(ids, [MODEL]);
  const r = await call('/v1/models', { method: 'GET' });
  assert.equal(r.json.data[0].max_model_len, 512);
  assert.equal(r.json.data[0].object, 'model');
});

test('a wrong or missing API key is rejected with 401 on the /v1 paths only (as vLLM)', async () => {
  const bad = new OpenAI({ baseURL: `${URL}/v1`, apiKey: 'wrong', maxRetries: 0 });
  await assert.rejects(bad.models.list(), (e) => e instanceof OpenAI.AuthenticationError && e.status === 401);
  await assert.rejects(bad.completions.create({ model: MODEL, prompt: 'x', max_tokens: 1 }),
    (e) => e.status === 401);
  for (const [path, method] of [['/v1/models', 'GET'], ['/v1/completions', 'POST'],
    ['/v1/chat/completions', 'POST'], ['/v1/responses', 'POST']]) {
    const r = await call(path, { method, key: null, body: method === 'POST' ? {} : undefined });
    assert.equal(r.status, 401, path);
    assert.equal(r.json.error.type, 'authentication_error', path);
  }
  // As in vLLM, the probes, the Prometheus scrape (--protect-metrics closes it) and the tokenizer endpoints
  // need no key.
  for (const path of ['/health', '/version', '/metrics']) {
    assert.equal((await call(path, { method: 'GET', key: null })).status, 200, path);
  }
  assert.equal((await call('/tokenize', { key: null, body: { model: MODEL, prompt: 'x' } })).status, 200);
  assert.equal((await call('/detokenize', { key: null, body: { model: MODEL, tokens: [1, 2] } })).status, 200);
});

test('tokenize and detokenize round-trip', async () => {
  const text = 'Hello, world! 你好 <|im_end|>';
  const t = await call('/tokenize', { body: { model: MODEL, prompt: text, return_token_strs: true } });
  assert.equal(t.status, 200, t.text);
  assert.equal(t.json.count, t.json.tokens.length);
  assert.equal(t.json.max_model_len, 512);
  assert.ok(t.json.tokens.includes(1792), 'the special token is recognised'); // <|im_end|> in the tiny vocab
  assert.equal(t.json.token_strs.length, t.json.tokens.length);
  const d = await call('/detokenize', { body: { model: MODEL, tokens: t.json.tokens } });
  assert.equal(d.status, 200, d.text);
  assert.equal(d.json.prompt, text);
});

test('/tokenize in chat form renders the chat template', async () => {
  const t = await call('/tokenize', {
    body: { messages: [{ role: 'system', content: 'S' }, { role: 'user', content: 'U' }] },
  });
  assert.equal(t.status, 200, t.text);
  const d = await call('/detokenize', { body: { tokens: t.json.tokens } });
  assert.equal(d.json.prompt,
    '<|im_system|>system<|im_middle|>S<|im_end|><|im_user|>user<|im_middle|>U<|im_end|><|im_assistant|>assistant<|im_middle|>');
});

test('/metrics is Prometheus text with the documented series', async () => {
  const r = await call('/metrics', { method: 'GET' });
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /^text\/plain/);
  for (const name of ['deltaserve_http_requests_total', 'deltaserve_prompt_tokens_total',
    'deltaserve_generation_tokens_total', 'deltaserve_time_to_first_token_seconds',
    'deltaserve_time_per_output_token_seconds', 'deltaserve_e2e_request_latency_seconds',
    'deltaserve_num_requests_running', 'deltaserve_num_requests_waiting', 'deltaserve_kv_cache_usage_perc',
    'deltaserve_state_cache_usage_perc', 'deltaserve_num_preemptions_total']) {
    assert.match(r.text, new RegExp(`# TYPE ${name} `), name);
  }
  const m = await metrics();
  assert.ok(m.get('deltaserve_http_requests_total{endpoint="/v1/models",status="200"}') >= 1);
  assert.ok(m.get('deltaserve_http_requests_total{endpoint="/v1/models",status="401"}') >= 1);
});
