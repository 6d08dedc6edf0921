"""Chat-template fixtures: what transformers' apply_chat_template renders, for the C tests.

    python3 tools/reference/make_template_fixtures.py [--shared ../shared/data]

Writes tests/fixtures/chat/:
  snippets.json       every template of jinja_snippets.py rendered by transformers' chat-template
                      environment (or its error and template line)
  conversations.json  a seeded corpus of conversations (system / developer, thinking on / off / unset,
                      multi-turn, reasoning, tool declarations, tool calls with dict and JSON-string
                      arguments, tool responses as strings / dicts / parts, content parts with images,
                      empty content, unicode, with and without the generation prompt), each rendered
                      with tokenizer.apply_chat_template(tokenize=False) for three templates:
                        gemma4   Google's Gemma 4 template (../shared/data; not committed, only outputs)
                        gemma3   the chat_template of the Gemma 3 tokenizer_config.json (../shared/data)
                        builtin  dgemma's own template, src/tokenizer/chat_default.jinja
Deterministic: fixed seed, no clock (strftime_now is only used with a date-free format).
"""
import argparse
import json
import lzma
import os
import random
import shutil
import sys
import tempfile

import jinja2
import transformers
from transformers import AutoTokenizer
from transformers.utils.chat_template_utils import _compile_jinja_template

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from jinja_snippets import SNIPPETS  # noqa: E402


def template_error(e):
    """(message, template line or None) of a rendering exception, as jinja2 reports it."""
    line = getattr(e, "lineno", None) if isinstance(e, jinja2.exceptions.TemplateSyntaxError) else None
    if line is None and not isinstance(e, SyntaxError):
        tb = e.__traceback__
        while tb:
            if tb.tb_frame.f_code.co_filename == "<template>":
                line = tb.tb_lineno
            tb = tb.tb_next
    return {"error": f"{type(e).__name__}: {e}", "line": line}


def render_snippets():
    out = []
    for name, tpl, variables in SNIPPETS:
        rec = {"name": name, "template": tpl, "vars": variables}
        try:
            rec["out"] = _compile_jinja_template(tpl).render(**variables)
        except Exception as e:  # noqa: BLE001 - every error is a test case
            rec.update(template_error(e))
        out.append(rec)
    return out


# ===== the conversation corpus =====

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather",
        "description": "Get the current weather in a given location",
        "parameters": {"type": "object", "properties": {
            "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "Temperature unit"},
        }, "required": ["location"]}}},
    {"type": "function", "function": {
        "name": "search_docs",
        "description": "Search the \"knowledge base\" \u2013 returns snippets (\u00e9t\u00e9, \u4e2d\u6587)",
        "parameters": {"type": "object", "properties": {
            "query": {"type": "string", "description": "Words to look for"},
            "limit": {"type": "integer", "description": "How many results", "nullable": True},
            "filters": {"type": "object", "description": "Optional filters", "properties": {
                "lang": {"type": "string", "enum": ["en", "fr"]},
                "after": {"type": "string", "description": "ISO date"},
            }, "required": ["lang"]},
            "tags": {"type": "array", "items": {"type": "string"}, "description": "Tags to match"},
        }, "required": ["query"]}}},
    {"type": "function", "function": {
        "name": "create_event",
        "description": "Create calendar events",
        "parameters": {"type": "object", "properties": {
            "events": {"type": "array", "description": "Events to create", "items": {
                "type": "object",
                "properties": {"title": {"type": "string"}, "start": {"type": "string", "description": "RFC 3339"},
                               "attendees": {"type": "array", "items": {"type": "string"}}},
                "required": ["title", "start"]}},
            "notify": {"type": "boolean", "description": "Send invitations"},
            "priority": {"type": "number"},
            "Metadata": {"type": "object"},
        }, "required": ["events"]},
        "response": {"type": "object", "description": "The created event ids"}}},
    {"type": "function", "function": {"name": "get_time", "description": "Current time, no arguments"}},
    {"type": "function", "function": {
        "name": "set_mode",
        "description": "Switch mode",
        "parameters": {"type": "object", "properties": {
            "mode": {"type": "string", "enum": ["fast", "slow"]},
            "levels": {"type": "array", "items": {"type": ["string", "null"], "enum": ["a", "b"]}},
        }}}},
]

USER_TEXTS = [
    "What's the weather in Paris?",
    "  Please summarise this:\n\n* one\n* two  ",
    "Explain recursion in one sentence.",
    "\u00bfQu\u00e9 hora es en Madrid? \U0001F570\ufe0f",
    "Translate 'good morning' into Japanese \u2013 and into \u0639\u0631\u0628\u064a.",
    "Write a haiku about C compilers.",
    "Compare {\"a\": 1} with [1, 2] <b>html</b> & friends",
    "Tab\tseparated\tvalues and a backslash \\ here",
]

ASSISTANT_TEXTS = [
    "It is sunny and 21 \u00b0C in Paris.",
    "Sure! Here it is:\n- one\n- two",
    "A function that calls itself on a smaller input until a base case.",
    "<|channel>thought\nThe user wants a short answer.<channel|>Recursion: solving a problem by solving smaller copies of it.",
    "Son las 10:30 en Madrid. \U0001F60A",
    "Compilers\nturn source into machine code\nwarnings bloom like spring",
]

SYSTEMS = ["You are a helpful assistant.", "  Answer in French.  \n", "You are terse.\nNever apologise."]


def call(name, args, cid=None, as_string=False):
    tc = {"type": "function", "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False) if as_string else args}}
    if cid:
        tc["id"] = cid
    return tc


def hand_cases():
    """Named cases for every feature; the random ones below mix them."""
    C = []

    def add(name, messages, tools=None, gen=True, thinking=None, extra=None):
        C.append({"name": name, "messages": messages, "tools": tools, "add_generation_prompt": gen,
                  "enable_thinking": thinking, "extra": extra})

    u = lambda t: {"role": "user", "content": t}  # noqa: E731
    a = lambda t, **kw: dict({"role": "assistant", "content": t}, **kw)  # noqa: E731

    add("user_only", [u("Hello")])
    add("user_only_no_prompt", [u("Hello")], gen=False)
    add("user_only_thinking_on", [u("Hello")], thinking=True)
    add("user_only_thinking_off", [u("Hello")], thinking=False)
    add("system_user", [{"role": "system", "content": SYSTEMS[0]}, u("Hi")])
    add("system_user_thinking", [{"role": "system", "content": SYSTEMS[1]}, u("Hi")], thinking=True)
    add("developer_user", [{"role": "developer", "content": "Be precise."}, u("2+2?")])
    add("system_only", [{"role": "system", "content": "Only a system prompt."}])
    add("multi_turn", [u(USER_TEXTS[0]), a(ASSISTANT_TEXTS[0]), u(USER_TEXTS[2]), a(ASSISTANT_TEXTS[2]), u("Thanks!")])
    add("multi_turn_no_prompt", [u(USER_TEXTS[1]), a(ASSISTANT_TEXTS[1])], gen=False)
    add("assistant_channel_stripped", [u("Q"), a(ASSISTANT_TEXTS[3]), u("Again")])
    add("assistant_reasoning_history", [u("Q1"), a("A1", reasoning_content="hidden thoughts"), u("Q2")], thinking=True)
    add("assistant_thinking_field", [u("Q1"), a("A1", thinking="older name for reasoning"), u("Q2")])
    add("assistant_last_no_prompt", [u("Q"), a("Final answer.")], gen=False)
    add("empty_user_content", [u("")])
    add("none_content_dropped", [u("Hi"), {"role": "assistant", "content": None, "tool_calls": None}, u("again")])
    add("unicode_content", [u(USER_TEXTS[3]), a(ASSISTANT_TEXTS[4]), u(USER_TEXTS[4])])
    add("special_chars", [u(USER_TEXTS[6]), a("<b>ok</b> & done"), u(USER_TEXTS[7])])
    add("content_parts_text", [{"role": "user", "content": [{"type": "text", "text": "  part one "}, {"type": "text", "text": "part two"}]}])
    add("content_parts_image", [{"role": "user", "content": [{"type": "image", "url": "https://example.com/cat.png"}, {"type": "text", "text": "What is this?"}]}])
    add("content_parts_image_last", [{"role": "user", "content": [{"type": "text", "text": "Describe:"}, {"type": "image", "image": "cat.png"}]}])
    add("content_parts_audio_video", [{"role": "user", "content": [{"type": "audio", "path": "a.wav"}, {"type": "video", "path": "v.mp4"}, {"type": "text", "text": "Transcribe."}]}])
    add("assistant_parts", [u("Q"), {"role": "assistant", "content": [{"type": "text", "text": "<|channel>thought\nx<channel|>Visible"}]}, u("Next")])
    add("system_parts", [{"role": "system", "content": [{"type": "text", "text": "Sys in parts."}]}, u("Hi")])
    add("tools_declared", [u(USER_TEXTS[0])], tools=TOOLS)
    add("tools_declared_system", [{"role": "system", "content": SYSTEMS[2]}, u(USER_TEXTS[0])], tools=TOOLS[:2])
    add("tools_declared_thinking", [u(USER_TEXTS[0])], tools=TOOLS[2:], thinking=True)
    add("tools_empty_list", [u("Hi")], tools=[])
    add("tool_call_dict_args", [u(USER_TEXTS[0]), a("", tool_calls=[call("get_weather", {"location": "Paris, FR", "unit": "celsius"}, "c1")]),
                                {"role": "tool", "tool_call_id": "c1", "content": "{\"temp\": 21, \"sky\": \"sunny\"}"}], tools=TOOLS)
    add("tool_call_string_args", [u(USER_TEXTS[0]), a(None, tool_calls=[call("get_weather", {"location": "Paris"}, "c1", as_string=True)]),
                                  {"role": "tool", "tool_call_id": "c1", "content": "sunny"}, a("It is sunny.")], tools=TOOLS)
    add("tool_call_then_answer", [u(USER_TEXTS[0]), a("", tool_calls=[call("get_weather", {"location": "Paris"}, "c1")]),
                                  {"role": "tool", "tool_call_id": "c1", "content": "sunny, 21C"}, a("Sunny, 21 \u00b0C."), u("And tomorrow?")], tools=TOOLS)
    add("tool_call_pending", [u(USER_TEXTS[0]), a("", tool_calls=[call("get_weather", {"location": "Paris"})])], tools=TOOLS)
    add("tool_call_pending_no_prompt", [u(USER_TEXTS[0]), a("", tool_calls=[call("get_weather", {"location": "Paris"})])], tools=TOOLS, gen=False)
    add("tool_calls_parallel", [u("Weather in Paris and Rome?"),
                                a("", tool_calls=[call("get_weather", {"location": "Paris"}, "p"), call("get_weather", {"location": "Rome"}, "r")]),
                                {"role": "tool", "tool_call_id": "r", "content": "rain"}, {"role": "tool", "tool_call_id": "p", "content": "sun"}], tools=TOOLS)
    add("tool_response_by_name", [u("Time?"), a("", tool_calls=[call("get_time", {})]), {"role": "tool", "name": "get_time", "content": "10:30"}], tools=TOOLS)
    add("tool_response_parts", [u("Time?"), a("", tool_calls=[call("get_time", {}, "t")]),
                                {"role": "tool", "tool_call_id": "t", "content": [{"type": "text", "text": "10:"}, {"type": "text", "text": "30"}]}], tools=TOOLS)
    add("tool_response_dict", [u("Time?"), a("", tool_calls=[call("get_time", {}, "t")]),
                               {"role": "tool", "tool_call_id": "t", "content": {"time": "10:30", "tz": "CET"}}], tools=TOOLS)
    add("tool_response_unnamed", [u("Time?"), a("", tool_calls=[call("get_time", {}, "t")]), {"role": "tool", "content": "10:30"}], tools=TOOLS)
    add("tool_call_nested_args", [u("Plan it"), a("Creating.", tool_calls=[call("create_event", {
        "events": [{"title": "Stand-up \"daily\"", "start": "2026-01-05T09:00:00Z", "attendees": ["ana", "b\u00f8b"]}],
        "notify": True, "priority": 2.5, "Metadata": {"z": None, "a": [1, {"k": "v"}]}}, "e1")]),
        {"role": "tool", "tool_call_id": "e1", "content": "ok"}], tools=TOOLS)
    add("tool_call_with_reasoning", [u("Weather?"), a("", reasoning_content="I should call the tool.", tool_calls=[call("get_weather", {"location": "Oslo"}, "w")]),
                                     {"role": "tool", "tool_call_id": "w", "content": "snow"}], tools=TOOLS, thinking=True)
    add("tool_call_reasoning_before_user", [u("Weather?"), a("", reasoning_content="old thought", tool_calls=[call("get_weather", {"location": "Oslo"}, "w")]),
                                            {"role": "tool", "tool_call_id": "w", "content": "snow"}, a("Snow."), u("Thanks")], tools=TOOLS, thinking=True)
    add("legacy_tool_responses", [u("Time?"), {"role": "assistant", "content": "", "tool_calls": [call("get_time", {})],
                                               "tool_responses": [{"name": "get_time", "response": {"time": "10:30"}}]}], tools=TOOLS)
    add("consecutive_assistant", [u("Q"), a("Part one."), a("Part two."), u("ok")])
    add("assistant_first", [a("I start."), u("Fine.")])
    add("extra_variables", [u("Hi")], extra={"custom_flag": True, "date_string": "26 Jul 2024"})
    add("long_conversation", [m for i in range(12) for m in (u(f"Question {i}: {USER_TEXTS[i % len(USER_TEXTS)]}"), a(ASSISTANT_TEXTS[i % len(ASSISTANT_TEXTS)]))] + [u("Last one")])
    add("whitespace_content", [u("   \n\t  "), a("  \n  "), u("x")])
    add("tool_call_arg_types", [u("Set"), a("", tool_calls=[call("set_mode", {"mode": "fast", "levels": ["a", "b"], "n": 3, "f": 0.5, "flag": False, "none": None}, "m")]),
                                {"role": "tool", "tool_call_id": "m", "content": "done"}, u("ok")], tools=TOOLS)
    return C


def random_cases(n, seed=1234):
    rnd = random.Random(seed)
    out = []
    for k in range(n):
        msgs = []
        if rnd.random() < 0.4:
            msgs.append({"role": rnd.choice(["system", "developer"]), "content": rnd.choice(SYSTEMS)})
        turns = rnd.randint(1, 4)
        use_tools = rnd.random() < 0.4
        cid = 0
        for t in range(turns):
            if rnd.random() < 0.25:
                msgs.append({"role": "user", "content": [{"type": "text", "text": rnd.choice(USER_TEXTS)}] +
                             ([{"type": "image", "url": f"img{t}.png"}] if rnd.random() < 0.5 else [])})
            else:
                msgs.append({"role": "user", "content": rnd.choice(USER_TEXTS)})
            last = t == turns - 1
            if last and rnd.random() < 0.6:
                break
            if use_tools and rnd.random() < 0.5:
                cid += 1
                args = {"location": rnd.choice(["Paris", "S\u00e3o Paulo", "Z\u00fcrich"])}
                if rnd.random() < 0.5:
                    args["unit"] = rnd.choice(["celsius", "fahrenheit"])
                m = {"role": "assistant", "content": "", "tool_calls": [call("get_weather", args, f"call_{cid}", as_string=rnd.random() < 0.3)]}
                if rnd.random() < 0.4:
                    m["reasoning_content"] = "Need the weather tool."
                msgs.append(m)
                if last and rnd.random() < 0.3:
                    break
                msgs.append({"role": "tool", "tool_call_id": f"call_{cid}", "content": rnd.choice(["sunny", "{\"t\": 20}", "rain \u2602"])})
                if rnd.random() < 0.7:
                    msgs.append({"role": "assistant", "content": rnd.choice(ASSISTANT_TEXTS)})
            else:
                m = {"role": "assistant", "content": rnd.choice(ASSISTANT_TEXTS)}
                if rnd.random() < 0.3:
                    m["reasoning_content"] = "Some earlier reasoning."
                msgs.append(m)
        out.append({"name": f"random_{k:02d}", "messages": msgs, "tools": TOOLS[:rnd.randint(1, len(TOOLS))] if use_tools else None,
                    "add_generation_prompt": rnd.random() < 0.75, "enable_thinking": rnd.choice([None, True, False]), "extra": None})
    return out


def render_case(tok, case, template, bos_eos):
    kw = dict(case["extra"] or {})
    if case["enable_thinking"] is not None:
        kw["enable_thinking"] = case["enable_thinking"]
    if bos_eos:
        kw.update(bos_token="<bos>", eos_token="<eos>")
    try:
        out = tok.apply_chat_template(json.loads(json.dumps(case["messages"])), tools=case["tools"], chat_template=template,
                                      tokenize=False, add_generation_prompt=case["add_generation_prompt"], **kw)
        return {"out": out}
    except Exception as e:  # noqa: BLE001
        return template_error(e)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared", "data"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "chat"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    versions = {"python": sys.version.split()[0], "transformers": transformers.__version__, "jinja2": jinja2.__version__}

    snippets = render_snippets()
    with open(os.path.join(args.out, "snippets.json"), "w", encoding="utf-8") as f:
        json.dump({"versions": versions, "snippets": snippets}, f, ensure_ascii=False, indent=0)
    print(f"snippets: {len(snippets)} ({sum('error' in s for s in snippets)} errors)")

    with open(os.path.join(args.shared, "gemma4-31b-it.chat_template.jinja"), encoding="utf-8") as f:
        gemma4 = f.read()
    with open(os.path.join(ROOT, "src", "tokenizer", "chat_default.jinja"), encoding="utf-8") as f:
        builtin = f.read()
    tmp = tempfile.mkdtemp()
    try:
        for name in ("tokenizer.json", "tokenizer_config.json"):
            with lzma.open(os.path.join(args.shared, f"gemma3-{name}.xz")) as src, open(os.path.join(tmp, name), "wb") as dst:
                shutil.copyfileobj(src, dst)
        tok = AutoTokenizer.from_pretrained(tmp)
    finally:
        shutil.rmtree(tmp)
    versions["gemma3_special_tokens"] = tok.special_tokens_map

    cases = hand_cases() + random_cases(40)
    stats = {"gemma4": 0, "gemma3": 0, "builtin": 0}
    for case in cases:
        case["gemma4"] = render_case(tok, case, gemma4, True)
        case["gemma3"] = render_case(tok, case, None, False)
        case["builtin"] = render_case(tok, case, builtin, True)
        for k in stats:
            stats[k] += "error" in case[k]
    with open(os.path.join(args.out, "conversations.json"), "w", encoding="utf-8") as f:
        json.dump({"versions": versions, "cases": cases}, f, ensure_ascii=False, indent=0)
    print(f"conversations: {len(cases)}; errors: {stats}")


if __name__ == "__main__":
    main()
