"""Drives `starling serve` with the official `openai` Python package.

usage: openai_client.py BASE_URL MODEL   (exit 77 when the package is missing)
"""
import sys

try:
    import openai
except ImportError as e:  # the test skips (or fails in CI) on 77
    print(f"the openai package is not installed: {e}")
    sys.exit(77)

base, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base, api_key="unused", max_retries=0, timeout=60)

models = [m.id for m in client.models.list()]
assert models == [model], models

chat = client.chat.completions.create(
    model=model,
    messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "what about the #nba finals?"}],
    max_tokens=10,
    temperature=0.7,
    seed=3,
    logprobs=True,
    top_logprobs=2,
    user="tester",
)
choice = chat.choices[0]
assert choice.message.role == "assistant"
assert isinstance(choice.message.content, str)
assert choice.finish_reason in ("stop", "length"), choice.finish_reason
assert chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens
assert len(choice.logprobs.content) == chat.usage.completion_tokens
grounding = (chat.model_extra or {}).get("grounding")
assert grounding and all("#nba" in p["text"] for p in grounding), grounding

pieces, finish, usage = [], None, None
stream = client.chat.completions.create(
    model=model,
    messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "what about the #nba finals?"}],
    max_tokens=10,
    temperature=0.7,
    seed=3,
    stream=True,
    stream_options={"include_usage": True},
)
for chunk in stream:
    if chunk.usage:
        usage = chunk.usage
    for c in chunk.choices:
        if c.delta.content:
            pieces.append(c.delta.content)
        if c.finish_reason:
            finish = c.finish_reason
assert "".join(pieces) == choice.message.content, (pieces, choice.message.content)
assert finish == choice.finish_reason
assert usage.completion_tokens == chat.usage.completion_tokens

comp = client.completions.create(model=model, prompt="<|user|>: rain", max_tokens=6, n=2, seed=1, extra_body={"ignore_eos": True})
assert len(comp.choices) == 2 and all(c.finish_reason == "length" for c in comp.choices)
assert comp.usage.completion_tokens == 12

emb = client.embeddings.create(model=model, input=["nba finals", "rainy weather"])
assert len(emb.data) == 2
norm = sum(x * x for x in emb.data[0].embedding)
assert abs(norm - 1.0) < 1e-3, norm

try:
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], temperature=-1)
    raise AssertionError("temperature -1 was accepted")
except openai.BadRequestError as e:
    assert "temperature" in str(e), e

print(f"openai client: all checks passed (openai {openai.__version__})")
