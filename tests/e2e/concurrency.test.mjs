// 64 concurrent streaming requests of different lengths: all complete, each with exactly the
// tokens it gets alone, and /metrics accounts for all of them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MODEL, client, idsOf, metrics, metric, promptIds } from './helpers.mjs';

const ai = client();
const N = 64;
const cases = Array.from({ length: N }, (_, i) => ({
  prompt: promptIds(3 + ((i * 37) % 90), 100 + i),
  max_tokens: 4 + ((i * 11) % 29),
}));
const common = { model: MODEL, temperature: 0, ignore_eos: true, logprobs: 0, return_tokens_as_token_ids: true };

test('64 concurrent streams each equal the request alone; metrics count them', async () => {
  const alone = [];
  for (const c of cases) {
    const r = await ai.completions.create({ ...common, ...c });
    alone.push(idsOf(r.choices[0].logprobs.tokens));
    assert.equal(alone.at(-1).length, c.max_tokens);
  }

  const before = await metrics();
  const t0 = Date.now();
  const results = await Promise.all(cases.map(async (c) => {
    const stream = await ai.completions.create({ ...common, ...c, stream: true,
      stream_options: { include_usage: true } });
    const ids = [];
    let finish = null;
    let usage = null;
    for await (const chunk of stream) {
      if (chunk.usage) { usage = chunk.usage; continue; }
      const ch = chunk.choices[0];
      if (ch.logprobs) ids.push(...idsOf(ch.logprobs.tokens));
      if (ch.finish_reason) finish = ch.finish_reason;
    }
    return { ids, finish, usage };
  }));
  const seconds = (Date.now() - t0) / 1000;

  let promptTotal = 0;
  let genTotal = 0;
  for (let i = 0; i < N; i++) {
    const { ids, finish, usage } = results[i];
    assert.deepEqual(ids, alone[i], `request ${i}: batched output differs from alone`);
    assert.equal(finish, 'length', `request ${i}`);
    const { prompt_tokens_details: details, ...counts } = usage;
    assert.deepEqual(counts, { prompt_tokens: cases[i].prompt.length, completion_tokens: cases[i].max_tokens,
      total_tokens: cases[i].prompt.length + cases[i].max_tokens });
    assert.ok(details.cached_tokens >= 0 && details.cached_tokens < cases[i].prompt.length, `request ${i}`);
    promptTotal += cases[i].prompt.length;
    genTotal += cases[i].max_tokens;
  }

  const after = await metrics();
  const delta = (s) => metric(after, s) - metric(before, s);
  assert.equal(delta('deltaserve_http_requests_total{endpoint="/v1/completions",status="200"}'), N);
  assert.equal(delta('deltaserve_request_success_total{finished_reason="length",model_name="kimi-linear-tiny"}'), N);
  assert.equal(delta('deltaserve_generation_tokens_total{model_name="kimi-linear-tiny"}'), genTotal);
  assert.equal(delta('deltaserve_prompt_tokens_total{model_name="kimi-linear-tiny"}'), promptTotal);
  assert.equal(delta('deltaserve_e2e_request_latency_seconds_count{model_name="kimi-linear-tiny"}'), N);
  assert.equal(delta('deltaserve_time_to_first_token_seconds_count{model_name="kimi-linear-tiny"}'), N);
  assert.equal(metric(after, 'deltaserve_num_requests_running{model_name="kimi-linear-tiny"}'), 0);
  assert.equal(metric(after, 'deltaserve_num_requests_waiting{model_name="kimi-linear-tiny"}'), 0);
  assert.ok(delta('deltaserve_engine_generation_tokens_total{model_name="kimi-linear-tiny"}') >= genTotal);
  console.log(`# 64 concurrent streams: ${genTotal} tokens in ${seconds.toFixed(2)} s`);
});
