"""The suite's test server behaves like a real OpenAI-compatible server where dd_assets depends on it."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from dd_assets import Stage, Workflow
from dd_assets_tests.helpers import failure_message, llm_builder, materialize, metadata_of, sampler_builder
from dd_assets_tests.llm_server import HEALTH_CHECK_PROMPT, count_tokens


def _post(llm, messages: list[dict], timeout: float = 5, **params) -> tuple[int, dict]:
    body = json.dumps({"model": "test-model", "messages": messages, **params}).encode()
    request = urllib.request.Request(
        f"{llm.endpoint}/chat/completions", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_an_answer_longer_than_max_tokens_is_cut_there_with_finish_reason_length(llm):
    llm.usage, llm.answer_tokens = "text", 50
    status, cut = _post(llm, _user("Tell a long story"), max_tokens=8)
    assert status == 200
    choice = cut["choices"][0]
    assert choice["finish_reason"] == "length"
    assert count_tokens(choice["message"]["content"]) == cut["usage"]["completion_tokens"] == 8
    _, whole = _post(llm, _user("Tell a long story"), max_tokens=100)
    assert whole["choices"][0]["finish_reason"] == "stop" and whole["usage"]["completion_tokens"] == 50
    assert whole["choices"][0]["message"]["content"].startswith(choice["message"]["content"])
    _, newer = _post(llm, _user("Tell a long story"), max_completion_tokens=3)  # the newer parameter name
    assert newer["choices"][0]["finish_reason"] == "length" and newer["usage"]["completion_tokens"] == 3


def test_usage_counts_every_message_the_chat_template_and_the_answer(llm):
    llm.usage = "text"
    system, user = "You are terse.", 'Name three colors, as JSON: {"colors": []}'
    _, answer = _post(llm, [{"role": "system", "content": system}, {"role": "user", "content": user}])
    content = answer["choices"][0]["message"]["content"]
    expected_prompt = count_tokens(system) + count_tokens(user) + 2 * 4 + 3  # 4 per message, 3 per request
    assert answer["usage"] == {
        "prompt_tokens": expected_prompt,
        "completion_tokens": count_tokens(content),
        "total_tokens": expected_prompt + count_tokens(content),
    }
    assert llm.request_log[-1]["prompt_tokens"] == expected_prompt
    assert llm.tokens_used() == answer["usage"]["total_tokens"]


def test_the_default_usage_keeps_the_fixed_counts_older_tests_pin(llm):
    _, answer = _post(llm, [{"role": "system", "content": "ignored here"}, *_user("three words here")])
    assert answer["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert answer["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("style", "expected_error"),
    [
        ("vllm", {"type": "BadRequestError", "param": None, "code": 400}),
        ("openai", {"type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}),
    ],
)
def test_a_request_past_the_context_window_gets_the_400_a_real_server_sends(llm, style, expected_error):
    llm.usage, llm.context_window, llm.context_error = "text", 40, style
    status, small = _post(llm, _user("short"), max_tokens=16)
    assert status == 200, small
    status, body = _post(llm, _user("word " * 30), max_tokens=16)  # 30 + 4 + 3 in the messages, 16 to answer
    assert status == 400
    error = body["error"]
    assert {k: error[k] for k in expected_error} == expected_error
    assert error["message"].startswith("This model's maximum context length is 40 tokens. However, ")
    if style == "vllm":
        assert "you requested 53 tokens (37 in the messages, 16 in the completion)" in error["message"]
    assert [e["status"] for e in llm.request_log] == [200, 400]


def test_a_context_overflow_reaches_data_designer_as_a_context_window_error(io_manager, instance, llm, llm_resource):
    # the health check (23 tokens + max_tokens=32) fits, the prompt (55 tokens + 32) does not
    llm.usage, llm.context_window = "text", 60
    prompt = "Write two lines about {{ n }}" + " and more" * 20
    workflow = Workflow(
        name="ctx",
        stages=[
            Stage(name="seed", config=sampler_builder(), num_records=2),
            Stage(name="write", config=llm_builder("text", prompt), depends_on=["seed"]),
        ],
    )
    result = materialize(workflow, io_manager, instance, resource=llm_resource, raise_on_error=False)
    message = failure_message(result, "ctx", "write")
    assert "exceed its supported context width" in message
    assert "maximum context length is 60 tokens. However, you requested 87 tokens" in message


def test_a_server_that_goes_away_refuses_connections_and_can_come_back(llm):
    llm.go_away(after=2)
    assert _post(llm, _user("one"))[0] == 200
    assert _post(llm, _user(HEALTH_CHECK_PROMPT))[0] == 200  # health checks do not count
    assert _post(llm, _user("two"))[0] == 200  # the last one it answers
    deadline = time.monotonic() + 5
    while llm.listening and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(urllib.error.URLError) as refused:
        _post(llm, _user("three"), timeout=2)
    assert isinstance(refused.value.reason, ConnectionRefusedError)
    llm.come_back()
    assert _post(llm, _user("four"))[0] == 200
    assert [e["kind"] for e in llm.request_log] == ["generation", "health_check", "generation", "generation"]


def test_a_server_can_come_back_by_itself_after_a_while(llm):
    llm.go_away(after=0, back_after_s=0.5)
    with pytest.raises(urllib.error.URLError):
        _post(llm, _user("while away"), timeout=2)
    time.sleep(0.8)
    assert _post(llm, _user("back"))[0] == 200


def test_a_server_that_goes_away_mid_stage_and_comes_back_lets_the_stage_finish(
    io_manager, instance, llm, llm_resource
):
    llm.go_away(after=3, back_after_s=1.0)
    workflow = Workflow(
        name="away",
        stages=[
            Stage(name="seed", config=sampler_builder(), num_records=6),
            Stage(name="write", config=llm_builder("text", "Write two lines about {{ n }}"), depends_on=["seed"]),
        ],
    )
    result = materialize(workflow, io_manager, instance, resource=llm_resource, raise_on_error=False)
    assert llm.dropped > 0 or llm.count("generation") > 3  # requests hit the server while it was away
    assert result.success, failure_message(result, "away", "write")
    assert metadata_of(result, ["away", "write"])["dagster/row_count"] == 6


def test_data_designer_records_the_usage_the_server_reported(io_manager, instance, llm, llm_resource):
    llm.usage = "text"
    workflow = Workflow(
        name="usage",
        stages=[
            Stage(name="seed", config=sampler_builder(), num_records=4),
            Stage(name="write", config=llm_builder("text", "Write two lines about {{ n }}"), depends_on=["seed"]),
        ],
    )
    result = materialize(workflow, io_manager, instance, resource=llm_resource)
    write = metadata_of(result, ["usage", "write"])
    generated = [e for e in llm.request_log if e["kind"] == "generation"]
    assert len(generated) == 4
    assert write["dd_assets/input_tokens"] == sum(e["prompt_tokens"] for e in generated)
    assert write["dd_assets/output_tokens"] == sum(e["completion_tokens"] for e in generated)


JUDGE_LIKE = {
    "$defs": {
        "Level": {"enum": [4, 3, 2, 1, 0], "type": "integer"},
        "Grade": {
            "properties": {"reasoning": {"type": "string"}, "score": {"$ref": "#/$defs/Level"}},
            "required": ["reasoning", "score"],
            "type": "object",
        },
    },
    "properties": {
        "quality": {"$ref": "#/$defs/Grade"},
        "tags": {"items": {"type": "string", "minLength": 3}, "minItems": 1, "maxItems": 3, "type": "array"},
        "price": {"minimum": 10, "maximum": 20, "type": "number"},
        "count": {"exclusiveMinimum": 0, "maximum": 3, "type": "integer"},
        "label": {"anyOf": [{"type": "null"}, {"enum": ["Complete", "Incomplete"], "type": "string"}]},
        "flag": {"type": "boolean"},
        "when": {"format": "date", "type": "string"},
    },
    "required": ["quality", "tags", "price", "count", "label", "flag", "when"],
    "type": "object",
}


def _content(answer: dict) -> str:
    return answer["choices"][0]["message"]["content"]


def test_a_structured_request_is_answered_with_an_object_matching_its_response_format(llm):
    import jsonschema

    response_format = {"type": "json_schema", "json_schema": {"name": "judge", "schema": JUDGE_LIKE}}
    answers = set()
    for prompt in ("Grade the first text", "Grade the first text", "Grade the second text"):
        status, answer = _post(llm, _user(prompt), response_format=response_format)
        assert status == 200
        value = json.loads(_content(answer))
        jsonschema.validate(value, JUDGE_LIKE)
        answers.add(_content(answer))
    assert len(answers) == 2  # the same prompt, the same answer; another prompt, another answer
    _, any_object = _post(llm, _user("Anything as JSON"), response_format={"type": "json_object"})
    assert json.loads(_content(any_object)) == {}


def test_a_schema_in_the_prompt_sent_as_content_parts_is_answered_by_that_schema(llm):
    import jsonschema

    # Data Designer's structured and judge columns: the schema inside <response_schema> tags in the user prompt,
    # every message's content a list of parts
    prompt = (
        "Grade this.\n\n* Your response must be in JSON format.\n* The JSON format is given within <response_schema> "
        f"markup tags.\n\n<response_schema>\n{json.dumps(JUDGE_LIKE)}\n"
    )
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "You are a judge."}]},
        {"role": "user", "content": [{"type": "text", "text": prompt + "</response_schema>"}]},
    ]
    status, answer = _post(llm, messages)
    assert status == 200
    jsonschema.validate(json.loads(_content(answer)), JUDGE_LIKE)
    assert llm.prompts[-1] == prompt + "</response_schema>"
    llm.structured_answer = {"fixed": True}  # the fixed answer older tests set still wins
    assert json.loads(_content(_post(llm, messages)[1])) == {"fixed": True}


def test_a_code_request_is_answered_with_one_fenced_block_of_code_in_that_language(llm):
    import ast

    prompt = (
        "Write a function.\n\n* Your response must be code written in python.\n* Only respond with a SINGLE code block."
    )
    _, answer = _post(llm, [{"role": "user", "content": [{"type": "text", "text": prompt}]}])
    content = _content(answer)
    assert content.startswith("```python\n") and content.endswith("```") and content.count("```") == 2
    ast.parse(content.removeprefix("```python\n").removesuffix("```"))
    assert _content(_post(llm, _user(prompt))[1]) == content  # deterministic per prompt
    _, plain = _post(llm, _user("Write two lines about 5"))
    assert _content(plain).startswith("answer-")  # a text request keeps the plain answer
