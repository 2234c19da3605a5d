#!/usr/bin/env python3
"""Writes the seed corpora fuzz/corpus/<target>/seed-* from the tests' inputs (tests/fixtures,
tests/tokenizer/data) and a few hand-written requests. Re-run after changing it; regression inputs
(fuzz/corpus/<target>/regress-*) are committed by hand and never touched here."""
import hashlib
import json
import os
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures", "tiny")
OUT = os.path.join(ROOT, "fuzz", "corpus")


def write(target, items):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        if f.startswith("seed-"):
            os.remove(os.path.join(d, f))
    for data in items:
        if isinstance(data, str):
            data = data.encode()
        name = "seed-" + hashlib.sha1(data).hexdigest()[:12]
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    print(f"{target}: {len(items)} seeds, {sum(len(x if isinstance(x, bytes) else x.encode()) for x in items)} bytes")


def load(*p):
    with open(os.path.join(*p), encoding="utf-8") as f:
        return json.load(f)


chat_cases = load(FIX, "tokenizer", "chat_cases.json")
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
CALL = {"id": "functions.get_weather:0", "type": "function",
        "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}

# --- request: bodies for the chat, completions, tokenize and detokenize handlers
req = [json.dumps({"messages": c["messages"], **({"tools": c["tools"]} if "tools" in c else {}),
                   "add_generation_prompt": c.get("add_generation_prompt", True)}) for c in chat_cases]
req += [json.dumps(b) for b in [
    {"model": "tiny", "messages": [{"role": "developer", "content": "Rules."},
                                   {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "you"}]},
                                   {"role": "assistant", "content": "Well,"}],
     "continue_final_message": True, "add_generation_prompt": False},
    {"messages": [{"role": "user", "content": "weather?"}, {"role": "assistant", "content": None, "tool_calls": [CALL]},
                  {"role": "tool", "tool_call_id": "functions.get_weather:0", "content": "sunny"}],
     "tools": TOOLS, "tool_choice": "auto", "stream": True, "stream_options": {"include_usage": True}},
    {"messages": [{"role": "user", "content": "hi", "name": "bob"}], "tools": TOOLS,
     "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
    {"messages": [{"role": "user", "content": "x"}], "n": 2, "seed": 7, "temperature": 0.7, "top_p": 0.9,
     "top_k": 20, "min_p": 0.05, "max_tokens": 16, "max_completion_tokens": 16, "stop": ["\n", "END"],
     "stop_token_ids": [1, 2], "logprobs": True, "top_logprobs": 3, "presence_penalty": 0.5,
     "frequency_penalty": -0.5, "repetition_penalty": 1.1, "ignore_eos": True, "skip_special_tokens": False,
     "include_stop_str_in_output": True, "return_tokens_as_token_ids": True, "response_format": {"type": "text"},
     "chat_template_kwargs": {"thinking": True}, "user": "u"},
    {"model": "tiny", "prompt": "Once upon a time", "max_tokens": 8, "echo": True, "logprobs": 2, "stream": False},
    {"prompt": ["a", "b"], "n": 3, "best_of": 3, "suffix": None, "stop": "x", "seed": 1},
    {"prompt": [1, 2, 3, 4], "max_tokens": 1},
    {"prompt": [[1, 2], [3]], "stream": True, "stream_options": {"include_usage": True, "continuous_usage_stats": True}},
    {"prompt": "<|im_end|><|im_system|>system", "return_token_strs": True, "add_special_tokens": False},
    {"model": "tiny", "messages": [{"role": "user", "content": "count"}], "return_token_strs": True},
    {"tokens": [1, 2, 3, 200]},
]]
req += ["", "{", "[]", "null", "{\"messages\": []}", "{\"prompt\": \"\\ud800\"}"]
write("request", req)

# --- jinja: template \0 context (cases of the Jinja tests; the tiny model's template)
cases = load(ROOT, "tests", "tokenizer", "data", "jinja_cases.json")
jin = []
for c in cases:
    ctx = json.dumps(c.get("context", {}), ensure_ascii=False)
    item = c["template"] + "\0" + ctx
    if len(item.encode()) <= 300:
        jin.append(item)
with open(os.path.join(FIX, "tokenizer", "chat_template.jinja"), encoding="utf-8") as f:
    tmpl = f.read()
jin.append(tmpl)  # the default (chat-like) context
for c in chat_cases[:3]:
    jin.append(tmpl + "\0" + json.dumps({k: v for k, v in c.items() if k != "expected"}, ensure_ascii=False))
write("jinja", jin)

# --- tokenizer: texts of the encode tests (a spread of short ones) and special-token text
enc = load(FIX, "tokenizer", "encode_cases.json")
texts = sorted({c["text"] for c in enc if 0 < len(c["text"].encode()) <= 120}, key=lambda t: hashlib.sha1(t.encode()).hexdigest())
tok = texts[:40] + ["<|im_user|>user<|im_middle|>hi<|im_end|>", "\xff\xfe bad", "  \n\n\t 123456789 ÄÖ 你好 😀"]
write("tokenizer", [t.encode("utf-8", "surrogateescape") if isinstance(t, str) else t for t in tok[:-2]]
      + [b"\xff\xfe\x80 bad \xc3", tok[-1].encode()])

# --- tool_parser: a seed byte (piece lengths), then model output
tp = [
    '<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>{"city": "Paris"}<|tool_call_end|><|tool_calls_section_end|>',
    'Hi<|tool_calls_section_begin|> <|tool_call_begin|> functions.f:0 <|tool_call_argument_begin|>{}<|tool_call_end|>\n<|tool_calls_section_end|> bye',
    '<|tool_calls_section_begin|><|tool_call_begin|>functions.g:0<|tool_call_argument_begin|>{"a": 1<|tool_ca',
    '<|tool_call_begin|>functions.h:3<|tool_call_argument_begin|>[]<|tool_call_end|>',
    '<|tool_call_section_begin|><|tool_call_begin|>functions.k:0<|tool_call_argument_begin|>1<|tool_call_end|><|tool_call_section_end|>',
    'text <|tool_calls',
    'Let me check < that > for you <|im_not_a_marker|>.<|tool_calls_section_begin|><|tool_call_begin|>functions.search:0<|tool_call_argument_begin|>{"q": "a < b && c <| d"}<|tool_call_end|><|tool_call_begin|>functions.get_time:1<|tool_call_argument_begin|>{}<|tool_call_end|><|tool_calls_section_end|>',
    'No tools here, just text ending in <',
]
write("tool_parser", [bytes([i * 37 % 256]) + t.encode() for i, t in enumerate(tp)])


# --- safetensors: small files made like the writer makes them
def st(tensors, metadata=None, pad=0, raw_header=None):
    header, data, off = {}, b"", 0
    for name, dtype, shape, nbytes in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + nbytes]}
        data += bytes((i * 7) % 251 for i in range(nbytes))
        off += nbytes
    if metadata is not None:
        header["__metadata__"] = metadata
    h = raw_header if raw_header is not None else json.dumps(header).encode()
    h += b" " * pad
    return struct.pack("<Q", len(h)) + h + data


stf = [
    st([("a", "F32", [2, 3], 24)]),
    st([("w", "BF16", [4], 8), ("b", "F16", [2, 2], 8), ("e", "F32", [0, 5], 0), ("s", "F32", [], 4)],
       {"format": "pt", "n": "1"}, pad=5),
    st([("i", "I32", [3], 12), ("u", "U8", [5], 5), ("x", "F8_E4M3", [2], 2), ("l", "I64", [1], 8)]),
    st([], {"nested": "x"}),
    st([], raw_header=b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 8]}}'),
    st([], raw_header=b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}') + bytes(8),
    struct.pack("<Q", 2) + b"{}",
]
write("safetensors", stf)

# --- checkpoint_index: the tiny model's index, shortened, and variants
idx = load(FIX, "model", "model.safetensors.index.json")
wm = dict(list(idx["weight_map"].items())[:6])
write("checkpoint_index", [
    json.dumps({"metadata": idx.get("metadata", {}), "weight_map": wm}, indent=2),
    json.dumps({"weight_map": {"a": "model.safetensors"}}),
    json.dumps({"weight_map": {"a": 1}}),
    json.dumps({"weight_map": []}),
    "[]",
])
