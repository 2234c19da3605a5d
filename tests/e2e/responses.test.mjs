// The Responses API (POST /v1/responses) through the OpenAI SDK's responses.create, streamed and
// not: plain text, instructions, message-item input, text.format json_schema (validated by ajv),
// forced function calls with schema-valid arguments, max_output_tokens, previous_response_id over the
// server's stored responses (retrieve, delete), and the unsupported inputs' errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MODEL, STRUCT_URL, client, call as callMain } from './helpers.mjs';
import { SCHEMAS, assertValid } from './schemas.mjs';

const ai = client({ baseURL: `${STRUCT_URL}/v1` });
const call = (path, opts = {}) => callMain(path, { base: STRUCT_URL, ...opts });

test('responses.create: text, usage, instructions', async () => {
  const res = await ai.responses.create({
    model: MODEL, input: 'Tell me a story.', instructions: 'Be brief.', max_output_tokens: 8, temperature: 0,
  });
  assert.equal(res.object, 'response');
  assert.match(res.id, /^resp_/);
  assert.ok(['completed', 'incomplete'].includes(res.status));
  assert.equal(res.output[0].type, 'message');
  assert.equal(res.output[0].content[0].type, 'output_text');
  assert.equal(typeof res.output_text, 'string');  // the SDK's convenience field
  assert.equal(res.output_text, res.output[0].content[0].text);
  assert.ok(res.usage.input_tokens > 0);
  assert.ok(res.usage.output_tokens > 0 && res.usage.output_tokens <= 8);
  assert.equal(res.usage.total_tokens, res.usage.input_tokens + res.usage.output_tokens);
  assert.equal(res.usage.input_tokens_details.cached_tokens >= 0, true);
  if (res.status === 'incomplete') assert.equal(res.incomplete_details.reason, 'max_output_tokens');
});

test('responses.create equals chat.completions on the same conversation', async () => {
  const input = [
    { role: 'system', content: 'You are terse.' },
    { role: 'user', content: [{ type: 'input_text', text: 'Hello there' }] },
  ];
  const r = await ai.responses.create({ model: MODEL, input, max_output_tokens: 10, temperature: 0 });
  const c = await ai.chat.completions.create({
    model: MODEL, messages: [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: 'Hello there' }],
    max_tokens: 10, temperature: 0,
  });
  assert.equal(r.output_text, c.choices[0].message.content);
  assert.equal(r.usage.input_tokens, c.usage.prompt_tokens);
});

test('responses.create streamed: the event sequence and the final response', async () => {
  const stream = await ai.responses.create({ model: MODEL, input: 'Hi', max_output_tokens: 12, temperature: 0, stream: true });
  const types = [];
  let text = '';
  let final = null;
  let seq = -1;
  for await (const ev of stream) {
    types.push(ev.type);
    assert.equal(ev.sequence_number, seq + 1);
    seq = ev.sequence_number;
    if (ev.type === 'response.output_text.delta') text += ev.delta;
    if (ev.type === 'response.completed' || ev.type === 'response.incomplete') final = ev.response;
  }
  assert.deepEqual(types.slice(0, 4),
    ['response.created', 'response.in_progress', 'response.output_item.added', 'response.content_part.added']);
  assert.ok(types.includes('response.output_text.done'));
  assert.ok(types.includes('response.output_item.done'));
  assert.ok(final, `no final event in ${types.join(', ')}`);
  assert.equal(final.output[0].content[0].text, text);
  const plain = await ai.responses.create({ model: MODEL, input: 'Hi', max_output_tokens: 12, temperature: 0 });
  assert.equal(plain.output_text, text);
});

test('responses.create with text.format json_schema returns valid JSON (stream and not)', async () => {
  for (const [name, schema] of [SCHEMAS[0], SCHEMAS[6], SCHEMAS[11]]) {
    const req = {
      model: MODEL, input: 'Answer in JSON.', max_output_tokens: 300, temperature: 0,
      text: { format: { type: 'json_schema', name, schema, strict: true } },
    };
    const res = await ai.responses.create(req);
    assert.equal(res.status, 'completed', res.output_text);
    assertValid(schema, JSON.parse(res.output_text), name);
    const stream = await ai.responses.create({ ...req, stream: true });
    let text = '';
    for await (const ev of stream) if (ev.type === 'response.output_text.delta') text += ev.delta;
    assert.equal(text, res.output_text);
  }
});

const tools = [{
  type: 'function', name: 'lookup', description: 'Looks a word up',
  parameters: {
    type: 'object', properties: { word: { type: 'string', maxLength: 10 }, lang: { enum: ['en', 'fr'] } },
    required: ['word', 'lang'], additionalProperties: false,
  },
  strict: true,
}];

test('responses.create with a forced function call (stream and not)', async () => {
  for (const tool_choice of ['required', { type: 'function', name: 'lookup' }]) {
    const req = { model: MODEL, input: 'Define "cat".', tools, tool_choice, max_output_tokens: 300, temperature: 0 };
    const res = await ai.responses.create(req);
    const calls = res.output.filter((o) => o.type === 'function_call');
    assert.ok(calls.length >= 1, JSON.stringify(res.output));
    assert.equal(calls[0].name, 'lookup');
    assert.equal(typeof calls[0].call_id, 'string');
    assertValid(tools[0].parameters, JSON.parse(calls[0].arguments), 'function_call arguments');

    const stream = await ai.responses.create({ ...req, stream: true });
    let args = '';
    let done = null;
    for await (const ev of stream) {
      if (ev.type === 'response.function_call_arguments.delta') args += ev.delta;
      if (ev.type === 'response.function_call_arguments.done' && done === null) done = ev.arguments;
    }
    assert.equal(done, calls[0].arguments);
    assert.ok(args.startsWith(calls[0].arguments));
  }
});

test('responses.create: a function_call_output round trip is accepted', async () => {
  const res = await ai.responses.create({
    model: MODEL, tools, max_output_tokens: 6,
    input: [
      { role: 'user', content: 'Define "cat".' },
      { type: 'function_call', call_id: 'functions.lookup:0', name: 'lookup', arguments: '{"word":"cat","lang":"en"}' },
      { type: 'function_call_output', call_id: 'functions.lookup:0', output: 'A small feline.' },
    ],
  });
  assert.equal(res.object, 'response');
});

test('responses: previous_response_id continues a stored response; retrieve and delete', async () => {
  const first = await ai.responses.create({ model: MODEL, input: 'Tell me a story.', max_output_tokens: 6, temperature: 0 });
  assert.equal(first.store, true);
  const next = await ai.responses.create({
    model: MODEL, input: 'And then?', previous_response_id: first.id, max_output_tokens: 4, temperature: 0,
  });
  assert.equal(next.previous_response_id, first.id);
  // the new prompt holds the first turn (its input and answer) before the new input
  const alone = await ai.responses.create({ model: MODEL, input: 'And then?', max_output_tokens: 4, temperature: 0 });
  assert.ok(next.usage.input_tokens > alone.usage.input_tokens + 4);
  const got = await ai.responses.retrieve(next.id);
  assert.equal(got.id, next.id);
  assert.equal(got.output_text, next.output_text);
  const del = await ai.responses.delete(next.id);
  if (del !== undefined && del !== null) assert.equal(del.deleted, true);  // (the SDK may return nothing)
  await assert.rejects(ai.responses.retrieve(next.id), (e) => e.status === 404);
  await assert.rejects(
    ai.responses.create({ model: MODEL, input: 'x', previous_response_id: 'resp_abc' }),
    (e) => e.status === 404 && /resp_abc/.test(e.message));
});

test('responses: stored items (item_reference) are 400s', async () => {
  const r = await call('/v1/responses', { body: { input: [{ type: 'item_reference', id: 'msg_1' }] } });
  assert.equal(r.status, 400);
  assert.equal(r.json.error.param, 'input[0].type');
});
