// Structured outputs and forced tool calls through the OpenAI SDK: response_format json_schema on
// twenty schemas (each output checked by ajv, not by the server), json_object, vLLM's guided_* and
// structured_outputs, tool_choice "required" and named, streamed constrained output, the
// token-level controls (logit_bias, allowed_token_ids, min_tokens), and the lenient request surface
// (unknown fields warned about once, CORS, /ping).
//
// The tiny model's text is random: without the constraint engine none of these outputs would parse.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { MODEL, STRUCT_URL, STRUCT_LOG, client, call as callMain, idsOf } from './helpers.mjs';
import { SCHEMAS, assertValid, assertKeyOrder } from './schemas.mjs';

const ai = client({ baseURL: `${STRUCT_URL}/v1` });
const call = (path, opts = {}) => callMain(path, { base: STRUCT_URL, ...opts });
const URL = STRUCT_URL;
const messages = [{ role: 'user', content: 'Answer in JSON.' }];
const MAX = 300;

for (const [name, schema] of SCHEMAS) {
  test(`response_format json_schema: ${name}`, async () => {
    const res = await ai.chat.completions.create({
      model: MODEL, messages, max_tokens: MAX, temperature: 0,
      response_format: { type: 'json_schema', json_schema: { name, schema, strict: true } },
    });
    const c = res.choices[0];
    assert.equal(c.finish_reason, 'stop', `the output ended before the document did: ${c.message.content}`);
    const value = JSON.parse(c.message.content);
    assertValid(schema, value, name);
    assertKeyOrder(schema, value, name);
  });
}

test('response_format json_schema with sampling (several seeds) stays valid', async () => {
  const [name, schema] = SCHEMAS[4];
  for (const seed of [1, 2, 3]) {
    const res = await ai.chat.completions.create({
      model: MODEL, messages, max_tokens: MAX, temperature: 1, seed,
      response_format: { type: 'json_schema', json_schema: { name, schema } },
    });
    assertValid(schema, JSON.parse(res.choices[0].message.content), `${name} seed ${seed}`);
  }
});

test('response_format json_object returns a parseable JSON object', async () => {
  const res = await ai.chat.completions.create({
    model: MODEL, messages, max_tokens: MAX, temperature: 0, response_format: { type: 'json_object' },
  });
  assert.equal(res.choices[0].finish_reason, 'stop', res.choices[0].message.content);
  const v = JSON.parse(res.choices[0].message.content);
  assert.equal(typeof v, 'object');
  assert.ok(v !== null && !Array.isArray(v));
});

test('streamed json_schema output concatenates to a valid document', async () => {
  const [name, schema] = SCHEMAS[0];
  const stream = await ai.chat.completions.create({
    model: MODEL, messages, max_tokens: MAX, temperature: 0, stream: true,
    response_format: { type: 'json_schema', json_schema: { name, schema } },
  });
  let text = '';
  for await (const c of stream) text += c.choices[0]?.delta?.content ?? '';
  assertValid(schema, JSON.parse(text), name);
});

test('vLLM guided_choice, guided_regex, guided_json and structured_outputs', async () => {
  const base = { model: MODEL, messages, max_tokens: 64, temperature: 0 };
  let res = await ai.chat.completions.create({ ...base, guided_choice: ['alpha', 'beta', 'gamma'] });
  assert.ok(['alpha', 'beta', 'gamma'].includes(res.choices[0].message.content), res.choices[0].message.content);
  res = await ai.chat.completions.create({ ...base, guided_regex: '[a-c]{3}-[0-9]{2}' });
  assert.match(res.choices[0].message.content, /^[a-c]{3}-[0-9]{2}$/);
  const [, schema] = SCHEMAS[2];
  res = await ai.chat.completions.create({ ...base, guided_json: schema });
  assertValid(schema, JSON.parse(res.choices[0].message.content), 'guided_json');
  res = await ai.chat.completions.create({ ...base, structured_outputs: { choice: ['on', 'off'] } });
  assert.ok(['on', 'off'].includes(res.choices[0].message.content));
  res = await ai.chat.completions.create({ ...base, structured_outputs: { regex: '(yes|no)!' } });
  assert.match(res.choices[0].message.content, /^(yes|no)!$/);
  res = await ai.chat.completions.create({
    ...base, structured_outputs: { grammar: 'root ::= "x" ("y" | "z") "!"' },
  });
  assert.match(res.choices[0].message.content, /^x[yz]!$/);
  // Completions take them too.
  const comp = await ai.completions.create({ model: MODEL, prompt: 'Pick:', max_tokens: 16, guided_choice: ['one', 'two'] });
  assert.ok(['one', 'two'].includes(comp.choices[0].text), comp.choices[0].text);
});

test('an unsupported schema keyword is a 400 naming the field', async () => {
  const r = await call('/v1/chat/completions', {
    body: {
      messages, max_tokens: 8,
      response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object', patternProperties: { '^a': {} } } } },
    },
  });
  assert.equal(r.status, 400, r.text);
  assert.equal(r.json.error.param, 'response_format');
  assert.match(r.json.error.message, /patternProperties/);
});

const tools = [
  {
    type: 'function',
    function: {
      name: 'get_weather', description: 'Weather of a city',
      parameters: {
        type: 'object',
        properties: { city: { type: 'string', maxLength: 12 }, unit: { enum: ['c', 'f'] } },
        required: ['city', 'unit'], additionalProperties: false,
      },
    },
  },
  {
    type: 'function',
    function: {
      name: 'add', description: 'Adds two small numbers',
      parameters: {
        type: 'object', properties: { a: { enum: [1, 2, 3] }, b: { enum: [4, 5] } },
        required: ['a', 'b'], additionalProperties: false,
      },
    },
  },
];
const toolSchema = Object.fromEntries(tools.map((t) => [t.function.name, t.function.parameters]));

function assertCalls(msg, allowed) {
  assert.ok(msg.tool_calls && msg.tool_calls.length >= 1, `no tool call: ${JSON.stringify(msg)}`);
  for (const call of msg.tool_calls) {
    assert.ok(allowed.includes(call.function.name), call.function.name);
    assertValid(toolSchema[call.function.name], JSON.parse(call.function.arguments), `${call.function.name} arguments`);
  }
}

test('tool_choice "required" returns a call with schema-valid arguments', async () => {
  const res = await ai.chat.completions.create({
    model: MODEL, messages: [{ role: 'user', content: 'Weather in Paris?' }], tools, tool_choice: 'required',
    max_tokens: MAX, temperature: 0,
  });
  assert.equal(res.choices[0].finish_reason, 'tool_calls');
  assertCalls(res.choices[0].message, ['get_weather', 'add']);
});

test('a named tool_choice returns a call to that function', async () => {
  for (const name of ['get_weather', 'add']) {
    const res = await ai.chat.completions.create({
      model: MODEL, messages: [{ role: 'user', content: 'Go.' }], tools,
      tool_choice: { type: 'function', function: { name } }, parallel_tool_calls: false, max_tokens: MAX, temperature: 0,
    });
    assertCalls(res.choices[0].message, [name]);
    assert.equal(res.choices[0].message.tool_calls.length, 1);
  }
});

test('a forced tool call streams as tool_call deltas', async () => {
  const stream = await ai.chat.completions.create({
    model: MODEL, messages: [{ role: 'user', content: 'Go.' }], tools, stream: true,
    tool_choice: { type: 'function', function: { name: 'add' } }, max_tokens: MAX, temperature: 0,
  });
  let name = '';
  let args = '';
  for await (const c of stream) {
    for (const d of c.choices[0]?.delta?.tool_calls ?? []) {
      if (d.index !== 0) continue;
      name += d.function?.name ?? '';
      args += d.function?.arguments ?? '';
    }
  }
  assert.equal(name, 'add');
  assertValid(toolSchema.add, JSON.parse(args), 'streamed arguments');
});

test('logit_bias, allowed_token_ids and min_tokens shape the tokens', async () => {
  const base = { model: MODEL, prompt: 'Hello', max_tokens: 6, temperature: 0, logprobs: 0, return_tokens_as_token_ids: true };
  let r = await ai.completions.create({ ...base, logit_bias: { 1000: 100 } });
  assert.deepEqual(idsOf(r.choices[0].logprobs.tokens), [1000, 1000, 1000, 1000, 1000, 1000]);
  r = await ai.completions.create({ ...base, allowed_token_ids: [300, 301] });
  for (const id of idsOf(r.choices[0].logprobs.tokens)) assert.ok(id === 300 || id === 301, String(id));
  // min_tokens: EOS is masked until 5 tokens were generated; an EOS forced by bias otherwise ends
  // the output at once. (The EOS itself counts as a generated token, as in vLLM.)
  const eos = JSON.parse(readFileSync(`${process.env.DS_E2E_MODEL_DIR}/config.json`, 'utf8')).eos_token_id;
  r = await ai.completions.create({ ...base, max_tokens: 8, logit_bias: { [eos]: 100 } });
  assert.equal(r.usage.completion_tokens, 1);
  assert.equal(r.choices[0].finish_reason, 'stop');
  r = await ai.completions.create({ ...base, max_tokens: 8, min_tokens: 5, logit_bias: { [eos]: 100 } });
  assert.equal(r.usage.completion_tokens, 6);
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.ok(!idsOf(r.choices[0].logprobs.tokens).slice(0, 5).includes(eos));
  // bad_words: the token a 100 bias forces is never generated once it is a bad word.
  const word = (await call('/detokenize', { body: { tokens: [1000] } })).json.prompt;
  r = await ai.completions.create({ ...base, logit_bias: { 1000: 100 }, bad_words: [word.trim()] });
  assert.ok(!idsOf(r.choices[0].logprobs.tokens).includes(1000), JSON.stringify(r.choices[0].logprobs.tokens));
});

test('unknown request fields are ignored with one warning per field name', async () => {
  for (let i = 0; i < 2; i++) {
    const r = await call('/v1/chat/completions', { body: { messages, max_tokens: 2, frobnicate_e2e: i, nested_x: { a: 1 } } });
    assert.equal(r.status, 200, r.text);
  }
  const log = readFileSync(STRUCT_LOG, 'utf8');
  const warnings = log.split('\n').filter((l) => l.includes("unrecognized request field 'frobnicate_e2e'"));
  assert.equal(warnings.length, 1, `warnings: ${warnings.join('\n')}`);
  assert.match(warnings[0], /warn/i);
});

test('CORS preflight and /ping', async () => {
  const pre = await fetch(`${URL}/v1/chat/completions`, {
    method: 'OPTIONS',
    headers: { Origin: 'http://localhost:3000', 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'authorization,content-type' },
  });
  assert.equal(pre.status, 200);
  assert.equal(pre.headers.get('access-control-allow-origin'), '*');
  assert.match(pre.headers.get('access-control-allow-headers'), /authorization/);
  const r = await call('/v1/models', { method: 'GET', headers: { Origin: 'http://localhost:3000' } });
  assert.equal(r.headers.get('access-control-allow-origin'), '*');
  const ping = await fetch(`${URL}/ping`);
  assert.equal(ping.status, 200);
});

test('usage reports cached prompt tokens', async () => {
  const res = await ai.chat.completions.create({ model: MODEL, messages, max_tokens: 2 });
  assert.equal(typeof res.usage.prompt_tokens_details.cached_tokens, 'number');
  assert.ok(res.usage.prompt_tokens_details.cached_tokens <= res.usage.prompt_tokens);
});
