#!/usr/bin/env python3
"""dgemma serve over loopback, driven by real clients: the official `openai` Python client
(chat, completions, streaming, usage, seeds against `dgemma run`, error types), 20 concurrent clients
with some hanging up mid-stream, malformed requests on raw sockets, and the web page in headless
Chromium (selenium). Runs on the bundled tiny fixture model; every server is started on a free port
of 127.0.0.1 and must exit cleanly on SIGTERM (no sanitizer report when the binary is an ASan build).

    python3 tests/server/test_server.py ./dgemma [NAME_SUBSTRING ...]

Prints one line per test and "server-py: N passed, N failed, N skipped". A test whose Python package
(openai, selenium) or browser (chromium, chromedriver) is missing is skipped with the reason.
"""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

BIN = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "./dgemma")
ONLY = sys.argv[2:]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(os.environ.get("DG_FIXTURES", os.path.join(ROOT, "tests", "fixtures")), "tiny-a", "bf16")
ARTIFACTS = os.path.join(ROOT, "build", "test-artifacts")
# sanitizer builds are ~10x slower: fewer denoising steps keep the tier short
STEPS = 8
TMP = tempfile.mkdtemp(prefix="dgemma-server-")

try:
    import openai
except ImportError:
    openai = None


class Skip(Exception):
    pass


def need_openai():
    if openai is None:
        raise Skip("the openai package is missing (pip install -r tests/requirements-server.txt)")


# ===== servers =====

class Server:
    """`dgemma serve` on a free loopback port; stop() checks it exits 0 with no sanitizer report."""
    count = 0

    def __init__(self, *args):
        Server.count += 1
        self.log_path = os.path.join(TMP, "server%d.log" % Server.count)
        self.log = open(self.log_path, "w+")
        self.proc = subprocess.Popen([BIN, "serve", "-m", MODEL, "--port", "0", "-t", "1"] + list(args),
                                     stdout=subprocess.DEVNULL, stderr=self.log, cwd=ROOT)
        deadline = time.time() + 60
        self.port = None
        while time.time() < deadline and self.proc.poll() is None:
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", open(self.log_path).read())
            if m:
                self.port = int(m.group(1))
                break
            time.sleep(0.05)
        if not self.port:
            raise AssertionError("the server did not start: " + open(self.log_path).read())
        self.url = "http://127.0.0.1:%d" % self.port

    def text(self):
        return open(self.log_path, errors="replace").read()

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("the server did not stop on SIGTERM")
        self.log.close()
        log = self.text()
        for bad in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            assert bad not in log, "sanitizer report in the server log:\n" + log[-4000:]
        assert rc == 0, "the server exited with %d:\n%s" % (rc, log[-2000:])
        return log

    def client(self, key="none", retries=0):
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=retries, timeout=120)


def raw(port, method, path, body=None, headers=None, timeout=60):
    """one request on its own connection: (status, headers dict, body bytes)"""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    hd = {k.lower(): v for k, v in r.getheaders()}
    c.close()
    return r.status, hd, data


def error_of(data):
    e = json.loads(data)["error"]
    assert set(e) == {"message", "type", "param", "code"}, e
    assert isinstance(e["message"], str) and e["message"], e
    return e


def run_cli(*args):
    p = subprocess.run([BIN] + list(args), capture_output=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    return p.stdout.decode()


TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


SERVER = None   # the shared server of the client tests


def server():
    global SERVER
    if SERVER is None:
        SERVER = Server("--queue", "32", "--max-tokens-limit", "512", "--alias", "tiny")
    return SERVER


CHAT = [{"role": "user", "content": "Hello there"}]


# ===== the openai client =====

@test
def openai_models():
    need_openai()
    c = server().client()
    ids = [m.id for m in c.models.list().data]
    assert ids == ["tiny"], ids
    assert c.models.retrieve("tiny").id == "tiny"
    try:
        c.models.retrieve("gpt-nope")
        raise AssertionError("no error")
    except openai.NotFoundError as e:
        assert e.status_code == 404 and "gpt-nope" in str(e)


@test
def openai_chat():
    need_openai()
    c = server().client()
    r = c.chat.completions.create(model="tiny", messages=CHAT, max_tokens=40, seed=5,
                                  extra_body={"max_denoising_steps": STEPS})
    ch = r.choices[0]
    assert r.object == "chat.completion" and r.model == "tiny" and r.id.startswith("chatcmpl-")
    assert ch.message.role == "assistant" and isinstance(ch.message.content, str) and ch.message.content
    assert ch.finish_reason in ("stop", "length"), ch.finish_reason
    u = r.usage
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens and u.prompt_tokens > 5
    assert (u.completion_tokens == 40) == (ch.finish_reason == "length"), (u, ch.finish_reason)
    d = u.model_extra["diffusion"]
    assert d["canvases"] == len(d["steps_per_canvas"]) and d["steps"] == sum(d["steps_per_canvas"]), d
    assert all(1 <= s <= STEPS for s in d["steps_per_canvas"]) and d["seed"] == 5 and d["ms_per_step"] > 0, d
    # the same seed and settings give the same answer as `dgemma run`
    want = run_cli("run", "-m", MODEL, "-p", "Hello there", "--seed", "5", "-n", "40", "--steps", str(STEPS), "-q", "-t", "1")
    assert want.endswith("\n") and ch.message.content == want[:-1], (ch.message.content, want)


@test
def openai_chat_stream():
    need_openai()
    c = server().client()
    kw = dict(model="tiny", messages=CHAT, max_tokens=40, seed=5, extra_body={"max_denoising_steps": STEPS})
    whole = c.chat.completions.create(**kw)
    chunks = list(c.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == whole.choices[0].message.content, (text, whole.choices[0].message.content)
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason], finishes
    last = chunks[-1]
    assert last.choices == [] and last.usage.completion_tokens == whole.usage.completion_tokens
    assert last.usage.model_extra["diffusion"]["steps_per_canvas"] == whole.usage.model_extra["diffusion"]["steps_per_canvas"]
    # committed text comes canvas by canvas: at most one content chunk per canvas
    n_content = sum(1 for ch in chunks if ch.choices and ch.choices[0].delta.content)
    assert n_content <= whole.usage.model_extra["diffusion"]["canvases"], n_content


@test
def openai_drafts():
    need_openai()
    c = server().client()
    chunks = list(c.chat.completions.create(model="tiny", messages=CHAT, max_tokens=32, seed=9, stream=True,
                                            stream_options={"include_usage": True, "include_drafts": True},
                                            extra_body={"max_denoising_steps": STEPS}))
    drafts = [ch.model_extra["dgemma_draft"] for ch in chunks if ch.model_extra and "dgemma_draft" in ch.model_extra]
    d = chunks[-1].usage.model_extra["diffusion"]
    assert len(drafts) == d["steps"], (len(drafts), d)
    for x in drafts:
        assert x["n"] == 16 and len(x["tokens"]) == 16 and len(x["accepted"]) == 16 and sum(x["accepted"]) == x["n_accepted"]
        assert 1 <= x["step"] <= x["max_steps"] == STEPS and isinstance(x["text"], str) and x["mean_entropy"] >= 0
    # the draft chunks carry an empty delta: OpenAI clients see no text in them
    for ch in chunks:
        if ch.model_extra and "dgemma_draft" in ch.model_extra:
            assert ch.choices[0].delta.content is None and ch.choices[0].finish_reason is None
    # the last draft of each canvas is what it committed
    steps = [x["step"] for x in drafts]
    assert [s for i, s in enumerate(steps) if i + 1 == len(steps) or steps[i + 1] == 1] == d["steps_per_canvas"]


@test
def openai_completions():
    need_openai()
    c = server().client()
    r = c.completions.create(model="tiny", prompt="Once upon a time", max_tokens=24, seed=3,
                             extra_body={"max_denoising_steps": STEPS})
    want = run_cli("run", "-m", MODEL, "--raw", "-p", "Once upon a time", "--seed", "3", "-n", "24", "--steps", str(STEPS), "-q", "-t", "1")
    assert r.object == "text_completion" and r.choices[0].text == want[:-1], (r.choices[0].text, want)
    # token prompts against `dgemma generate` + `dgemma detokenize`, several prompts in one request
    prompts = [[2, 900, 901, 902], [2, 77]]
    r = c.completions.create(model="tiny", prompt=prompts, max_tokens=20, seed=11, extra_body={"max_denoising_steps": STEPS})
    assert [ch.index for ch in r.choices] == [0, 1]
    for ch, p in zip(r.choices, prompts):
        f = os.path.join(TMP, "prompt.txt")
        open(f, "w").write(" ".join(map(str, p)))
        ids = run_cli("generate", "-m", MODEL, "--prompt-ids", f, "--seed", "11", "-n", "20", "--steps", str(STEPS), "-t", "1").split()
        text = run_cli("detokenize", "-m", MODEL, "--skip-special", *ids) if ids else ""
        assert ch.text == text, (ch.text, text)
    # streamed: the same texts
    got = {}
    usage = None
    for ch in c.completions.create(model="tiny", prompt=prompts, max_tokens=20, seed=11, stream=True,
                                   stream_options={"include_usage": True}, extra_body={"max_denoising_steps": STEPS}):
        for x in ch.choices:
            got[x.index] = got.get(x.index, "") + x.text
        usage = ch.usage or usage
    assert [got[0], got[1]] == [x.text for x in r.choices] and usage.completion_tokens == r.usage.completion_tokens


@test
def openai_seeds_and_stop():
    need_openai()
    c = server().client()
    kw = dict(model="tiny", messages=[{"role": "system", "content": "Be brief."}] + CHAT, max_tokens=48,
              extra_body={"max_denoising_steps": STEPS})
    a = c.chat.completions.create(seed=21, **kw).choices[0].message.content
    b = c.chat.completions.create(seed=21, **kw).choices[0].message.content
    d = c.chat.completions.create(seed=22, **kw).choices[0].message.content
    assert a == b and a != d
    # a stop string taken from the answer: cut just before its first occurrence
    stop = a[len(a) // 2:len(a) // 2 + 3]
    r = c.chat.completions.create(seed=21, stop=[stop], **kw)
    assert r.choices[0].message.content == a[:a.index(stop)] and r.choices[0].finish_reason == "stop"
    # random seeds when none is given: reported in the statistics
    s1 = c.chat.completions.create(**kw).usage.model_extra["diffusion"]["seed"]
    s2 = c.chat.completions.create(**kw).usage.model_extra["diffusion"]["seed"]
    assert s1 != s2


@test
def openai_thinking_and_tools():
    need_openai()
    c = server().client()
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    msgs = [{"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"}]
    for extra in ({"chat_template_kwargs": {"enable_thinking": True}}, {"enable_thinking": True}, {}):
        extra["max_denoising_steps"] = STEPS
        r = c.chat.completions.create(model="tiny", messages=msgs, tools=tools, max_tokens=32, seed=4, extra_body=extra)
        m = r.choices[0].message
        assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")
        assert isinstance(m.content, str) or m.tool_calls
        assert m.model_extra.get("reasoning_content") is None or isinstance(m.model_extra["reasoning_content"], str)


@test
def openai_errors():
    need_openai()
    c = server().client()
    cases = [
        (openai.BadRequestError, dict(messages=[])),
        (openai.BadRequestError, dict(messages=[{"role": "wizard", "content": "x"}])),
        (openai.BadRequestError, dict(messages=CHAT, response_format={"type": "json_object"})),
        (openai.BadRequestError, dict(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]}])),
        (openai.UnprocessableEntityError, dict(messages=CHAT, extra_body={"t_min": 0.9, "t_max": 0.5})),
        (openai.UnprocessableEntityError, dict(messages=CHAT, max_tokens=100000)),
        (openai.UnprocessableEntityError, dict(messages=CHAT, extra_body={"max_denoising_steps": 0})),
    ]
    for exc, kw in cases:
        try:
            c.chat.completions.create(model="tiny", **kw)
            raise AssertionError("accepted: %r" % kw)
        except exc as e:
            assert e.body and e.body.get("message"), e.body
    try:
        c.completions.create(model="tiny", prompt=[])
        raise AssertionError("accepted an empty prompt list")
    except openai.BadRequestError as e:
        assert e.body["param"] == "prompt"
    try:   # a prompt longer than the context
        c.completions.create(model="tiny", prompt=[5] * 9000, max_tokens=16)
        raise AssertionError("accepted")
    except openai.BadRequestError as e:
        assert e.body["code"] == "context_length_exceeded"


@test
def openai_api_key():
    need_openai()
    s = Server("--api-key", "sekret")
    try:
        try:
            s.client("wrong").models.list()
            raise AssertionError("no error")
        except openai.AuthenticationError as e:
            assert e.status_code == 401
        st, hd, data = raw(s.port, "POST", "/v1/chat/completions", {"messages": CHAT})
        assert st == 401 and hd.get("www-authenticate") == "Bearer" and error_of(data)["code"] == "invalid_api_key"
        assert raw(s.port, "GET", "/health")[0] == 200 and raw(s.port, "GET", "/")[0] == 200
        r = s.client("sekret").chat.completions.create(model="x", messages=CHAT, max_tokens=8, extra_body={"max_denoising_steps": 2})
        assert r.choices[0].message.content is not None
    finally:
        s.stop()


# ===== concurrency, hang-ups, the queue =====

@test
def concurrent_clients():
    """20 clients at once (streaming or not, chat or completions); 6 hang up mid-stream. Every completed
    request equals its solo run, the server stays up and its log shows the cancellations."""
    s = Server("--queue", "32")
    try:
        def body(i, stream):
            b = {"max_tokens": 48, "seed": 100 + i, "max_denoising_steps": STEPS, "stream": stream}
            if i % 2:
                b["prompt"] = "Story %d:" % i
            else:
                b["messages"] = [{"role": "user", "content": "Question %d" % i}]
            return b

        def path(i):
            return "/v1/completions" if i % 2 else "/v1/chat/completions"

        def text_of(i, data):
            r = json.loads(data)
            ch = r["choices"][0]
            return ch["text"] if i % 2 else ch["message"]["content"]

        def stream_text(i, resp, hang_up):
            out, buf = [], b""
            while True:
                part = resp.read1(65536) if hasattr(resp, "read1") else resp.read(1024)
                if not part:
                    break
                buf += part
                while b"\n\n" in buf:
                    ev, buf = buf.split(b"\n\n", 1)
                    data = ev[6:]
                    if data == b"[DONE]":
                        return "".join(out)
                    ch = json.loads(data)["choices"]
                    if ch:
                        out.append((ch[0].get("text") if i % 2 else ch[0]["delta"].get("content")) or "")
                    if hang_up and len(out) >= 2:
                        return None
            raise AssertionError("stream %d ended without [DONE]" % i)

        solo = {}
        for i in range(20):   # the reference: each request alone
            st, _, data = raw(s.port, "POST", path(i), body(i, False))
            assert st == 200, data
            solo[i] = text_of(i, data)
        results, errors = {}, []

        def client(i):
            try:
                stream, hang_up = i % 3 != 0, i in (2, 5, 8, 11, 14, 17)
                c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=120)
                c.request("POST", path(i), body=json.dumps(body(i, stream)), headers={"Content-Type": "application/json"})
                r = c.getresponse()
                assert r.status == 200, r.read()
                if not stream:
                    results[i] = text_of(i, r.read())
                else:
                    t = stream_text(i, r, hang_up)
                    if t is not None:
                        results[i] = t
                c.close()   # a hang-up closes the socket with the stream still running
            except Exception as e:   # noqa: BLE001 (reported below)
                errors.append((i, repr(e)))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(20)]
        t0 = time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert not errors, errors
        assert len(results) == 14, sorted(results)
        for i, t in results.items():
            assert t == solo[i], (i, t, solo[i])
        assert s.alive()
        st, _, data = raw(s.port, "GET", "/health")
        assert st == 200 and json.loads(data)["queue"]["waiting"] == 0
        st, _, data = raw(s.port, "POST", "/v1/completions", body(1, False))
        assert st == 200 and text_of(1, data) == solo[1]
        print("    20 concurrent clients in %.2f s" % (time.time() - t0))
    finally:
        log = s.stop()
    lines = [l for l in log.splitlines() if " POST /v1/" in l]
    assert len(lines) == 41, len(lines)          # one access-log line per request
    assert sum("(client gone)" in l for l in lines) >= 1, log[-3000:]


@test
def queue_full_and_cancel():
    """--queue 1: a third concurrent request gets 503 with Retry-After; a client that hangs up while
    waiting or running has its generation cancelled (the server log says so)."""
    s = Server("--queue", "1")
    try:
        # ignore_eos: a random model may emit an EOS early and end the "slow" request before the third
        # one arrives
        slow = {"prompt": [2, 5], "max_tokens": 16 * 40, "max_denoising_steps": 40, "stability_threshold": 1000, "seed": 1,
                "stream": True, "ignore_eos": True}
        socks = []
        for _ in range(2):   # one running, one waiting
            k = socket.create_connection(("127.0.0.1", s.port))
            b = json.dumps(slow).encode()
            k.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(b) + b)
            socks.append(k)
            time.sleep(0.3)
        st, hd, data = raw(s.port, "POST", "/v1/completions", {"prompt": "x", "max_tokens": 4})
        assert st == 503 and int(hd["retry-after"]) >= 1 and error_of(data)["code"] == "server_busy", (st, hd, data)
        if openai is not None:
            try:
                s.client().completions.create(model="x", prompt="x", max_tokens=4)
                raise AssertionError("no error")
            except openai.InternalServerError as e:
                assert e.status_code == 503
        for k in socks:   # hang up: both generations end at their next step
            k.close()
        t0 = time.time()
        while time.time() - t0 < 30:
            st, _, data = raw(s.port, "GET", "/health")
            q = json.loads(data)["queue"]
            if q["waiting"] == 0 and q["running"] == 0:
                break
            time.sleep(0.1)
        assert q["waiting"] == 0 and q["running"] == 0, q
        st, _, data = raw(s.port, "POST", "/v1/completions", {"prompt": "x", "max_tokens": 4, "max_denoising_steps": 2})
        assert st == 200
    finally:
        log = s.stop()
    assert log.count("cancelled]") >= 2, log


@test
def long_waits_outlive_the_idle_timeout():
    """--timeout 1: a request generating for longer than that, and a stream queued behind it, both
    complete (the idle timeout is off while a request waits for the worker); an idle connection is
    closed."""
    s = Server("--timeout", "1")
    try:
        # steps for ~3 s of generation on this machine (3 canvases), timed on a warm server
        for _ in range(2):
            st, _, data = raw(s.port, "POST", "/v1/completions", {"prompt": [2, 5], "max_tokens": 16, "max_denoising_steps": 40,
                                                                   "stability_threshold": 1000, "ignore_eos": True})
        ms = json.loads(data)["usage"]["diffusion"]["ms_per_step"]
        steps = max(20, min(5000, int(3000 / 3 / max(ms, 0.05))))
        slow = {"prompt": [2, 5], "max_tokens": 48, "max_denoising_steps": steps, "stability_threshold": 100000, "seed": 1,
                "ignore_eos": True}
        out = {}

        def go(name, body):
            try:
                out[name] = raw(s.port, "POST", "/v1/completions", body)
            except Exception as e:   # noqa: BLE001 (reported below)
                out[name] = e

        a = threading.Thread(target=go, args=("a", slow))
        b = threading.Thread(target=go, args=("b", dict(slow, stream=True, max_tokens=16, max_denoising_steps=4)))
        t0 = time.time()
        a.start()
        time.sleep(0.2)
        b.start()
        a.join(300)
        b.join(300)
        took = time.time() - t0
        assert out["a"][0] == 200 and json.loads(out["a"][2])["usage"]["completion_tokens"] == 48, out["a"]
        assert out["b"][0] == 200 and out["b"][2].endswith(b"data: [DONE]\n\n"), out["b"]
        assert took > 1.5, "the generation was too fast (%.2f s) to test the timeout" % took
        k = socket.create_connection(("127.0.0.1", s.port))
        k.settimeout(10)
        t0 = time.time()
        assert k.recv(100) == b"" and time.time() - t0 < 5   # closed by the server after ~1 s
        k.close()
    finally:
        s.stop()


# ===== malformed requests on raw sockets =====

@test
def malformed_requests():
    s = server()
    p = s.port
    cases = [
        ("POST", "/v1/chat/completions", "{not json", 400, "invalid_json"),
        ("POST", "/v1/chat/completions", "", 400, "invalid_json"),
        ("POST", "/v1/chat/completions", "\xff\xfe", 400, "invalid_json"),
        ("POST", "/v1/chat/completions", "[" * 5000 + "]" * 5000, 400, "invalid_json"),
        ("POST", "/v1/chat/completions", json.dumps({"messages": "hi"}), 400, "invalid_type"),
        ("POST", "/v1/chat/completions", json.dumps({"messages": CHAT, "max_tokens": "ten"}), 400, "invalid_type"),
        ("POST", "/v1/chat/completions", json.dumps({"messages": CHAT, "stream": 1}), 400, "invalid_type"),
        ("POST", "/v1/chat/completions", json.dumps({"messages": CHAT, "entropy_bound": 0}), 422, "invalid_value"),
        ("POST", "/v1/completions", json.dumps({"prompt": [[1, 2], [99999]]}), 400, "invalid_value"),
        ("GET", "/v1/chat/completions", None, 405, "method_not_allowed"),
        ("PUT", "/v1/completions", "{}", 405, "method_not_allowed"),
        ("POST", "/v1/models", "{}", 405, "method_not_allowed"),
        ("DELETE", "/health", None, 405, "method_not_allowed"),
        ("GET", "/v2/nothing", None, 404, "not_found"),
        ("POST", "/v1/embeddings", "{}", 404, "not_found"),
        ("GET", "/v1/models/other", None, 404, "model_not_found"),
    ]
    for method, path, body, status, code in cases:
        st, hd, data = raw(p, method, path, body.encode("latin-1") if isinstance(body, str) else body)
        assert st == status, (method, path, st, data)
        e = error_of(data)
        assert e["code"] == code, (method, path, e)
        if st == 405:
            assert "allow" in hd, hd
    # a body over the limit (8 MiB): 413 after the upload, the connection still answered
    st, _, data = raw(p, "POST", "/v1/chat/completions", b"{" + b" " * (9 << 20) + b"}")
    assert st == 413 and error_of(data)["code"] == "request_too_large"
    # a chunked upload over the limit
    c = http.client.HTTPConnection("127.0.0.1", p, timeout=60)
    c.request("POST", "/v1/chat/completions", body=iter([b" " * (1 << 20)] * 9), headers={"Content-Type": "application/json"},
              encode_chunked=True)
    r = c.getresponse()
    assert r.status == 413, r.status
    c.close()
    # broken HTTP: garbage, a truncated body, a header that never ends; the server answers or drops them
    for junk in (b"HELLO\r\n\r\n", b"POST /v1/completions HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"pro",
                 b"GET / HTTP/1.1\r\nX: " + b"a" * 100000, b"\x00\x01\x02\x03" * 100):
        k = socket.create_connection(("127.0.0.1", p))
        k.sendall(junk)
        k.shutdown(socket.SHUT_WR)
        k.settimeout(10)
        try:
            while k.recv(65536):
                pass
        except OSError:
            pass
        k.close()
    # OPTIONS (CORS preflight), HEAD, the page, health
    assert raw(p, "OPTIONS", "/v1/chat/completions")[0] == 204
    st, hd, data = raw(p, "GET", "/")
    assert st == 200 and hd["content-type"].startswith("text/html") and b"dgemma" in data
    assert raw(p, "HEAD", "/health")[0] == 200
    # and a good request still works
    st, _, data = raw(p, "POST", "/v1/chat/completions", {"messages": CHAT, "max_tokens": 8, "max_denoising_steps": 2})
    assert st == 200 and json.loads(data)["choices"][0]["message"]["role"] == "assistant"
    assert s.alive()


# ===== the web page =====

@test
def webui():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By
    except ImportError:
        raise Skip("the selenium package is missing (pip install -r tests/requirements-server.txt)")
    chrome = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver_bin = shutil.which("chromedriver")
    if not chrome or not driver_bin:
        raise Skip("chromium / chromedriver not installed (apt-get install chromium chromium-driver)")
    s = server()
    o = Options()
    o.binary_location = chrome
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1100,900"):
        o.add_argument(a)
    d = webdriver.Chrome(options=o, service=Service(driver_bin))
    try:
        d.set_page_load_timeout(30)
        d.get(s.url + "/")
        assert d.title == "dgemma"
        t0 = time.time()
        while d.find_element(By.ID, "model").text != "tiny" and time.time() - t0 < 10:
            time.sleep(0.05)
        assert d.find_element(By.ID, "model").text == "tiny"
        # settings: 48 tokens (3 canvases), a fixed seed, the default step count
        d.find_element(By.CSS_SELECTOR, "#settings summary").click()
        for field, value in (("max_tokens", "48"), ("seed", "42"), ("steps", "24")):
            e = d.find_element(By.ID, field)
            e.clear()
            e.send_keys(value)
        d.find_element(By.CSS_SELECTOR, "#settings summary").click()
        d.find_element(By.ID, "input").send_keys("What does a diffusion language model do?")
        d.find_element(By.ID, "send").click()
        t0 = time.time()
        while d.execute_script("return window.dgStats.done") < 1 and time.time() - t0 < 60:
            time.sleep(0.05)
        st = d.execute_script("return window.dgStats")
        assert st["done"] == 1 and st["errors"] == 0, st
        assert st["drafts"] > 0 and st["maxStep"] >= 1 and st["acceptedShown"] >= 1 and st["commits"] >= 1, st
        answer = d.find_element(By.CSS_SELECTOR, ".msg.assistant.done .answer").text
        assert answer.strip(), "no answer shown"
        head = d.find_element(By.CSS_SELECTOR, ".msg.assistant .canvas-head").text
        assert "canvas" in head and "step" in head and "final canvas" in head, head
        assert d.find_elements(By.CSS_SELECTOR, ".msg.assistant .tok"), "no draft tokens"
        meta = d.find_element(By.CSS_SELECTOR, ".msg.assistant .meta").text
        assert "canvases" in meta and "seed 42" in meta, meta
        os.makedirs(ARTIFACTS, exist_ok=True)
        shot = os.path.join(ARTIFACTS, "webui.png")
        d.save_screenshot(shot)
        print("    %d draft events, answer of %d characters; screenshot %s" % (st["drafts"], len(answer), shot))
        # a second turn, slower (48 steps, 6 canvases), caught while it denoises
        n0 = st["drafts"]
        e = d.find_element(By.ID, "steps")
        d.find_element(By.CSS_SELECTOR, "#settings summary").click()
        e.clear()
        e.send_keys("48")
        e = d.find_element(By.ID, "max_tokens")
        e.clear()
        e.send_keys("96")
        d.find_element(By.CSS_SELECTOR, "#settings summary").click()
        d.find_element(By.ID, "input").send_keys("And how does it pick the tokens it keeps?")
        d.find_element(By.ID, "send").click()
        t0 = time.time()
        while d.execute_script("return window.dgStats.drafts") < n0 + 30 and time.time() - t0 < 60:
            time.sleep(0.01)
        live = os.path.join(ARTIFACTS, "webui-live.png")
        d.save_screenshot(live)
        caught = d.execute_script("return window.dgStats.done") < 2
        while d.execute_script("return window.dgStats.done") < 2 and time.time() - t0 < 60:
            time.sleep(0.05)
        st = d.execute_script("return window.dgStats")
        assert st["done"] == 2 and st["errors"] == 0, st
        assert len(d.find_elements(By.CSS_SELECTOR, ".msg.assistant.done")) == 2
        print("    second turn: %d draft events; %s %s" % (st["drafts"] - n0, live, "(mid-generation)" if caught else "(after the end)"))
    finally:
        d.quit()


def main():
    passed = failed = skipped = 0
    for fn in TESTS:
        name = fn.__name__
        if ONLY and not any(o in name for o in ONLY):
            continue
        t0 = time.time()
        try:
            fn()
            passed += 1
            print("[ OK   ] server-py/%s (%.1f s)" % (name, time.time() - t0), flush=True)
        except Skip as e:
            skipped += 1
            print("[ SKIP ] server-py/%s: skipped: %s" % (name, e), flush=True)
        except Exception:   # noqa: BLE001 (every failure is reported)
            failed += 1
            print("[ FAIL ] server-py/%s\n%s" % (name, traceback.format_exc()), flush=True)
    if SERVER is not None:
        try:
            SERVER.stop()
        except Exception:   # noqa: BLE001
            failed += 1
            print("[ FAIL ] server-py/shared-server-exit\n%s" % traceback.format_exc(), flush=True)
    shutil.rmtree(TMP, ignore_errors=True)
    print("server-py: %d passed, %d failed, %d skipped" % (passed, failed, skipped))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
