//! The tokens stage end to end: corpus → tokenizer → shards, and parity with HF transformers.

use starling_corpus::synth::SynthConfig;
use starling_corpus::{CorpusBuilder, CorpusConfig};
use starling_tokens::template::{END_OF_POST, END_OF_TEXT};
use starling_tokens::{encode_corpus, tokenizer, train_tokenizer, EncodeConfig, TokenShard};
use std::path::{Path, PathBuf};
use std::process::Command;

fn corpus(dir: &Path, posts: u64) -> PathBuf {
    let input = dir.join("synth.jsonl");
    starling_corpus::synth::write_file(
        &SynthConfig {
            posts,
            ..SynthConfig::default()
        },
        &input,
    )
    .expect("synth");
    let out = dir.join("corpus");
    CorpusBuilder::new(CorpusConfig::default(), vec![input])
        .build(&out, &mut |_| {})
        .expect("corpus");
    out
}

#[test]
fn corpus_to_shards() {
    let tmp = tempfile::tempdir().expect("tmp");
    let c = corpus(tmp.path(), 3000);
    let tok_path = tmp.path().join("tokenizer.json");
    let t = train_tokenizer(&c, 2000, &tok_path).expect("train");
    assert!(t.get_vocab_size(true) <= 2000);
    let out = tmp.path().join("tokens");
    let m = encode_corpus(&c, &tok_path, &out, &EncodeConfig::default()).expect("encode");
    assert!(m.synthetic);
    assert!(m.tokens["train"] > 10_000 && m.tokens["val"] > 0);
    let mut sum = 0;
    for s in &m.shards {
        let shard = TokenShard::open(&out.join(&s.file)).expect("open");
        assert_eq!(shard.len() as u64, s.tokens);
        sum += s.tokens;
    }
    assert_eq!(sum, m.tokens["train"] + m.tokens["val"]);
    // The stream is documents: it starts with a post and documents end with <|endoftext|>.
    let shard = TokenShard::open(&out.join("train-00000.bin")).expect("open");
    let ids: Vec<u32> = (0..shard.len().min(4000))
        .filter_map(|i| shard.get(i))
        .collect();
    let text = t.decode(&ids, false).expect("decode");
    assert!(
        text.starts_with("<|user|>: "),
        "{}",
        &text[..80.min(text.len())]
    );
    let eot = t.token_to_id(END_OF_TEXT).expect("eot");
    let eop = t.token_to_id(END_OF_POST).expect("eop");
    // Reply threads: some documents hold more than one post.
    let mut posts_in_doc = 0;
    let mut threads = 0;
    for id in &ids {
        if *id == eop {
            posts_in_doc += 1;
        } else if *id == eot {
            threads += usize::from(posts_in_doc > 1);
            posts_in_doc = 0;
        }
    }
    assert!(threads > 0, "replies are laid out after their parents");
    assert!(tokenizer::load(&out.join("tokenizer.json")).is_ok());
    // A torn shard is refused.
    let bad = out.join("train-00000.bin");
    let bytes = std::fs::read(&bad).expect("read");
    std::fs::write(&bad, &bytes[..bytes.len() - 3]).expect("write");
    assert!(TokenShard::open(&bad).is_err());
}

fn python() -> Option<PathBuf> {
    starling_testkit::python_with(&["transformers"])
}

#[test]
fn tokenizer_json_encodes_identically_in_transformers() {
    let Some(py) = python() else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    let c = corpus(tmp.path(), 1500);
    let tok_path = tmp.path().join("tokenizer.json");
    let t = train_tokenizer(&c, 1200, &tok_path).expect("train");
    let samples = [
        "<|user|>: hello world, the weather is lovely today<|endofpost|><|endoftext|>",
        "<|user|>: RT <|user|>: check this <|url|> #rust $TSLA 😂🔥<|endofpost|>",
        "Café déjà vu — 日本語のテキスト and numbers 12345 <|email|> <|phone|>",
        "  leading spaces, trailing spaces   \n\nnew lines\tand tabs",
    ];
    let ours: Vec<Vec<u32>> = samples
        .iter()
        .map(|s| tokenizer::encode(&t, s).expect("encode"))
        .collect();
    let script = r#"
import json, sys
from transformers import PreTrainedTokenizerFast
tok = PreTrainedTokenizerFast(tokenizer_file=sys.argv[1])
samples = json.loads(sys.stdin.read())
print(json.dumps([tok.encode(s, add_special_tokens=False) for s in samples]))
"#;
    let mut child = Command::new(&py)
        .args(["-c", script])
        .arg(&tok_path)
        .env("TRANSFORMERS_VERBOSITY", "error")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn python");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(serde_json::to_string(&samples).expect("json").as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Vec<Vec<u32>> = serde_json::from_slice(&out.stdout).expect("ids");
    assert_eq!(
        ours, theirs,
        "transformers' fast tokenizer encodes our tokenizer.json identically"
    );
}

/// Token shards written by this format version (committed) still read; a shard from another
/// version is refused with the file named and how to rebuild it.
#[test]
fn committed_v1_shards_read_and_other_versions_are_refused_by_name() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokens-v1");
    let shard = TokenShard::open(&fixture.join("train-00000.bin")).expect("v1 shard opens");
    assert!(shard.len() > 100, "{} tokens", shard.len());
    let tok = tokenizer::load(&fixture.join("tokenizer.json")).expect("tokenizer");
    assert_eq!(tok.get_vocab_size(true), 300);
    let dir = tempfile::tempdir().expect("tmp");
    starling_artifacts::copy_dir(&fixture, dir.path()).expect("copy");
    let path = dir.path().join("train-00000.bin");
    let mut bytes = std::fs::read(&path).expect("shard");
    bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
    std::fs::write(&path, bytes).expect("patch");
    let e = TokenShard::open(&path).expect_err("v2 refused").to_string();
    assert!(
        e.contains("train-00000.bin") && e.contains("a newer starling"),
        "{e}"
    );
    assert!(e.contains("starling tokens"), "{e}");
}
