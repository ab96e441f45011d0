//! The model on libtorch: shapes, KV-cache equivalence, learning, and logits parity with HF transformers.

use starling_model::{generate, FinishReason, KvCache, Llama, LlamaConfig, SamplingConfig};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};

/// Runs `draw` right after seeding libtorch's global generator, one test at a time: tests run in
/// parallel and share that generator, so an unguarded seed does not make a test's draws its own.
fn seeded<T>(seed: i64, draw: impl FnOnce() -> T) -> T {
    static GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(seed);
    draw()
}

fn tiny() -> (nn::VarStore, Llama) {
    let mut c = LlamaConfig::preset("tiny", 300).expect("preset");
    c.tie_word_embeddings = false;
    let vs = nn::VarStore::new(Device::Cpu);
    let m = seeded(0, || Llama::new(&vs.root(), &c));
    (vs, m)
}

fn batch() -> Tensor {
    Tensor::from_slice(&[
        1i64, 5, 9, 200, 17, 3, 3, 250, 42, 7, 0, 299, 11, 12, 13, 14,
    ])
    .view([2, 8])
}

#[test]
fn kv_cache_gives_the_same_logits_as_a_full_pass() {
    let (_vs, m) = tiny();
    let ids = batch();
    let full = m.forward(&ids);
    assert_eq!(full.size(), vec![2, 8, 300]);
    let mut cache = KvCache::default();
    let prefix = m.forward_cached(&ids.narrow(1, 0, 5), &mut cache);
    let mut steps = vec![prefix];
    for t in 5..8 {
        steps.push(m.forward_cached(&ids.narrow(1, t, 1), &mut cache));
    }
    assert_eq!(cache.len(), 8);
    let cached = Tensor::cat(&steps, 1);
    let diff = (full - cached).abs().max().double_value(&[]);
    assert!(diff < 1e-5, "max |full - cached| = {diff}");
}

#[test]
fn learns_a_repeating_sequence() {
    let (vs, m) = tiny();
    let mut opt = nn::AdamW::default().build(&vs, 3e-3).expect("adamw");
    let seq: Vec<i64> = (0..33).map(|i| (i % 7) as i64 + 10).collect();
    let data = Tensor::from_slice(&seq).view([1, 33]);
    let (x, y) = (data.narrow(1, 0, 32), data.narrow(1, 1, 32));
    let first = m.loss(&x, &y).double_value(&[]);
    for _ in 0..60 {
        let loss = m.loss(&x, &y);
        opt.backward_step(&loss);
    }
    let last = m.loss(&x, &y).double_value(&[]);
    assert!(first > 5.0 && last < 0.5, "loss {first} -> {last}");
    // Greedy generation continues the pattern; stop strings and limits end it.
    let decode = |ids: &[i64]| {
        ids.iter()
            .map(|&i| char::from(b'a' + (i - 10) as u8))
            .collect::<String>()
    };
    let greedy = SamplingConfig {
        temperature: 0.0,
        repetition_penalty: 1.0,
        max_tokens: 10,
        ..Default::default()
    };
    let mut streamed = String::new();
    let g = generate(&m, &seq[..12], &greedy, &decode, &mut |t| {
        streamed.push_str(t)
    });
    assert_eq!(g.text, "fgabcdefga");
    assert_eq!(
        (g.finish, streamed.as_str()),
        (FinishReason::Length, "fgabcdefga")
    );
    let stop = SamplingConfig {
        stop: vec!["cd".into()],
        ..greedy
    };
    let g = generate(&m, &seq[..12], &stop, &decode, &mut |_| {});
    assert_eq!((g.text.as_str(), g.finish), ("fgab", FinishReason::Stop));
    // Save and load an HF directory: the same logits.
    let dir = tempfile::tempdir().expect("tmp");
    starling_model::save_dir(&vs, &m.config, dir.path()).expect("save");
    let (_vs2, m2) = starling_model::load_dir(dir.path(), Device::Cpu).expect("load");
    let diff = (m.forward(&x) - m2.forward(&x))
        .abs()
        .max()
        .double_value(&[]);
    assert!(diff == 0.0, "{diff}");
}

fn python() -> Option<PathBuf> {
    starling_testkit::python_with(&["torch", "transformers"])
}

/// Runs `script` (argv: model dir, the JSON of `batch()`) and reads its flat logits as [2, 8, 300].
fn transformers_logits(py: &Path, script: &str, dir: &Path) -> Tensor {
    let out = std::process::Command::new(py)
        .args(["-c", script])
        .arg(dir)
        .arg("[[1,5,9,200,17,3,3,250],[42,7,0,299,11,12,13,14]]")
        .env("TRANSFORMERS_VERBOSITY", "error")
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Vec<f32> = serde_json::from_slice(&out.stdout).expect("logits");
    Tensor::from_slice(&theirs).view([2, 8, 300])
}

#[test]
fn transformers_loads_it_and_gives_the_same_logits() {
    let Some(py) = python() else { return };
    for tied in [false, true] {
        let mut c = LlamaConfig::preset("tiny", 300).expect("preset");
        c.tie_word_embeddings = tied;
        let vs = nn::VarStore::new(Device::Cpu);
        let m = seeded(1, || Llama::new(&vs.root(), &c));
        let dir = tempfile::tempdir().expect("tmp");
        c.save(&dir.path().join("config.json")).expect("config");
        vs.save(dir.path().join("model.safetensors"))
            .expect("weights");
        let ids = batch();
        let ours = m.forward(&ids).to_kind(Kind::Float);
        let script = r#"
import sys, json, torch
from transformers import LlamaForCausalLM
m = LlamaForCausalLM.from_pretrained(sys.argv[1], torch_dtype=torch.float32).eval()
ids = torch.tensor(json.loads(sys.argv[2]))
with torch.no_grad():
    out = m(ids).logits
print(json.dumps(out.flatten().tolist()))
"#;
        let theirs = transformers_logits(&py, script, dir.path());
        let diff = (ours - theirs).abs().max().double_value(&[]);
        assert!(
            diff < 1e-4,
            "tied={tied}: max |starling - transformers| = {diff}"
        );
    }
}

#[test]
fn mixed_precision_keeps_fp32_weights_and_loss_close_to_fp32() {
    let (vs, mut m) = tiny();
    let ids = batch();
    let (x, y) = (ids.narrow(1, 0, 7), ids.narrow(1, 1, 7));
    let fp32 = m.loss(&x, &y).double_value(&[]);
    m.set_compute_kind(Kind::BFloat16);
    let loss = m.loss(&x, &y);
    assert_eq!(loss.kind(), Kind::Float, "the loss is computed in fp32");
    let bf16 = loss.double_value(&[]);
    assert!((fp32 - bf16).abs() < 0.02, "fp32 {fp32} vs bf16 {bf16}");
    loss.backward();
    for (name, t) in vs.variables() {
        assert_eq!(t.kind(), Kind::Float, "{name} stays an fp32 master");
        assert!(t.grad().defined(), "{name} gets a gradient");
    }
}

#[test]
fn loads_another_llama_saved_by_transformers_in_bf16() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().expect("tmp");
    // A Llama from transformers itself: untied head, grouped-query attention, bf16 weights.
    let script = r#"
import sys, json, torch
from transformers import LlamaConfig, LlamaForCausalLM
torch.manual_seed(0)
c = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                tie_word_embeddings=False)
m = LlamaForCausalLM(c).to(torch.bfloat16)
m.save_pretrained(sys.argv[1])
ids = torch.tensor(json.loads(sys.argv[2]))
with torch.no_grad():
    out = m.float().eval()(ids).logits
print(json.dumps(out.flatten().tolist()))
"#;
    let theirs = transformers_logits(&py, script, dir.path());
    let (_vs, m) = starling_model::load_dir(dir.path(), Device::Cpu).expect("load HF Llama");
    assert!(!m.config.tie_word_embeddings);
    let ours = m.forward(&batch());
    let diff = (ours - theirs).abs().max().double_value(&[]);
    assert!(diff < 1e-4, "max |starling - transformers| = {diff}");
}

/// A tiny model directory with a tokenizer trained on a few posts.
fn embedder_dir(dir: &Path) -> PathBuf {
    let docs = [
        "good morning everyone, coffee first",
        "the match tonight was a great game",
        "crypto markets are down again today",
        "pizza and a movie at home tonight",
    ];
    let tok = starling_tokens::tokenizer::train(docs.iter().cycle().take(200), 400).unwrap();
    starling_tokens::tokenizer::save(&tok, &dir.join("tokenizer.json")).unwrap();
    let config = LlamaConfig::preset("tiny", tok.get_vocab_size(true)).unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let _model = seeded(0, || Llama::new(&vs.root(), &config));
    starling_model::save_dir(&vs, &config, dir).unwrap();
    dir.join("model.safetensors")
}

#[test]
fn embeddings_are_unit_length_and_independent_of_their_batch() {
    use starling_embed::Embedder;
    let tmp = tempfile::tempdir().unwrap();
    let weights = embedder_dir(tmp.path());
    for pooling in [
        starling_model::Pooling::Mean,
        starling_model::Pooling::WeightedMean,
        starling_model::Pooling::Last,
    ] {
        let e = starling_model::PostEmbedder::load(tmp.path(), &weights, pooling).unwrap();
        assert_eq!(e.dim(), 64);
        assert!(e.id().ends_with(pooling.name()));
        let alone = e.embed(&["pizza tonight"]).unwrap().remove(0);
        // Batched with a longer post, the short one is right-padded: its vector must not change.
        let batched = e
            .embed(&[
                "the match tonight was a great game, really great",
                "pizza tonight",
            ])
            .unwrap();
        let norm: f32 = alone.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
        let diff = alone
            .iter()
            .zip(&batched[1])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            diff < 1e-4,
            "{pooling:?}: padding changed the vector by {diff}"
        );
        assert!(starling_embed::dot(&batched[0], &batched[1]) < 0.9999);
    }
}

#[test]
fn the_embedding_head_learns_to_ignore_noise_and_is_picked_up_from_the_model_dir() {
    use starling_embed::Embedder;
    use starling_model::{train_head, HeadConfig, HeadPair};
    // Pairs share a signal in dims 0..8 under a common offset; dims 8..16 are loud noise.
    let groups = 400i64;
    let vectors = seeded(3, || {
        let signal = Tensor::randn([groups, 8], (Kind::Float, Device::Cpu));
        let side = || {
            let noise = Tensor::randn([groups, 8], (Kind::Float, Device::Cpu)) * 2.0;
            let x = Tensor::cat(&[&signal * 0.5 + 3.0, noise], 1);
            &x / x.norm_scalaropt_dim(2, [1], true)
        };
        Tensor::cat(&[side(), side()], 0)
    });
    let pairs: Vec<HeadPair> = (0..groups as usize)
        .map(|g| HeadPair {
            query: g,
            doc: groups as usize + g,
            group: g,
        })
        .collect();
    let cfg = HeadConfig {
        steps: 300,
        batch: 64,
        ..HeadConfig::default()
    };
    let (head, report) = train_head(&vectors, &pairs, &cfg).unwrap();
    assert!(
        report.val_top1_after > report.val_top1_before + 0.2 && report.val_top1_after > 0.7,
        "{report:?}"
    );
    assert!(report.val_loss_after < report.val_loss_before);
    assert_eq!(head.out_dim(), 16);

    // Saved into a model directory, the embedder applies it and says so in its id.
    let tmp = tempfile::tempdir().unwrap();
    let weights = embedder_dir(tmp.path());
    let plain =
        starling_model::PostEmbedder::load(tmp.path(), &weights, starling_model::Pooling::Mean)
            .unwrap();
    let base = plain.id().to_string();
    let (h64, _) = train_head(
        &seeded(4, || Tensor::randn([64, 64], (Kind::Float, Device::Cpu))),
        &(0..32)
            .map(|g| HeadPair {
                query: g,
                doc: 32 + g,
                group: g,
            })
            .collect::<Vec<_>>(),
        &HeadConfig {
            steps: 2,
            batch: 8,
            ..HeadConfig::default()
        },
    )
    .unwrap();
    starling_model::head::save_head(tmp.path(), &h64, &report).unwrap();
    let with_head =
        starling_model::PostEmbedder::load(tmp.path(), &weights, starling_model::Pooling::Mean)
            .unwrap();
    assert!(with_head.has_head());
    assert_ne!(with_head.id(), base);
    assert!(with_head.id().contains("+head-"));
    let v = with_head.embed(&["pizza tonight"]).unwrap().remove(0);
    assert_eq!(v.len(), 64);
    assert!((starling_embed::dot(&v, &v) - 1.0).abs() < 1e-4);
    // A head of the wrong width is refused with the file named.
    starling_model::head::save_head(tmp.path(), &head, &report).unwrap();
    let err =
        starling_model::PostEmbedder::load(tmp.path(), &weights, starling_model::Pooling::Mean)
            .err()
            .unwrap();
    assert!(
        err.to_string().contains("embedding_head.safetensors"),
        "{err}"
    );
}

#[test]
fn slot_batches_give_the_same_logits_as_one_sequence_at_a_time() {
    let (_vs, m) = tiny();
    let _guard = tch::no_grad_guard();
    let seqs: [Vec<i64>; 3] = [
        vec![1, 5, 9, 200, 17, 3, 3],
        vec![250, 42, 8],
        vec![7, 0, 299, 11, 12],
    ];
    // Reference: each sequence alone, full pass.
    let want: Vec<Tensor> = seqs
        .iter()
        .map(|s| m.forward(&Tensor::from_slice(s).view([1, -1])).get(0))
        .collect();
    // Prefill every sequence but its last 2 tokens (the first alone, the other two in one
    // right-padded batch of lengths 1 and 3), then decode 2 steps together.
    let mut cache = m.slot_cache(4);
    let mut firsts = vec![m.prefill(&seqs[0][..seqs[0].len() - 2], 0, &mut cache)];
    firsts.extend(m.prefill_batch(&[(&seqs[1][..1], 1), (&seqs[2][..3], 2)], &mut cache));
    for (slot, (s, p)) in seqs.iter().zip(firsts).enumerate() {
        let d = (p - want[slot].get(s.len() as i64 - 3))
            .abs()
            .max()
            .double_value(&[]);
        assert!(d < 1e-4, "prefill of {slot} differs by {d}");
    }
    for back in [2usize, 1] {
        let tokens: Vec<i64> = seqs.iter().map(|s| s[s.len() - back]).collect();
        let pos: Vec<i64> = seqs.iter().map(|s| (s.len() - back) as i64).collect();
        let got = m.decode(&tokens, &pos, &mut cache);
        for (i, s) in seqs.iter().enumerate() {
            let d = (got.get(i as i64) - want[i].get((s.len() - back) as i64))
                .abs()
                .max()
                .double_value(&[]);
            assert!(d < 1e-4, "row {i} differs by {d}");
        }
    }
    // A sequence leaves: the last slot moves into its place and decodes on unchanged.
    cache.move_slot(2, 0);
    let extra: Vec<i64> = seqs[2].iter().copied().chain([77]).collect();
    let full = m.forward(&Tensor::from_slice(&extra).view([1, -1])).get(0);
    let got = m.decode(&[77, 9], &[extra.len() as i64 - 1, 2], &mut cache);
    let d = (got.get(0) - full.get(extra.len() as i64 - 1))
        .abs()
        .max()
        .double_value(&[]);
    assert!(d < 1e-4, "moved slot differs by {d}");
    assert_eq!(cache.slots(), 4);
}

#[test]
fn a_fine_tuned_classifier_learns_what_the_untrained_head_cannot() {
    use starling_model::{fine_tune, ClassifyConfig};
    let tmp = tempfile::tempdir().unwrap();
    let weights = embedder_dir(tmp.path());
    // The class is carried by one word among ten shared fillers.
    let filler = [
        "good", "morning", "coffee", "match", "tonight", "movie", "home", "today", "great", "game",
    ];
    let (unsafe_words, safe_words) = (["vile", "scum", "trash"], ["lovely", "sunny", "kind"]);
    let text = |i: usize| -> (String, usize) {
        let label = i % 2;
        let w = if label == 1 {
            unsafe_words[i % 3]
        } else {
            safe_words[i % 3]
        };
        let f = |j: usize| filler[(i * 3 + j * 7) % filler.len()];
        let words: Vec<&str> = (0..4).map(f).chain([w]).chain((4..8).map(f)).collect();
        (words.join(" "), label)
    };
    let train: Vec<(String, usize)> = (0..120).map(text).collect();
    let val: Vec<(String, usize)> = (1000..1040).map(text).collect();
    let train: Vec<(&str, usize)> = train.iter().map(|(t, l)| (t.as_str(), *l)).collect();
    let val: Vec<(&str, usize)> = val.iter().map(|(t, l)| (t.as_str(), *l)).collect();
    for blocks in [None, Some(1)] {
        let cfg = ClassifyConfig {
            steps: 60,
            batch: 8,
            lr: 2e-3,
            head_lr: 1e-2,
            train_blocks: blocks,
            eval_every: 20,
            ..ClassifyConfig::default()
        };
        let mut seen = 0;
        let (clf, r) = fine_tune(tmp.path(), &weights, &train, &val, 2, &cfg, &mut |_, l| {
            assert!(l.is_finite());
            seen += 1;
        })
        .unwrap();
        let first = r.curve[0].val_macro_f1;
        let best = r.curve.iter().map(|p| p.val_macro_f1).fold(0.0, f64::max);
        println!(
            "{blocks:?}: validation macro-F1 {first:.3} → best {best:.3} at step {}",
            r.best_step
        );
        assert_eq!((seen, r.steps, r.curve.len()), (60, 60, 4));
        assert_eq!(r.all_weights, blocks.is_none());
        assert_eq!(r.trained_blocks, blocks.unwrap_or(2));
        assert!(best >= 0.9 && best > first + 0.2, "{first:.3} → {best:.3}");
        // The kept weights are the best step's: they score that macro-F1 again.
        let p = clf
            .probabilities(&val.iter().map(|v| v.0).collect::<Vec<_>>())
            .unwrap();
        assert!(p
            .iter()
            .all(|r| r.len() == 2 && (r[0] + r[1] - 1.0).abs() < 1e-5));
        let correct = p
            .iter()
            .zip(&val)
            .filter(|(r, v)| usize::from(r[1] > r[0]) == v.1)
            .count();
        assert!(
            correct as f64 >= 0.9 * val.len() as f64,
            "{correct}/{}",
            val.len()
        );
    }
    // A label outside the classes is refused by name.
    let bad = [("x y", 2usize), ("y z", 0)];
    let err = fine_tune(
        tmp.path(),
        &weights,
        &bad,
        &bad,
        2,
        &ClassifyConfig::default(),
        &mut |_, _| {},
    )
    .err()
    .expect("refused");
    assert!(err.to_string().contains("label 2"), "{err}");
}

#[test]
fn contrastive_fine_tuning_beats_the_untrained_model_on_held_out_groups() {
    use starling_embed::Embedder;
    use starling_model::{train_embedder, ContrastConfig, ContrastPair};
    let tmp = tempfile::tempdir().unwrap();
    let weights = embedder_dir(tmp.path());
    // 40 topics, each a made-up word; its posts bury it among twelve words shared by every
    // topic, so the untrained model's mean pooling mostly sees the filler.
    let filler = [
        "good", "morning", "coffee", "match", "tonight", "movie", "home", "today", "great", "game",
        "pizza", "markets",
    ];
    let word = |g: usize| -> String {
        let letters = b"bcdfghjklmnpqrstvwxz";
        (0..3)
            .map(|i| letters[(g * 7 + i * 13 + g / 3) % letters.len()] as char)
            .chain((0..2).map(|i| ['a', 'e', 'i', 'o', 'u'][(g + i) % 5]))
            .collect()
    };
    let mut pairs = Vec::new();
    for g in 0..40 {
        for k in 0..3 {
            let f = |j: usize| filler[(g * 5 + k * 3 + j * 7) % filler.len()];
            let noise = |from: usize| (from..from + 6).map(f).collect::<Vec<_>>().join(" ");
            pairs.push(ContrastPair {
                query: word(g),
                doc: format!("{} {} {}", noise(0), word(g), noise(6)),
                hard_negative: (k == 0).then(|| format!("{} {}", noise(1), word((g + 1) % 40))),
                group: g,
            });
        }
    }
    let out = tmp.path().join(starling_model::EMBEDDER_DIR);
    let cfg = ContrastConfig {
        steps: 80,
        batch: 8,
        lr: 2e-3,
        val_fraction: 0.25,
        eval_every: 40,
        ..ContrastConfig::default()
    };
    let mut seen = 0;
    let r = train_embedder(tmp.path(), &weights, &pairs, &cfg, &out, &mut |_, l| {
        assert!(l.is_finite());
        seen += 1;
        ControlFlow::Continue(())
    })
    .unwrap();
    println!(
        "held-out top-1 {:.3} → {:.3}",
        r.val_top1_before, r.val_top1_after
    );
    assert_eq!((seen, r.steps, r.val_groups), (80, 80, 10));
    assert_eq!(r.curve.first().map(|c| c.step), Some(0));
    assert!(
        r.val_top1_after > r.val_top1_before + 0.1,
        "held-out top-1 {:.3} → {:.3}",
        r.val_top1_before,
        r.val_top1_after
    );
    // Found beside the model, loadable as an embedder of its own (another id).
    let (dir, w) = starling_model::trained_embedder(tmp.path()).expect("found");
    let trained =
        starling_model::PostEmbedder::load(&dir, &w, starling_model::Pooling::Mean).unwrap();
    let plain =
        starling_model::PostEmbedder::load(tmp.path(), &weights, starling_model::Pooling::Mean)
            .unwrap();
    assert_ne!(trained.id(), plain.id());
    let v = trained.embed(&[pairs[0].doc.as_str()]).unwrap().remove(0);
    assert!((starling_embed::dot(&v, &v) - 1.0).abs() < 1e-4);
    // Too few pairs are refused by name.
    let err = train_embedder(
        tmp.path(),
        &weights,
        &pairs[..3],
        &cfg,
        &out,
        &mut |_, _| ControlFlow::Continue(()),
    )
    .unwrap_err();
    assert!(err.to_string().contains("too few"), "{err}");
    // Top blocks only: the lower block's weights are the source's, the top block's moved.
    let top = tmp.path().join("top-only");
    let cfg = ContrastConfig {
        steps: 10,
        train_blocks: Some(1),
        ..cfg
    };
    let r = train_embedder(tmp.path(), &weights, &pairs, &cfg, &top, &mut |_, _| {
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(r.trained_blocks, 1);
    let read = |p: &Path| -> std::collections::HashMap<String, Tensor> {
        Tensor::read_safetensors(p).unwrap().into_iter().collect()
    };
    let (before, after) = (read(&weights), read(&top.join("model.safetensors")));
    let moved = |name: &str| {
        let d = (&before[name] - &after[name]).abs().max().double_value(&[]);
        d > 0.0
    };
    assert!(!moved("model.layers.0.mlp.up_proj.weight"));
    assert!(!moved("model.embed_tokens.weight"));
    assert!(moved("model.layers.1.mlp.up_proj.weight"));
    // Top blocks plus a projection: saved as the embedder's head, which the embedder applies.
    let cfg_proj = ContrastConfig {
        projection: Some(8),
        ..cfg.clone()
    };
    let r = train_embedder(
        tmp.path(),
        &weights,
        &pairs,
        &cfg_proj,
        &top,
        &mut |_, _| ControlFlow::Continue(()),
    )
    .unwrap();
    assert_eq!(r.projection, Some(8));
    let e = starling_model::PostEmbedder::load(
        &top,
        &top.join("model.safetensors"),
        starling_model::Pooling::Mean,
    )
    .unwrap();
    assert!(e.has_head());
    assert_eq!(e.dim(), 8);
    let v = e.embed(&[pairs[0].doc.as_str()]).unwrap().remove(0);
    assert_eq!(v.len(), 8);
    assert!((starling_embed::dot(&v, &v) - 1.0).abs() < 1e-4);
    // A later run without one leaves no stale head behind.
    train_embedder(tmp.path(), &weights, &pairs, &cfg, &top, &mut |_, _| {
        ControlFlow::Continue(())
    })
    .unwrap();
    assert!(!top.join(starling_model::head::HEAD_FILE).exists());

    // Stopped at step 6 and resumed to 12, training ends where one straight run of 12 does.
    let cfg = ContrastConfig {
        steps: 12,
        eval_every: 4,
        checkpoint_every: 5,
        ..ContrastConfig::default()
    };
    let cfg = ContrastConfig {
        batch: 8,
        lr: 2e-3,
        val_fraction: 0.25,
        ..cfg
    };
    let straight = tmp.path().join("straight");
    let a = train_embedder(
        tmp.path(),
        &weights,
        &pairs,
        &cfg,
        &straight,
        &mut |_, _| ControlFlow::Continue(()),
    )
    .unwrap();
    let halves = tmp.path().join("halves");
    let first = train_embedder(
        tmp.path(),
        &weights,
        &pairs,
        &cfg,
        &halves,
        &mut |step, _| {
            if step == 6 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
    )
    .unwrap();
    assert_eq!((first.steps, first.target_steps), (6, 12));
    let ckpt = halves.join(starling_model::EMBEDDER_CHECKPOINT_DIR);
    // Only the newest step's files stay (step 5's went when step 6 was written).
    let mut files: Vec<String> = std::fs::read_dir(&ckpt)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files.len(), 7, "{files:?}");
    assert!(files
        .iter()
        .all(|f| f == "state.json" || f.starts_with("step-00000006.")));
    let resume = ContrastConfig {
        resume: true,
        ..cfg.clone()
    };
    let mut steps_seen = Vec::new();
    let b = train_embedder(
        tmp.path(),
        &weights,
        &pairs,
        &resume,
        &halves,
        &mut |s, _| {
            steps_seen.push(s);
            ControlFlow::Continue(())
        },
    )
    .unwrap();
    assert_eq!(steps_seen, (7..=12).collect::<Vec<_>>());
    assert_eq!((b.steps, b.resumed_from), (12, Some(6)));
    let (wa, wb) = (
        read(&straight.join("model.safetensors")),
        read(&halves.join("model.safetensors")),
    );
    for (name, t) in &wa {
        let d = (t - &wb[name]).abs().max().double_value(&[]);
        assert!(d <= 1e-6, "{name}: resumed run differs by {d}");
    }
    assert!((a.temperature - b.temperature).abs() < 1e-6);
    let steps =
        |r: &starling_model::ContrastReport| r.curve.iter().map(|c| c.step).collect::<Vec<_>>();
    assert_eq!(steps(&a), steps(&b));
    assert!((a.val_top1_after - b.val_top1_after).abs() < 1e-9);
    // A checkpoint of other settings is refused by name; a damaged file by its checksum.
    let other = ContrastConfig {
        batch: 6,
        ..resume.clone()
    };
    let err = train_embedder(
        tmp.path(),
        &weights,
        &pairs,
        &other,
        &halves,
        &mut |_, _| ControlFlow::Continue(()),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("batch 8") && err.contains("state.json"),
        "{err}"
    );
    let victim = std::fs::read_dir(&ckpt)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".adam-m.safetensors"))
        .unwrap();
    let mut bytes = std::fs::read(&victim).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(&victim, bytes).unwrap();
    let err = train_embedder(
        tmp.path(),
        &weights,
        &pairs,
        &resume,
        &halves,
        &mut |_, _| ControlFlow::Continue(()),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("sha256") && err.contains("adam-m"), "{err}");
}
