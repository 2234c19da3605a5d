#!/usr/bin/env python3
"""Generates tests/tokenizer/data/jinja_cases.json: template snippets rendered by jinja2 the way
Hugging Face's apply_chat_template renders chat templates (ImmutableSandboxedEnvironment,
trim_blocks, lstrip_blocks, loopcontrols, HF's tojson and raise_exception). The C++ interpreter
must reproduce every `expected` byte for byte; cases whose jinja2 rendering raises record `error`.
Needs jinja2 (a development-time tool only):  python3 tests/tokenizer/gen_jinja_cases.py
"""
import json
import os

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


def make_env():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env


MSGS = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi there", "name": "bob"},
    {"role": "assistant", "content": [{"type": "text", "text": "A"}, {"type": "image"}, {"type": "text", "text": "B"}]},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": {"x": 1, "y": [1.5, "é", None, True]}}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "42"},
]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather «now»",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "n": {"type": "integer"}},
                         "required": ["city"]}}}]

CASES = [
    # whitespace control, trim_blocks, lstrip_blocks
    ("{% if true %}\nyes\n{% endif %}\nafter", {}),
    ("  {% if true %}\n  x\n  {% endif %}\n", {}),
    ("a  {%- if true -%}  b  {%- endif -%}  c", {}),
    ("a\n  {{ 'v' }}  \n{# comment #}\nb", {}),
    ("a {#- c -#} b\n  {# full line #}\nz", {}),
    ("x{%+ if true %}y{% endif +%}\nz", {}),
    ("  {%+ if true %}k{% endif %}", {}),
    ("line1\n\t{% for i in [1,2] %}\n\t{{ i }}\n\t{% endfor %}\nend", {}),
    ("{% raw %}{{ not rendered }}{% endraw %}|{{ 1 }}", {}),
    ("{{ 'a' }}\n{{ 'b' }}\n", {}),
    ("trailing newline kept?\n", {}),
    ("{% if x %}\r\nA\r\n{% endif %}\r\nB", {"x": 1}),
    # expressions and python printing
    ("{{ 1 + 2 * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 1 - 2 - 3 }}", {}),
    ("{{ 0.1 + 0.2 }} {{ 1e20 }} {{ 1.5e-7 }} {{ 3.0 }} {{ 100.0 / 3 }} {{ 1e16 }} {{ 123456789012345678.0 }} {{ 0.0001 }}", {}),
    ("{{ [1, 'a', none, true, 2.5, {'k': 'v'}] }} {{ {'a': [1], 'b': {'c': none}} }}", {}),
    ("{{ \"it's\" }} {{ ['it\\'s', \"q\\\"d\", 'both \\' \"'] }} {{ ['tab\\tnl\\n', 'é'] }}", {}),
    ("{{ 'a' ~ 1 ~ none ~ true }} {{ 'x' * 3 }} {{ [1] + [2] }} {{ 'ab' + 'cd' }}", {}),
    ("{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 1 == 1.0 }} {{ 'a' != 'b' }} {{ 'b' in 'abc' }} {{ 2 not in [1, 3] }} {{ 'k' in {'k': 1} }}", {}),
    ("{{ not 0 }} {{ 0 or 'x' }} {{ 1 and 'y' }} {{ '' or [] }} {{ none and 1 }}", {}),
    ("{{ 'yes' if 1 > 0 else 'no' }} {{ 'no' if false else 'yes' }}|{{ 'z' if false }}|", {}),
    ("{{ 'hello'[1:3] }} {{ 'hello'[::-1] }} {{ [1,2,3,4][1:] }} {{ [1,2,3,4][:-1] }} {{ [1,2,3,4][::2] }} {{ 'héllo'[1] }} {{ [1,2,3][-1] }}", {}),
    ("{{ 'a' 'b' }} {{ \"\\u00e9\\x41\\n\" }}", {}),
    # undefined
    ("[{{ missing }}] [{{ missing | default('d') }}] [{{ '' | default('e', true) }}] {{ missing is defined }} {{ missing is undefined }}", {}),
    ("{{ m.nokey }}|{{ m['nokey'] }}|{{ m.get('nokey') }}|{{ m.get('nokey', 5) }}|{{ m.nokey is defined }}", {"m": {"a": 1}}),
    ("{% for x in missing %}{{ x }}{% else %}empty{% endfor %}", {}),
    ("{{ missing.attr }}", {}),
    ("{{ m.a.b }}", {"m": {"a": 1}}),
    ("{{ m.nokey.b }}", {"m": {"a": 1}}),
    # loops
    ("{% for m in messages %}{{ loop.index }}/{{ loop.length }}:{{ m.role }}{{ ',' if not loop.last }}{% endfor %}", {"messages": MSGS}),
    ("{% for m in messages if m.role != 'system' %}{{ loop.index0 }}{{ loop.first }}{{ loop.revindex }}{% endfor %}", {"messages": MSGS}),
    ("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", {"d": {"z": 1, "a": 2, "m": [3]}}),
    ("{% for k in d %}{{ k }}{% endfor %}|{% for c in 'héj' %}[{{ c }}]{% endfor %}", {"d": {"z": 1, "a": 2}}),
    ("{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i == 5 %}{% break %}{% endif %}{{ i }}{% endfor %}", {}),
    ("{% for i in range(1, 10, 3) %}{{ i }}{{ loop.cycle('a', 'b') }}{% endfor %}", {}),
    ("{% for a in [1,2] %}{% for b in [3,4] %}{{ loop.index }}{{ a }}{{ b }} {% endfor %}{% endfor %}", {}),
    ("{% for i in [1,2,3] %}{{ loop.previtem }}-{{ loop.nextitem }} {% endfor %}", {}),
    # scoping, namespace, set
    ("{% set x = 1 %}{% for i in [1,2] %}{% set x = x + i %}{{ x }}{% endfor %}|{{ x }}", {}),
    ("{% set ns = namespace(n=0, s='') %}{% for i in [1,2,3] %}{% set ns.n = ns.n + i %}{% set ns.s = ns.s ~ i %}{% endfor %}{{ ns.n }} {{ ns.s }}", {}),
    ("{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set t = 1, 2 %}{{ t }}", {}),
    ("{% set block %}inner {{ 1 + 1 }}{% endset %}[{{ block }}]", {}),
    ("{% if true %}{% set y = 'set in if' %}{% endif %}{{ y }}", {}),
    # macros
    ("{% macro greet(name, punct='!') %}Hello {{ name }}{{ punct }}{% endmacro %}{{ greet('a') }} {{ greet('b', '?') }} {{ greet(punct='.', name='c') }}", {}),
    ("{%- macro render(m) -%}\n  {%- if m.content is string -%}\n    {{ m.content }}\n  {%- else -%}\n    {%- for p in m.content -%}{{ p.text if p.type == 'text' else '<img>' }}{%- endfor -%}\n  {%- endif -%}\n{%- endmacro -%}\n{% for m in messages %}{{ render(m) if m.content is not none else 'NONE' }}|{% endfor %}", {"messages": MSGS}),
    ("{% set g = 'global' %}{% macro m() %}{{ g }}{% endmacro %}{{ m() }}", {}),
    ("{% macro f(a) %}{{ a }}{{ varargs }}{{ kwargs }}{% endmacro %}{{ f(1, 2, 3, k=4) }}", {}),
    # filters
    ("{{ tools | tojson }}", {"tools": TOOLS}),
    ("{{ tools | tojson(separators=(',', ':')) }}", {"tools": TOOLS}),
    ("{{ tools | tojson(indent=2) }}", {"tools": TOOLS}),
    ("{{ tools | tojson(indent=4, sort_keys=true) }}", {"tools": TOOLS}),
    ("{{ x | tojson }} {{ x | tojson(ensure_ascii=true) }}", {"x": {"s": "é😀\n\t\"\\ \u0001", "f": 1.0, "i": -3, "b": False, "n": None, "e": [], "o": {}}}),
    ("{{ [] | tojson(indent=2) }} {{ {} | tojson(indent=2) }} {{ 'a</b>' | tojson }}", {}),
    ("{{ ' x y ' | trim }}|{{ 'xxaxx' | trim('x') }}|{{ 'AbC' | lower }}|{{ 'AbC' | upper }}|{{ 'hello world-foo' | title }}|{{ 'hELLO' | capitalize }}", {}),
    ("{{ [1,2,3] | length }} {{ 'héllo' | length }} {{ {'a':1} | length }} {{ [1,2] | count }} {{ 5 | string }}{{ [1] | string }}", {}),
    ("{{ ['a','b'] | join(', ') }} {{ [1,2] | join }} {{ users | join(',', attribute='name') }}", {"users": [{"name": "u1"}, {"name": "u2"}]}),
    ("{{ [3,1,2] | first }}{{ [3,1,2] | last }}{{ 'abc' | first }} {{ [3,1,2] | sort }} {{ ['b','A','c'] | sort }} {{ [3,1,2] | sort(reverse=true) }} {{ [3,1,2] | reverse | list }}", {}),
    ("{{ 'aXbXc' | replace('X', '-') }} {{ 'aaa' | replace('a', 'b', 2) }} {{ d | items | list }} {{ d | dictsort }}", {"d": {"b": 1, "a": 2}}),
    ("{{ messages | selectattr('role', 'equalto', 'user') | map(attribute='content') | list }} {{ messages | rejectattr('content') | map(attribute='role') | join(',') }}", {"messages": MSGS}),
    ("{{ messages | map(attribute='role') | unique | list }} {{ [1, 2, 3, 4] | select('odd') | list }} {{ [1, 2, 3, 4] | reject('even') | list }} {{ ['a', 'b'] | map('upper') | list }}", {"messages": MSGS}),
    ("{{ '42' | int + 1 }} {{ 'x' | int }} {{ '2.5' | float }} {{ -3 | abs }} {{ 2.567 | round(2) }} {{ 2.5 | round }} {{ [1, 2, 3] | sum }} {{ [4, 2, 9] | max }} {{ [4, 2, 9] | min }}", {}),
    ("{{ 'a\nb\n\nc' | indent(2) }}|{{ 'a\nb' | indent(2, first=true) }}|{{ 'a\n\nb' | indent('> ', blank=true) }}", {}),
    ("{{ '<a href=\"x\">&</a>' | e }} {{ 'x' | safe }} {{ 'one two  three' | wordcount }}", {}),
    # tests
    ("{{ 'a' is string }} {{ 1 is string }} {{ none is none }} {{ 1 is number }} {{ 1.5 is float }} {{ 1 is integer }} {{ true is boolean }} {{ {} is mapping }} {{ [] is iterable }} {{ 'x' is sequence }} {{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 9 is divisibleby(4) }} {{ 'abc' is lower }} {{ 'x' is in 'xyz' }} {{ 1 is eq 1 }} {{ 2 is gt 1 }} {{ none is sameas none }} {{ range is callable }}", {}),
    ("{{ x is not none }} {{ x is not string }} {{ not x is string }}", {"x": "s"}),
    # string methods
    ("{{ ' a b '.strip() }}|{{ 'xax'.strip('x') }}|{{ ' a'.lstrip() }}|{{ 'a '.rstrip() }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'a b c'.split(' ', 1) }}|{{ 'a b c'.rsplit(' ', 1) }}", {}),
    ("{{ 'Hello'.startswith('He') }} {{ 'Hello'.endswith(('x', 'lo')) }} {{ 'a-b'.replace('-', '+') }} {{ 'abc'.upper() }} {{ 'ABC'.lower() }} {{ 'hello there'.title() }} {{ 'abcb'.find('b') }} {{ 'abcb'.count('b') }} {{ ','.join(['x', 'y']) }} {{ 'a\\nb'.splitlines() }}", {}),
    ("{{ 'think</think>answer'.split('</think>')[-1] }} {{ 'pre_x'.removeprefix('pre_') }} {{ '12'.isdigit() }} {{ 'ab1'.isalpha() }}", {}),
    ("{{ d.keys() | list }} {{ d.values() | list }} {{ d.items() | list }} {{ d.get('a') }}", {"d": {"a": 1, "b": [2]}}),
    # globals and errors
    ("{{ dict(a=1, b='x') }} {{ range(3) | list }} {{ namespace(a=1).a }}", {}),
    ("{% if messages[0].role != 'user' %}{{ raise_exception('first message must be user') }}{% endif %}", {"messages": MSGS}),
    ("{{ 1 + 'a' }}", {}),
    ("{{ [1].append(2) }}", {}),
    ("{% for m in messages %}{{ m['content'] }}{% endfor %}", {"messages": [{"role": "user", "content": "multi\nline\n\ncontent  "}]}),
    ("{{ x }}{{ y }}{{ z }}", {"x": 10**12, "y": -0.0, "z": 2.0**60}),
    # constructs that Kimi-K2/K3-style templates combine
    ("{%- set ns = namespace(last=-1) -%}{%- for i in range(messages|length - 1, -1, -1) -%}"
     "{%- if messages[i]['role'] == 'assistant' and not messages[i].get('tool_calls') -%}{%- set ns.last = i -%}"
     "{%- break -%}{%- endif -%}{%- endfor -%}{{ ns.last }}|{{ messages[:ns.last + 1] | length }}|"
     "{{ messages[ns.last + 1:] | map(attribute='role') | join(',') }}", {"messages": MSGS + [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]}),
    ("{%- macro tag(name, attrs=[]) -%}<{{ name }}{% for a in attrs %} {{ a[0] }}=\"{{ a[1] | string | replace('&', '&amp;') }}\"{% endfor %}>"
     "{%- endmacro -%}{%- set attrs = [('role', 'user')] -%}{%- set attrs = attrs + [('n', 'a&b'), ('i', loop_i)] -%}"
     "{{ tag('m', attrs) }}{{ tag('e') }}", {"loop_i": 3}),
    ("{%- macro sorted_json(v) -%}{%- if v is mapping -%}{{ '{' }}{%- for k, x in v | dictsort -%}"
     "{{ ',' if not loop.first }}{{ k | tojson }}:{{ sorted_json(x) }}{%- endfor -%}{{ '}' }}"
     "{%- elif v is string or v is number or v is boolean or v is none -%}{{ v | tojson }}"
     "{%- else -%}[{%- for x in v -%}{{ ',' if not loop.first }}{{ sorted_json(x) }}{%- endfor -%}]{%- endif -%}"
     "{%- endmacro -%}{{ sorted_json(tools) }}", {"tools": TOOLS}),
    ("{%- macro r(text, n=0) -%}{%- set text = text | string -%}{{ text | trim }}/{{ n }}{%- endmacro -%}"
     "{{ r(' a ') }} {{ r(5, n=2) }} {{ r(none) }}", {}),
    ("{% for m in messages %}{% if m is not mapping or 'role' not in m %}skip{% elif m.get('tool_call_id', m.get('id')) %}"
     "[{{ m.get('tool_call_id', m.get('id')) }}]{% else %}{{ m.role[0] | upper }}{% endif %}{% endfor %}", {"messages": MSGS + ["str", {"id": 7}]}),
    ("{%- if thinking is undefined -%}{%- set thinking = true -%}{%- endif -%}{{ 'think' if thinking else 'respond' }}"
     "{{- ' effort=' ~ effort if effort is defined }}", {"effort": "low"}),
    ("{{ messages[0].content if messages else 'none' }}|{{ (messages | last).role }}|{{ messages[-1]['role'] }}", {"messages": MSGS}),
]


def main():
    env = make_env()
    out = []
    for tmpl, ctx in CASES:
        case = {"template": tmpl, "context": ctx}
        try:
            case["expected"] = env.from_string(tmpl).render(**ctx)
        except Exception as e:  # noqa: BLE001 - recorded as an expected failure
            case["error"] = type(e).__name__ + ": " + str(e)
        out.append(case)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "jinja_cases.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {len(out)} cases to {path}")


if __name__ == "__main__":
    main()
