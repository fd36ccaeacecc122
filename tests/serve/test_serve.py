"""`w2s serve` of a guide recipe (CBS) against the official `openai` client on loopback: every route, streaming,
64 concurrent requests each answered once and as `w2s generate` writes it, and every bad request answered with
its status and an error naming the problem, the server serving on."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from tests.serve.conftest import generated, health, w2s_serve
from w2s.data.world import world_prompts

KEY_ENV, KEY = "W2S_TEST_SERVE_KEY", "test-key-0123"
# CBS(4, 4, 5) steering the strong base, as recipes/tiny/guide.yaml, with shorter answers
RECIPE = {"strong_model": "tiny:strong", "tuned": "tiny:guide", "untuned": "tiny:weak", "decoder": "cbs", "width": 4,
          "successors": 4, "chunk_len": 5, "max_new_tokens": 32, "temperature": 1.0, "top_k": 0, "seed": 0,
          "batch_size": 8}  # fmt: skip
MAX_QUEUE, MAX_BODY = 64, 65536


@pytest.fixture(scope="module")
def url(tmp_path_factory, world_paths, tiny_guide):
    folder = tmp_path_factory.mktemp("serve")
    (folder / "guide.yaml").write_text(json.dumps(RECIPE))  # JSON is YAML
    args = ["--config", str(folder / "guide.yaml"), "--api_key_env", KEY_ENV, "--max_queue", str(MAX_QUEUE),
            "--max_body", str(MAX_BODY)]  # fmt: skip
    with w2s_serve(args, folder / "server.log", env={KEY_ENV: KEY}) as base_url:
        yield base_url


@pytest.fixture
def client(url):
    return openai.OpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def prompts():
    return list(dict.fromkeys(world_prompts("test", 100)))[:64]  # distinct review openings


def chat(client, prompt: str, **kw) -> str:
    reply = client.chat.completions.create(model="cbs", messages=[{"role": "user", "content": prompt}], **kw)
    assert len(reply.choices) == 1
    return reply.choices[0].message.content


def test_models_lists_the_recipe(client):
    (model,) = client.models.list().data
    assert model.id == "cbs" and model.owned_by == "w2s"
    assert model.model_extra["w2s"]["decoder"] == "cbs" and model.model_extra["max_model_len"] > 0


@pytest.mark.slow
def test_chat_completions_and_streams_answer_as_w2s_generate(client, prompts, tmp_path):
    few = prompts[:3]
    expected = generated(RECIPE, few, tmp_path / "seed5", "--seed", "5")
    reply = client.chat.completions.create(
        model="cbs", messages=[{"role": "user", "content": few[0]}], seed=5, max_tokens=500, presence_penalty=0
    )  # a field at its default is accepted; max_tokens past the recipe's is capped by it
    assert reply.choices[0].message.content == expected[0]
    assert reply.choices[0].finish_reason in ("stop", "length")
    usage = reply.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    costs = usage.model_extra["w2s"]
    assert set(costs["tokens"]) == {"strong", "tuned", "untuned"} and costs["seconds"] > 0

    completion = client.completions.create(model="cbs", prompt=few[1], seed=5)
    assert completion.choices[0].text == expected[1]

    stream = client.chat.completions.create(
        model="cbs", messages=[{"role": "user", "content": few[2]}], seed=5, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected[2]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].usage.completion_tokens > 0  # include_usage: the last chunk
    text = "".join(
        c.choices[0].text for c in client.completions.create(model="cbs", prompt=few[1], seed=5, stream=True)
    )
    assert text == expected[1]

    # n choices of one prompt are the prompt's first n occurrences among w2s generate's prompts
    many = client.chat.completions.create(model="cbs", messages=[{"role": "user", "content": few[0]}], seed=5, n=3)
    assert [c.message.content for c in many.choices] == generated(RECIPE, [few[0]] * 3, tmp_path / "n3", "--seed", "5")


@pytest.mark.slow
def test_64_concurrent_requests_are_answered_once_each_as_w2s_generate_writes(client, url, prompts, tmp_path):
    """Two seeds in flight together: batches hold what the queue held, and every answer is still the offline one."""
    seeds = [0 if i % 4 else 11 for i in range(len(prompts))]
    with ThreadPoolExecutor(max_workers=len(prompts)) as pool:
        answers = list(pool.map(lambda ps: chat(client, ps[0], seed=ps[1]), zip(prompts, seeds, strict=True)))
    for seed in (0, 11):
        mine = [i for i, s in enumerate(seeds) if s == seed]
        expected = generated(RECIPE, [prompts[i] for i in mine], tmp_path / str(seed), "--seed", str(seed))
        assert [answers[i] for i in mine] == expected
    assert health(url)["queued"] == 0


def error(response: httpx.Response, status: int, *named: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert set(body) == {"message", "type", "param", "code"}
    assert all(name in body["message"] for name in named), body
    assert "Traceback" not in response.text
    return body


def test_bad_requests_are_answered_with_their_status_and_the_server_serves_on(client, url):
    auth = {"Authorization": f"Bearer {KEY}"}
    post = lambda body, **kw: httpx.post(f"{url}/chat/completions", json=body, headers=auth, timeout=60, **kw)  # noqa: E731
    good = {"model": "cbs", "messages": [{"role": "user", "content": "the plot was slow ."}], "max_tokens": 4}

    error(post({**good, "model": "gpt-9"}), 404, "gpt-9", "cbs")
    assert error(post({**good, "temperature": "hot"}), 400, "temperature")["param"] == "temperature"
    assert error(post({**good, "best_of_luck": 1}), 400, "best_of_luck")["code"] == "unknown_field"
    assert error(post({**good, "logprobs": True}), 400, "logprobs")["code"] == "unsupported_value"
    error(post({**good, "temperature": 0}), 400, "temperature 0")  # CBS's 16 samples would all be the greedy one
    error(post({**good, "messages": []}), 400, "messages")
    long = " ".join(["the plot was slow ."] * 60)
    body = error(post({**good, "messages": [{"role": "user", "content": long}]}), 400, "context of 128")
    assert body["code"] == "context_length_exceeded"
    error(httpx.post(f"{url}/chat/completions", json=good, timeout=60), 401, "API key")
    error(httpx.post(f"{url}/chat/completions", json=good, headers={"Authorization": "Bearer nope"}, timeout=60), 401)
    error(httpx.get(f"{url}/models", timeout=60), 401)
    error(post({**good, "messages": [{"role": "user", "content": "x" * (2 * MAX_BODY)}]}), 413, str(MAX_BODY))
    error(httpx.post(f"{url}/chat/completions", content=b"{not json", headers=auth, timeout=60), 400, "JSON")
    error(httpx.get(f"{url}/nowhere", headers=auth, timeout=60), 404, "/v1/nowhere")
    assert chat(client, "the plot was slow .", max_tokens=4)  # still serving


def test_a_full_queue_is_a_503_and_the_server_serves_on(client, url):
    """Three requests of 60 choices at once: the queue holds 64, so one is queued and at least one is refused whole
    (the decoding thread would have to take 56 choices between two arrivals); the others are answered in full."""
    auth = {"Authorization": f"Bearer {KEY}"}
    body = {"model": "cbs", "messages": [{"role": "user", "content": "the plot was slow ."}], "max_tokens": 2, "n": 60}
    with ThreadPoolExecutor(max_workers=3) as pool:
        replies = list(pool.map(lambda _: httpx.post(f"{url}/chat/completions", json=body, headers=auth, timeout=120),
                                range(3)))  # fmt: skip
    codes = sorted(r.status_code for r in replies)
    assert 503 in codes and 200 in codes and set(codes) == {200, 503}, codes
    for r in replies:
        if r.status_code == 503:
            error(r, 503, "overloaded")
            assert r.headers["retry-after"] == "1"
        else:
            assert len(r.json()["choices"]) == 60
    assert chat(client, "the plot was slow .", max_tokens=4)


@pytest.mark.slow
def test_a_client_gone_mid_stream_leaves_the_queue_and_the_others_alone(client, url, tmp_path):
    """A stream queued behind another request's batches, closed after its first chunk: its 16 choices leave the
    queue undecoded, and the request it queued behind is answered as w2s generate writes it."""
    auth = {"Authorization": f"Bearer {KEY}"}
    prompt = "the costumes were old ."
    body = {"model": "cbs", "messages": [{"role": "user", "content": "the plot was slow ."}], "n": 16, "stream": True}
    dropped = health(url)["dropped"]
    answers: list = []

    def ahead():
        reply = client.chat.completions.create(
            model="cbs", messages=[{"role": "user", "content": prompt}], seed=3, n=16
        )
        answers.extend(c.message.content for c in reply.choices)

    neighbour = threading.Thread(target=ahead)
    neighbour.start()
    while health(url)["decoding"] == 0:  # its first batch of 8 is decoding, its second is queued
        time.sleep(0.005)
    with httpx.stream("POST", f"{url}/chat/completions", json=body, headers=auth, timeout=60) as response:
        assert response.status_code == 200
        first = next(response.iter_lines())
        assert json.loads(first.removeprefix("data: "))["choices"][0]["delta"]["role"] == "assistant"
    neighbour.join(120)
    assert answers == generated(RECIPE, [prompt] * 16, tmp_path, "--seed", "3")
    state = health(url)
    assert state["dropped"] - dropped == 16 and state["queued"] == 0
    assert chat(client, "the plot was slow .", max_tokens=4)  # still serving
