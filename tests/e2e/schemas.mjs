// Twenty varied JSON schemas for the structured-output tests, and an independent validator (ajv).
// The tiny model's text is random by design: only the constraint engine can make its output valid,
// so every string has a maxLength (or a format/enum) and arrays a maxItems — a random model would
// otherwise rarely close a string before max_tokens.
import Ajv2020 from 'ajv/dist/2020.js';

const ajv = new Ajv2020({ strict: false, allErrors: true, validateFormats: false });

// Validates `value` against `schema`; throws with ajv's errors when it is not valid.
export function assertValid(schema, value, what = 'value') {
  const validate = ajv.compile(schema);
  if (!validate(value)) {
    throw new Error(`${what} is not valid for its schema: ${ajv.errorsText(validate.errors)}\n` +
      `value: ${JSON.stringify(value)}\nschema: ${JSON.stringify(schema)}`);
  }
}

// For an object schema whose properties are all required: the output's keys are in the schema's
// order (the server must hand the engine the schema as the client wrote it, not with sorted keys).
export function assertKeyOrder(schema, value, what = 'value') {
  if (schema.type !== 'object' || !schema.properties || !value || typeof value !== 'object') return;
  const keys = Object.keys(schema.properties);
  if (!keys.every((k) => schema.required?.includes(k))) return;
  const got = Object.keys(value);
  if (JSON.stringify(got) !== JSON.stringify(keys)) {
    throw new Error(`${what}: keys ${JSON.stringify(got)}, the schema's order is ${JSON.stringify(keys)}`);
  }
}

const str = (max, extra = {}) => ({ type: 'string', maxLength: max, ...extra });

export const SCHEMAS = [
  ['flat_person', {
    type: 'object',
    properties: { name: str(12), age: { type: 'integer', minimum: 0 } },
    required: ['name', 'age'], additionalProperties: false,
  }],
  ['boolean_flag', {
    type: 'object', properties: { ok: { type: 'boolean' } }, required: ['ok'], additionalProperties: false,
  }],
  ['string_enum', {
    type: 'object',
    properties: { color: { type: 'string', enum: ['red', 'green', 'blue'] } },
    required: ['color'], additionalProperties: false,
  }],
  ['const_and_enum', {
    type: 'object',
    properties: { kind: { const: 'event' }, level: { enum: [1, 2, 3, 'high', null] } },
    required: ['kind', 'level'], additionalProperties: false,
  }],
  ['nested_object', {
    type: 'object',
    properties: {
      user: {
        type: 'object',
        properties: { id: { type: 'integer', minimum: 0 }, handle: str(8) },
        required: ['id', 'handle'], additionalProperties: false,
      },
      active: { type: 'boolean' },
    },
    required: ['user', 'active'], additionalProperties: false,
  }],
  ['array_of_strings', {
    type: 'object',
    properties: { tags: { type: 'array', items: str(6), minItems: 1, maxItems: 3 } },
    required: ['tags'], additionalProperties: false,
  }],
  ['array_of_objects', {
    type: 'object',
    properties: {
      items: {
        type: 'array', maxItems: 2,
        items: {
          type: 'object', properties: { sku: str(5), qty: { type: 'integer', minimum: 0 } },
          required: ['sku', 'qty'], additionalProperties: false,
        },
      },
    },
    required: ['items'], additionalProperties: false,
  }],
  ['top_level_array', { type: 'array', items: { type: 'boolean' }, minItems: 2, maxItems: 4 }],
  ['top_level_enum', { enum: ['yes', 'no', 'maybe'] }],
  ['nullable_union', {
    type: 'object',
    properties: { note: { type: ['string', 'null'], maxLength: 10 }, score: { type: ['integer', 'null'], minimum: 0 } },
    required: ['note', 'score'], additionalProperties: false,
  }],
  ['any_of', {
    type: 'object',
    properties: {
      value: { anyOf: [{ type: 'boolean' }, { type: 'string', enum: ['none', 'all'] }, { type: 'null' }] },
    },
    required: ['value'], additionalProperties: false,
  }],
  ['refs_and_defs', {
    $defs: {
      point: {
        type: 'object', properties: { x: { type: 'integer', minimum: 0 }, y: { type: 'integer', minimum: 0 } },
        required: ['x', 'y'], additionalProperties: false,
      },
    },
    type: 'object',
    properties: { from: { $ref: '#/$defs/point' }, to: { $ref: '#/$defs/point' } },
    required: ['from', 'to'], additionalProperties: false,
  }],
  ['optional_properties', {
    type: 'object',
    properties: { a: str(4), b: { type: 'boolean' }, c: { type: 'null' } },
    required: ['a'], additionalProperties: false,
  }],
  ['string_pattern', {
    type: 'object',
    properties: { code: { type: 'string', pattern: '^[A-Z]{3}-[0-9]{2}$' } },
    required: ['code'], additionalProperties: false,
  }],
  ['string_formats', {
    type: 'object',
    properties: { day: { type: 'string', format: 'date' }, id: { type: 'string', format: 'uuid' } },
    required: ['day', 'id'], additionalProperties: false,
  }],
  ['length_bounds', {
    type: 'object',
    properties: { word: { type: 'string', minLength: 2, maxLength: 5 } },
    required: ['word'], additionalProperties: false,
  }],
  ['number_field', {
    type: 'object',
    properties: { ratio: { type: 'number', minimum: 0 }, label: str(6) },
    required: ['ratio', 'label'], additionalProperties: false,
  }],
  ['deep_nesting', {
    type: 'object',
    properties: {
      a: {
        type: 'object',
        properties: {
          b: {
            type: 'object', properties: { c: { type: 'array', items: { enum: [0, 1] }, maxItems: 3 } },
            required: ['c'], additionalProperties: false,
          },
        },
        required: ['b'], additionalProperties: false,
      },
    },
    required: ['a'], additionalProperties: false,
  }],
  ['tuple_prefix_items', {
    type: 'array', prefixItems: [str(4), { type: 'boolean' }, { enum: ['x', 'y'] }], items: false, minItems: 3,
  }],
  ['many_properties', {
    type: 'object',
    properties: Object.fromEntries(['p1', 'p2', 'p3', 'p4', 'p5', 'p6'].map((k, i) =>
      [k, i % 2 ? { type: 'boolean' } : { type: 'string', enum: [`${k}a`, `${k}b`] }])),
    required: ['p1', 'p2', 'p3', 'p4', 'p5', 'p6'], additionalProperties: false,
  }],
];
