#!/usr/bin/env python3
"""Runs a GGUF file in llama.cpp (through llama-cpp-python) for starling's interop test.

Reads a JSON request on stdin:
  {"model": "m.gguf", "tokenize": ["text", ...], "generate": ["prompt text", ...], "max_tokens": 32,
   "chat": [{"role": "user", "content": "..."}, ...]}
and prints one JSON object: llama.cpp's tokenization of each text (special tokens parsed, no BOS
added), greedy continuations of each prompt (argmax of llama.cpp's own logits: temperature 0, no
repetition penalty, no top-k; stops before EOS and after any other end-of-generation token, as
`starling generate` does), the top-2 logit margin at each step, what llama.cpp read from the file,
the tensors and keys PyPI's gguf reader finds, and the chat rendered by the file's template.
"""
import json
import sys

import gguf
import llama_cpp
import numpy as np
from llama_cpp.llama_chat_format import Jinja2ChatFormatter


def main() -> None:
    req = json.load(sys.stdin)
    # PyPI's gguf reader (llama.cpp's own gguf-py) reads what starling's writer wrote.
    reader = gguf.GGUFReader(req["model"])
    gguf_py = {
        "tensors": [[t.name, t.tensor_type.name, [int(d) for d in t.shape]] for t in reader.tensors],
        "keys": [k for k in reader.fields if not k.startswith("GGUF.")],
    }
    llm = llama_cpp.Llama(
        model_path=req["model"],
        n_ctx=req.get("n_ctx", 512),
        n_threads=req.get("threads", 2),
        logits_all=True,
        verbose=False,
    )
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    eos = llm.token_eos()

    def tokenize(text: str) -> list:
        return llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    out = {
        "n_vocab": llm.n_vocab(),
        "eos": eos,
        "eog": [t for t in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)],
        "chat_template": llm.metadata.get("tokenizer.chat_template"),
        "tokenize": [tokenize(t) for t in req.get("tokenize", [])],
        "detokenize": [
            llm.detokenize(tokenize(t), special=True).decode("utf-8", "replace")
            for t in req.get("tokenize", [])
        ],
        "generate": [],
        "gguf_py": gguf_py,
        "chat": None,
    }
    if req.get("chat"):
        # The file's chat template as llama-cpp-python renders it (Jinja2), with a generation prompt.
        fmt = Jinja2ChatFormatter(out["chat_template"], eos_token="<|endoftext|>", bos_token="<|endoftext|>")
        out["chat"] = fmt(messages=req["chat"]).prompt
    for prompt in req.get("generate", []):
        ids = tokenize(prompt)
        llm.reset()
        llm.eval(ids)
        new, margins = [], []
        while len(new) < req.get("max_tokens", 32):
            row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
            top2 = np.partition(row, -2)[-2:]
            margins.append(float(top2[1] - top2[0]))
            t = int(row.argmax())
            if t == eos:
                break
            new.append(t)
            if llama_cpp.llama_vocab_is_eog(vocab, t):
                break
            llm.eval([t])
        out["generate"].append({"prompt_ids": ids, "ids": new, "margins": margins})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
