// Prefix caching through the OpenAI SDK (docs/PREFIX_CACHE.md): the next turn of a conversation and a
// repeated few-shot prefix report usage.prompt_tokens_details.cached_tokens, /metrics counts the
// queries and hits, and the outputs equal the first computation's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MODEL, client, metrics, metric as series } from './helpers.mjs';

// The prefix-cache series carry the served model's name, as every series does.
const metric = (m, name) => series(m, `${name}{model_name="${MODEL}"}`);

const words = (n, seed) => Array.from({ length: n }, (_, i) => ['river', 'stone', 'cloud', 'bird', 'lamp', 'gate',
  'salt', 'wind', 'tree', 'boat'][(i * 7 + seed * 3 + ((i * seed) % 5)) % 10]).join(' ');

test('the next turn of a chat reuses the previous turn (cached_tokens, metrics)', async () => {
  const c = client();
  const before = await metrics();
  const messages = [
    { role: 'system', content: `You are terse. ${words(40, 1)}` },
    { role: 'user', content: `First question: ${words(10, 2)}` },
  ];
  const t1 = await c.chat.completions.create({ model: MODEL, messages, max_tokens: 8, temperature: 0 });
  assert.equal(t1.usage.prompt_tokens_details.cached_tokens, 0, 'a fresh conversation');
  messages.push({ role: 'assistant', content: t1.choices[0].message.content });
  messages.push({ role: 'user', content: `Second question: ${words(8, 3)}` });
  const t2 = await c.chat.completions.create({ model: MODEL, messages, max_tokens: 8, temperature: 0 });
  const cached = t2.usage.prompt_tokens_details.cached_tokens;
  assert.ok(cached >= t1.usage.prompt_tokens, `turn 2 reuses at least turn 1's prompt: ${cached} cached of ` +
    `${t2.usage.prompt_tokens} (turn 1 had ${t1.usage.prompt_tokens})`);
  assert.ok(cached < t2.usage.prompt_tokens);
  const after = await metrics();
  const hits = metric(after, 'deltaserve_prefix_cache_hits_total') - metric(before, 'deltaserve_prefix_cache_hits_total');
  const queries = metric(after, 'deltaserve_prefix_cache_queries_total') -
    metric(before, 'deltaserve_prefix_cache_queries_total');
  assert.ok(hits >= cached, `hits ${hits} >= ${cached}`);
  assert.ok(queries >= t1.usage.prompt_tokens + t2.usage.prompt_tokens, `queries ${queries}`);
  assert.ok(metric(after, 'deltaserve_prefix_snapshot_capacity') > 0);
  assert.ok(metric(after, 'deltaserve_prefix_snapshots') > 0);
  assert.ok(metric(after, 'deltaserve_prefix_snapshot_saves_total') > metric(before, 'deltaserve_prefix_snapshot_saves_total'));
  assert.equal(metric(after, 'deltaserve_prefix_snapshot_nonfinite_total'), 0);
});

test('few-shot prompts: later questions resume after the shared shots, with the same outputs', async () => {
  const c = client();
  const shots = `Examples. ${words(60, 4)}\nQuestion:`;
  const ask = (q) => c.completions.create({ model: MODEL, prompt: `${shots} ${q}`, max_tokens: 6, temperature: 0,
    logprobs: 2 });
  const first = await ask(words(6, 5));
  const second = await ask(words(5, 6));  // saves the state where the two diverge
  const third = await ask(words(6, 5));  // the first question again
  assert.equal(first.usage.prompt_tokens_details.cached_tokens, 0);
  assert.ok(third.usage.prompt_tokens_details.cached_tokens >= 96,
    `the shots are cached: ${third.usage.prompt_tokens_details.cached_tokens}`);
  assert.equal(third.choices[0].text, first.choices[0].text);
  assert.deepEqual(third.choices[0].logprobs.tokens, first.choices[0].logprobs.tokens);
  assert.ok(second.usage.prompt_tokens > 0);
});
