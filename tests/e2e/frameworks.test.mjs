// The two most used client frameworks against the server, with their defaults:
// - LangChain JS (@langchain/openai): withStructuredOutput in its three methods (functionCalling,
//   jsonMode, jsonSchema), bindTools with tool_choice "any", and useResponsesApi;
// - the Vercel AI SDK (ai + @ai-sdk/openai): generateObject through both OpenAI model kinds (the
//   default `openai(model)`, which calls /v1/responses, and `openai.chat(model)`, which calls
//   /v1/chat/completions), generateText with toolChoice "required" and a named tool.
// Every structured result is checked by ajv against the JSON schema of the zod schema (z.toJSONSchema),
// besides the framework's own zod parse.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { z } from 'zod';
import { ChatOpenAI } from '@langchain/openai';
import { createOpenAI } from '@ai-sdk/openai';
import { generateObject, generateText, tool, jsonSchema } from 'ai';
import { MODEL, STRUCT_URL as URL, KEY } from './helpers.mjs';
import { assertValid } from './schemas.mjs';

const MAX = 300;

// Bounded strings: a random model closes a string only when the constraint makes it.
// z.number().int() is written by zod with minimum/maximum ±(2^53-1): integer ranges must be supported.
const Person = z.object({
  name: z.string().max(12),
  role: z.enum(['admin', 'user', 'guest']),
  active: z.boolean(),
  age: z.number().int().min(0),
});
const personSchema = z.toJSONSchema(Person);

const Weather = z.object({ city: z.string().max(10), unit: z.enum(['c', 'f']) });

function langchain(opts = {}) {
  return new ChatOpenAI({
    model: MODEL, apiKey: KEY, configuration: { baseURL: `${URL}/v1` }, temperature: 0, maxTokens: MAX,
    maxRetries: 0, ...opts,
  });
}

test('LangChain withStructuredOutput: functionCalling and jsonSchema', async () => {
  for (const method of ['functionCalling', 'jsonSchema']) {
    const out = await langchain().withStructuredOutput(Person, { method, name: 'person' }).invoke('Describe a user.');
    assertValid(personSchema, out, `withStructuredOutput(${method})`);
  }
});

test('LangChain withStructuredOutput: jsonMode', async () => {
  // jsonMode sends only {"type": "json_object"}: the schema never reaches the server, so a random
  // model can only satisfy a schema that any JSON object satisfies (here: optional fields). What
  // this checks is the path: the request is accepted and the output is a JSON object zod accepts.
  const Loose = z.object({ note: z.string().optional() });
  const out = await langchain().withStructuredOutput(Loose, { method: 'jsonMode' }).invoke('Reply in JSON.');
  assert.equal(typeof out, 'object');
  assertValid(z.toJSONSchema(Loose), out, 'withStructuredOutput(jsonMode)');
});

test('LangChain withStructuredOutput includeRaw keeps the tool call', async () => {
  const res = await langchain()
    .withStructuredOutput(Weather, { name: 'weather', method: 'functionCalling', includeRaw: true })
    .invoke('Weather?');
  assert.equal(res.raw.tool_calls.length >= 1, true);
  assertValid(z.toJSONSchema(Weather), res.parsed, 'parsed');
});

test('LangChain bindTools with tool_choice "any" returns a schema-valid call', async () => {
  const weather = { name: 'get_weather', description: 'Weather of a city', schema: Weather };
  const msg = await langchain().bindTools([weather], { tool_choice: 'any' }).invoke('Weather in Paris?');
  assert.ok(msg.tool_calls.length >= 1, JSON.stringify(msg));
  assert.equal(msg.tool_calls[0].name, 'get_weather');
  assertValid(z.toJSONSchema(Weather), msg.tool_calls[0].args, 'tool call args');
});

test('LangChain useResponsesApi: text and structured output', async () => {
  const llm = langchain({ useResponsesApi: true });
  const msg = await llm.invoke('Say something.');
  assert.equal(typeof msg.text, 'string');
  const out = await llm.withStructuredOutput(Person, { method: 'jsonSchema', name: 'person' }).invoke('Describe a user.');
  assertValid(personSchema, out, 'responses API structured output');
});

const openai = createOpenAI({ baseURL: `${URL}/v1`, apiKey: KEY });

test('Vercel generateObject through the Responses API (the default model) and chat completions', async () => {
  for (const [what, model] of [['responses', openai(MODEL)], ['chat', openai.chat(MODEL)]]) {
    const { object, finishReason } = await generateObject({
      model, schema: Person, schemaName: 'person', prompt: 'Describe a user.', temperature: 0, maxOutputTokens: MAX,
    });
    assert.equal(finishReason, 'stop', what);
    assertValid(personSchema, object, `generateObject via ${what}`);
  }
});

test('Vercel generateObject: array and enum outputs, and a plain JSON schema', async () => {
  const { object: list } = await generateObject({
    model: openai.chat(MODEL), output: 'array', schema: Weather, prompt: 'List cities.', temperature: 0,
    maxOutputTokens: MAX,
  });
  assert.ok(Array.isArray(list));
  for (const item of list) assertValid(z.toJSONSchema(Weather), item, 'array element');
  const { object: pick } = await generateObject({
    model: openai(MODEL), output: 'enum', enum: ['north', 'south'], prompt: 'Pick.', temperature: 0,
    maxOutputTokens: MAX,
  });
  assert.ok(['north', 'south'].includes(pick), pick);
  const raw = { type: 'object', properties: { ok: { type: 'boolean' } }, required: ['ok'], additionalProperties: false };
  const { object } = await generateObject({
    model: openai.chat(MODEL), schema: jsonSchema(raw), prompt: 'Ok?', temperature: 0, maxOutputTokens: MAX,
  });
  assertValid(raw, object, 'jsonSchema()');
});

test('Vercel generateText with toolChoice "required" and a named tool', async () => {
  const tools = {
    get_weather: tool({ description: 'Weather of a city', inputSchema: Weather }),
    ping: tool({ description: 'Ping', inputSchema: z.object({ times: z.enum(['1', '2']) }) }),
  };
  for (const model of [openai.chat(MODEL), openai(MODEL)]) {
    let res = await generateText({ model, tools, toolChoice: 'required', prompt: 'Weather?', temperature: 0, maxOutputTokens: MAX });
    assert.ok(res.toolCalls.length >= 1, JSON.stringify(res.response?.body ?? res.text));
    for (const c of res.toolCalls) assert.ok(['get_weather', 'ping'].includes(c.toolName));
    res = await generateText({
      model, tools, toolChoice: { type: 'tool', toolName: 'get_weather' }, prompt: 'Weather?', temperature: 0,
      maxOutputTokens: MAX,
    });
    assert.equal(res.toolCalls[0].toolName, 'get_weather');
    assertValid(z.toJSONSchema(Weather), res.toolCalls[0].input, 'named tool input');
  }
});

test('Vercel streamText over the Responses API', async () => {
  const { streamText } = await import('ai');
  const result = streamText({ model: openai(MODEL), prompt: 'Hi', temperature: 0, maxOutputTokens: 8 });
  let text = '';
  for await (const t of result.textStream) text += t;
  const usage = await result.usage;
  assert.ok(usage.outputTokens > 0 && usage.outputTokens <= 8);
  assert.equal(typeof text, 'string');
});
