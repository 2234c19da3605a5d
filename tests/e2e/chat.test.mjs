// /v1/chat/completions through the SDK: template, streaming, logprobs, n, stop, tools.
//
// About tool calls: a random-weight model cannot be made to emit Kimi's tool-call markers, so the
// parsing of generated tool calls into `tool_calls` (whole and streamed) is covered by the unit
// tests in tests/server/test_chat.cpp (the full HTTP path with the real tokenizer and tool parser,
// over an engine stand-in that emits a tool call). Here: tools are accepted, declared in the
// prompt, tool history round-trips through the template, and requests with tools (parser in the
// path, special tokens kept) answer normally.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MODEL, client, call } from './helpers.mjs';

const ai = client();
const messages = [
  { role: 'system', content: 'You are a helpful assistant.' },
  { role: 'user', content: 'Tell me a story.' },
];
const tools = [{
  type: 'function',
  function: {
    name: 'get_weather', description: 'Current weather of a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
}];

async function chatPromptIds(body) {
  const r = await call('/tokenize', { body });
  assert.equal(r.status, 200, r.text);
  return r.json.tokens;
}

test('chat answers with the prompt rendered by the template', async () => {
  const res = await ai.chat.completions.create({ model: MODEL, messages, max_tokens: 8, temperature: 0 });
  assert.equal(res.object, 'chat.completion');
  assert.match(res.id, /^chatcmpl-/);
  assert.equal(res.choices[0].message.role, 'assistant');
  assert.equal(typeof res.choices[0].message.content, 'string');
  assert.ok(['stop', 'length'].includes(res.choices[0].finish_reason));
  const ids = await chatPromptIds({ messages });
  assert.equal(res.usage.prompt_tokens, ids.length);
  assert.equal(res.usage.total_tokens, res.usage.prompt_tokens + res.usage.completion_tokens);
});

test('chat equals a completion of the rendered prompt', async () => {
  const ids = await chatPromptIds({ messages });
  const chat = await ai.chat.completions.create({ model: MODEL, messages, max_tokens: 12, temperature: 0, ignore_eos: true });
  const comp = await ai.completions.create({ model: MODEL, prompt: ids, max_tokens: 12, temperature: 0, ignore_eos: true });
  assert.equal(chat.choices[0].message.content, comp.choices[0].text);
});

test('streaming chat: a role chunk, content deltas, a finish chunk, usage, [DONE]', async () => {
  const req = { model: MODEL, messages, max_tokens: 10, temperature: 0, ignore_eos: true };
  const plain = await ai.chat.completions.create(req);
  const stream = await ai.chat.completions.create({ ...req, stream: true, stream_options: { include_usage: true } });
  let content = '';
  let sawRole = false;
  let finish = null;
  let usage = null;
  for await (const c of stream) {
    assert.equal(c.object, 'chat.completion.chunk');
    if (c.usage) { usage = c.usage; continue; }
    const d = c.choices[0].delta;
    if (d.role) { assert.equal(content, ''); sawRole = true; }
    content += d.content ?? '';
    if (c.choices[0].finish_reason) finish = c.choices[0].finish_reason;
  }
  assert.ok(sawRole);
  assert.equal(content, plain.choices[0].message.content);
  assert.equal(finish, 'length');
  assert.deepEqual(usage, plain.usage);
});

test('chat logprobs with top_logprobs', async () => {
  // Special tokens stay in the text, so that it is exactly the tokens' bytes.
  const res = await ai.chat.completions.create({ model: MODEL, messages, max_tokens: 5, temperature: 0,
    ignore_eos: true, logprobs: true, top_logprobs: 3, skip_special_tokens: false });
  const content = res.choices[0].logprobs.content;
  assert.equal(content.length, 5);
  let text = '';
  for (const e of content) {
    assert.equal(typeof e.token, 'string');
    assert.ok(e.logprob <= 0);
    assert.ok(Array.isArray(e.bytes));
    assert.equal(e.top_logprobs.length, 3);
    assert.equal(e.top_logprobs[0].logprob, e.logprob); // greedy: the best is the one chosen
    assert.ok(e.top_logprobs[0].logprob >= e.top_logprobs[1].logprob);
    text += Buffer.from(e.bytes).toString('latin1');
  }
  assert.equal(Buffer.from(text, 'latin1').toString('utf8'), res.choices[0].message.content);
});

test('n > 1 choices and streaming n > 1', async () => {
  const res = await ai.chat.completions.create({ model: MODEL, messages, max_tokens: 6, n: 3, seed: 42, ignore_eos: true });
  assert.equal(res.choices.length, 3);
  assert.equal(res.usage.completion_tokens, 18);
  const stream = await ai.chat.completions.create({ model: MODEL, messages, max_tokens: 6, n: 3, seed: 42,
    ignore_eos: true, stream: true });
  const texts = ['', '', ''];
  for await (const c of stream) texts[c.choices[0].index] += c.choices[0].delta.content ?? '';
  assert.deepEqual(texts, res.choices.map((c) => c.message.content));
});

test('stop strings in chat', async () => {
  const base = { model: MODEL, messages, max_tokens: 20, temperature: 0, ignore_eos: true };
  const full = (await ai.chat.completions.create(base)).choices[0].message.content;
  const stop = full.slice(6, 8);
  const res = await ai.chat.completions.create({ ...base, stop });
  assert.equal(res.choices[0].message.content, full.slice(0, full.indexOf(stop)));
  assert.equal(res.choices[0].finish_reason, 'stop');
});

test('tools are declared in the prompt; requests with tools answer normally', async () => {
  const ids = await chatPromptIds({ messages, tools });
  const d = await call('/detokenize', { body: { tokens: ids } });
  assert.ok(d.json.prompt.startsWith('<|im_system|>tool_declare<|im_middle|>[{"function":{"description":"Current weather of a city","name":"get_weather"'),
    d.json.prompt);
  const res = await ai.chat.completions.create({ model: MODEL, messages, tools, tool_choice: 'auto', max_tokens: 8,
    temperature: 0 });
  assert.equal(res.usage.prompt_tokens, ids.length);
  assert.ok(['stop', 'length', 'tool_calls'].includes(res.choices[0].finish_reason));
  // Streamed with tools: nothing of the tool-call marker syntax leaks into content.
  let content = '';
  for await (const c of await ai.chat.completions.create({ model: MODEL, messages, tools, max_tokens: 8,
    temperature: 0, stream: true })) content += c.choices[0]?.delta?.content ?? '';
  assert.ok(!content.includes('<|tool_call'));
});

test('tool-call history round-trips through the template', async () => {
  const history = [
    ...messages,
    { role: 'assistant', content: null, tool_calls: [{ id: 'functions.get_weather:0', type: 'function',
      function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }] },
    { role: 'tool', tool_call_id: 'functions.get_weather:0', content: 'sunny, 21 C' },
  ];
  const ids = await chatPromptIds({ messages: history, tools });
  const d = await call('/detokenize', { body: { tokens: ids } });
  assert.ok(d.json.prompt.includes('<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>{"city":"Paris"}<|tool_call_end|><|tool_calls_section_end|>'));
  assert.ok(d.json.prompt.includes('<|im_system|>tool<|im_middle|>## Return of functions.get_weather:0\nsunny, 21 C<|im_end|>'));
  const res = await ai.chat.completions.create({ model: MODEL, messages: history, tools, max_tokens: 4 });
  assert.equal(res.usage.prompt_tokens, ids.length);
});
