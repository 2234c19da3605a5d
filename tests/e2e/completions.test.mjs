// /v1/completions through the SDK: text and token-id prompts, streaming, stop strings, logprobs,
// n > 1 and seeds, echo, and equality with `deltaserve generate` at temperature 0.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MODEL, client, call, idsOf, generateCli, promptIds } from './helpers.mjs';

const ai = client();

test('greedy output equals `deltaserve generate` on the same token ids', async () => {
  for (const [len, maxTokens, salt] of [[5, 12, 1], [40, 20, 2]]) {
    const ids = promptIds(len, salt);
    const res = await ai.completions.create({
      model: MODEL, prompt: ids, max_tokens: maxTokens, temperature: 0, ignore_eos: true, logprobs: 0,
      return_tokens_as_token_ids: true, skip_special_tokens: false,
    });
    const got = idsOf(res.choices[0].logprobs.tokens);
    assert.equal(got.length, maxTokens);
    assert.deepEqual(got, generateCli(ids, maxTokens), `prompt of ${len} tokens`);
    assert.equal(res.choices[0].finish_reason, 'length');
    const { prompt_tokens_details: details, ...usage } = res.usage;
    assert.deepEqual(usage, { prompt_tokens: len, completion_tokens: maxTokens, total_tokens: len + maxTokens });
    assert.ok(details.cached_tokens >= 0 && details.cached_tokens < len, 'the prefix cache never serves the last token');
    // The text is the decoded tokens (special tokens included, as asked).
    const d = await call('/detokenize', { body: { tokens: got } });
    assert.equal(res.choices[0].text, d.json.prompt);
  }
});

test('streaming gives the same text as non-streaming, then a usage chunk and [DONE]', async () => {
  const req = { model: MODEL, prompt: 'The quick brown fox', max_tokens: 16, temperature: 0, ignore_eos: true };
  const plain = await ai.completions.create(req);
  const stream = await ai.completions.create({ ...req, stream: true, stream_options: { include_usage: true } });
  let text = '';
  let finish = null;
  let usage = null;
  let chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    if (chunk.usage) { usage = chunk.usage; assert.equal(chunk.choices.length, 0); continue; }
    assert.equal(finish, null, 'no chunk after the finish');
    text += chunk.choices[0].text;
    finish = chunk.choices[0].finish_reason ?? null;
  }
  assert.ok(chunks >= 3);
  assert.equal(text, plain.choices[0].text);
  assert.equal(finish, 'length');
  assert.deepEqual(usage, plain.usage);
});

test('raw SSE framing', async () => {
  const r = await call('/v1/completions', { body: { prompt: 'hi', max_tokens: 3, stream: true } });
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /^text\/event-stream/);
  const blocks = r.text.split('\n\n');
  assert.equal(blocks.pop(), '');
  assert.equal(blocks.pop(), 'data: [DONE]');
  for (const b of blocks) assert.match(b, /^data: \{.*\}$/s);
});

test('stop strings cut the output', async () => {
  const base = { model: MODEL, prompt: promptIds(8, 3), max_tokens: 24, temperature: 0, ignore_eos: true };
  const full = (await ai.completions.create(base)).choices[0].text;
  // A stop string taken from the middle of the greedy output.
  const start = Math.floor(full.length / 2);
  const stop = full.slice(start, start + 2);
  assert.ok(stop.length === 2 && full.indexOf(stop) >= 0);
  const cut = full.slice(0, full.indexOf(stop));
  const res = await ai.completions.create({ ...base, stop: [stop, 'never-appears'] });
  assert.equal(res.choices[0].text, cut);
  assert.equal(res.choices[0].finish_reason, 'stop');
  assert.equal(res.choices[0].stop_reason, stop);
  const incl = await ai.completions.create({ ...base, stop, include_stop_str_in_output: true });
  assert.equal(incl.choices[0].text, cut + stop);
  // Streamed: the same cut.
  let text = '';
  for await (const c of await ai.completions.create({ ...base, stop, stream: true })) text += c.choices[0]?.text ?? '';
  assert.equal(text, cut);
});

test('stop_token_ids end the output at that token', async () => {
  const base = { model: MODEL, prompt: promptIds(6, 4), max_tokens: 16, temperature: 0, ignore_eos: true,
    logprobs: 0, return_tokens_as_token_ids: true };
  const ids = idsOf((await ai.completions.create(base)).choices[0].logprobs.tokens);
  const stopId = ids[5];
  const res = await ai.completions.create({ ...base, stop_token_ids: [stopId] });
  const got = idsOf(res.choices[0].logprobs.tokens);
  assert.deepEqual(got, ids.slice(0, ids.indexOf(stopId) + 1));
  assert.equal(res.choices[0].finish_reason, 'stop');
  assert.equal(res.choices[0].stop_reason, stopId);
});

test('logprobs: legacy format, top entries, consistent with greedy', async () => {
  const res = await ai.completions.create({ model: MODEL, prompt: 'Once upon', max_tokens: 6, temperature: 0,
    ignore_eos: true, logprobs: 3, skip_special_tokens: false });
  const lp = res.choices[0].logprobs;
  assert.equal(lp.tokens.length, 6);
  assert.equal(lp.token_logprobs.length, 6);
  assert.equal(lp.top_logprobs.length, 6);
  assert.equal(lp.text_offset.length, 6);
  assert.equal(lp.tokens.join(''), res.choices[0].text);
  for (let i = 0; i < 6; i++) {
    assert.ok(lp.token_logprobs[i] <= 0);
    const top = Object.values(lp.top_logprobs[i]);
    assert.ok(top.length >= 1 && top.length <= 4);
    // Greedy: the chosen token has the highest logprob.
    assert.ok(Math.abs(Math.max(...top) - lp.token_logprobs[i]) < 1e-6);
    // Offsets count characters (code points), as OpenAI's do.
    if (i > 0) assert.equal(lp.text_offset[i], lp.text_offset[i - 1] + [...lp.tokens[i - 1]].length);
  }
});

test('n > 1 with a seed: choice i equals a single request with seed + i', async () => {
  const req = { model: MODEL, prompt: promptIds(10, 5), max_tokens: 10, temperature: 1.0, top_p: 0.95,
    ignore_eos: true, logprobs: 0, return_tokens_as_token_ids: true };
  const res = await ai.completions.create({ ...req, n: 3, seed: 1234 });
  assert.equal(res.choices.length, 3);
  assert.deepEqual(res.choices.map((c) => c.index), [0, 1, 2]);
  assert.equal(res.usage.prompt_tokens, 10);
  assert.equal(res.usage.completion_tokens, 30);
  const outs = res.choices.map((c) => idsOf(c.logprobs.tokens));
  for (let i = 0; i < 3; i++) {
    const single = await ai.completions.create({ ...req, seed: 1234 + i });
    assert.deepEqual(idsOf(single.choices[0].logprobs.tokens), outs[i], `choice ${i}`);
  }
  assert.notDeepEqual(outs[0], outs[1]);
});

test('a batch of prompts (strings and token-id lists) with echo', async () => {
  const res = await ai.completions.create({ model: MODEL, prompt: ['alpha', 'beta gamma'], max_tokens: 4,
    temperature: 0, echo: true, ignore_eos: true, n: 2 });
  assert.equal(res.choices.length, 4);
  assert.ok(res.choices[0].text.startsWith('alpha'));
  assert.ok(res.choices[2].text.startsWith('beta gamma'));
  assert.equal(res.choices[0].text, res.choices[1].text); // greedy
  const ids = [promptIds(3, 6), promptIds(7, 7)];
  const r2 = await ai.completions.create({ model: MODEL, prompt: ids, max_tokens: 2, temperature: 0, ignore_eos: true });
  assert.equal(r2.choices.length, 2);
  assert.equal(r2.usage.prompt_tokens, 10);
});

test('streaming n > 1 delivers every choice', async () => {
  const stream = await ai.completions.create({ model: MODEL, prompt: 'xyz', max_tokens: 5, n: 3, seed: 7,
    ignore_eos: true, stream: true });
  const texts = ['', '', ''];
  const finish = [null, null, null];
  for await (const c of stream) {
    const ch = c.choices[0];
    texts[ch.index] += ch.text;
    if (ch.finish_reason) finish[ch.index] = ch.finish_reason;
  }
  assert.deepEqual(finish, ['length', 'length', 'length']);
  const plain = await ai.completions.create({ model: MODEL, prompt: 'xyz', max_tokens: 5, n: 3, seed: 7, ignore_eos: true });
  assert.deepEqual(texts, plain.choices.map((c) => c.text));
});

test('curl: a plain completions request', async () => {
  const { spawnSync } = await import('node:child_process');
  const r = spawnSync('curl', ['-sS', '-X', 'POST', `${process.env.DS_E2E_URL}/v1/completions`,
    '-H', `Authorization: Bearer ${process.env.DS_E2E_KEY}`, '-H', 'Content-Type: application/json',
    '-d', JSON.stringify({ model: MODEL, prompt: 'curl says', max_tokens: 3 }), '-w', '\n%{http_code}'],
  { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.equal(lines.pop(), '200');
  const j = JSON.parse(lines.join('\n'));
  assert.equal(j.object, 'text_completion');
  assert.equal(j.usage.completion_tokens <= 3, true);
});
