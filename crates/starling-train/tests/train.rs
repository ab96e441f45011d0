//! Training end to end on a tiny model: loss falls, resume is exact, a corrupt checkpoint is skipped.

use starling_corpus::synth::SynthConfig;
use starling_corpus::{CorpusBuilder, CorpusConfig};
use starling_train::config::Recompute;
use starling_train::{checkpoints, latest_good, train, StepMetrics, TrainConfig};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// torch's seed is process-global: tests that train take turns, so each run's weights are its own seed's.
static TORCH: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn tokens_dir(dir: &Path) -> PathBuf {
    let input = dir.join("s.jsonl");
    starling_corpus::synth::write_file(
        &SynthConfig {
            posts: 1500,
            ..SynthConfig::default()
        },
        &input,
    )
    .expect("synth");
    let corpus = dir.join("corpus");
    CorpusBuilder::new(CorpusConfig::default(), vec![input])
        .build(&corpus, &mut |_| {})
        .expect("corpus");
    let tok = dir.join("tokenizer.json");
    starling_tokens::train_tokenizer(&corpus, 600, &tok).expect("tokenizer");
    let out = dir.join("tokens");
    starling_tokens::encode_corpus(&corpus, &tok, &out, &Default::default()).expect("tokens");
    out
}

/// This test's turn at torch (one thread), a temporary folder and tokens in it.
fn setup() -> (
    std::sync::MutexGuard<'static, ()>,
    tempfile::TempDir,
    PathBuf,
) {
    let turn = TORCH.lock().unwrap_or_else(|e| e.into_inner());
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().expect("tmp");
    let tokens = tokens_dir(tmp.path());
    (turn, tmp, tokens)
}

fn cfg(steps: u64) -> TrainConfig {
    let mut c = TrainConfig {
        preset: "tiny".into(),
        batch: 4,
        ctx: Some(64),
        steps,
        eval_every: 5,
        eval_batches: 2,
        ckpt_every: 3,
        keep: 2,
        ..Default::default()
    };
    c.optim.warmup = 2;
    c.optim.lr = 3e-3;
    c
}

fn losses(run: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .expect("metrics")
        .lines()
        .map(|l| serde_json::from_str::<StepMetrics>(l).expect("line"))
        .map(|m| (m.step, m.loss))
        .collect()
}

#[test]
fn trains_resumes_exactly_and_skips_a_corrupt_checkpoint() {
    let (_turn, tmp, tokens) = setup();
    let never = AtomicBool::new(false);

    // Uninterrupted: 9 steps.
    let straight = tmp.path().join("straight");
    let s = train(&tokens, &straight, &cfg(9), &never, &mut |_| {}).expect("train");
    assert_eq!(s.steps, 9);
    let full = losses(&straight);
    assert_eq!(full.len(), 9);
    assert!(full[8].1 < full[0].1, "loss falls: {full:?}");
    assert!(s.val_loss.is_some_and(f64::is_finite));
    assert_eq!(checkpoints(&straight).len(), 2, "keeps the last 2");
    let png = std::fs::read(straight.join("loss.png")).expect("loss.png");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a drawn plot"
    );

    // Stopped after step 5 (as SIGTERM would), resumed to 9: the same loss at every later step.
    let resumed = tmp.path().join("resumed");
    let stop = AtomicBool::new(false);
    let first = train(&tokens, &resumed, &cfg(9), &stop, &mut |m| {
        if m.step == 5 {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    })
    .expect("first leg");
    assert_eq!(first.steps, 5);
    train(&tokens, &resumed, &cfg(9), &never, &mut |_| {}).expect("second leg");
    let r = losses(&resumed);
    assert_eq!(r.len(), 9);
    for (a, b) in full.iter().zip(&r) {
        assert_eq!(a.0, b.0);
        assert!((a.1 - b.1).abs() < 1e-9, "step {}: {} vs {}", a.0, a.1, b.1);
    }

    // A corrupt latest checkpoint is detected and the previous good one is used.
    let latest = latest_good(&resumed).expect("latest");
    let model = latest.join("model.safetensors");
    let mut bytes = std::fs::read(&model).expect("read");
    let n = bytes.len();
    bytes[n - 1] ^= 0xff;
    std::fs::write(&model, bytes).expect("write");
    let good = latest_good(&resumed).expect("previous");
    assert_ne!(good, latest);

    // A stop request checkpoints and returns early.
    let stopped = tmp.path().join("stopped");
    let stop = AtomicBool::new(true);
    let s = train(&tokens, &stopped, &cfg(9), &stop, &mut |_| {}).expect("stop");
    assert_eq!(s.steps, 1);
    assert!(latest_good(&stopped).is_some());
}

fn err(r: starling_train::Result<starling_train::TrainSummary>) -> String {
    match r {
        Ok(s) => panic!("expected an error, trained {} steps", s.steps),
        Err(e) => e.to_string(),
    }
}

#[test]
fn init_continues_a_model_and_bad_inputs_get_clear_errors() {
    let (_turn, tmp, tokens) = setup();
    let never = AtomicBool::new(false);

    // Train, export as an HF directory, continue from it: it starts where the first run ended.
    let a = tmp.path().join("a");
    train(&tokens, &a, &cfg(12), &never, &mut |_| {}).expect("a");
    let la = losses(&a);
    let hf = tmp.path().join("hf");
    let (mut vs, _m) = {
        let c = starling_model::LlamaConfig::load(&a.join("config.json")).expect("config");
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let m = starling_model::Llama::new(&vs.root(), &c);
        (vs, m)
    };
    let ckpt = latest_good(&a).expect("ckpt");
    starling_model::load_weights(&mut vs, &ckpt.join("model.safetensors")).expect("weights");
    let c = starling_model::LlamaConfig::load(&a.join("config.json")).expect("config");
    starling_model::save_dir(&vs, &c, &hf).expect("export");
    let mut icfg = cfg(2);
    icfg.init = Some(hf.clone());
    let b = tmp.path().join("b");
    train(&tokens, &b, &icfg, &never, &mut |_| {}).expect("b");
    let lb = losses(&b);
    assert!(
        lb[0].1 < la[0].1 - 0.3,
        "initialised run starts near the end of the first ({:?} vs {:?})",
        lb[0],
        la
    );

    // A model with another vocabulary.
    let mut other = c.clone();
    other.vocab_size += 8;
    let bad = tmp.path().join("bad-init");
    std::fs::create_dir_all(&bad).expect("dir");
    other.save(&bad.join("config.json")).expect("save");
    let mut bcfg = cfg(2);
    bcfg.init = Some(bad);
    let e = err(train(
        &tokens,
        &tmp.path().join("c"),
        &bcfg,
        &never,
        &mut |_| {},
    ));
    assert!(
        e.contains("vocabulary mismatch") && e.contains("vocab_size"),
        "{e}"
    );

    // Tokens whose tokenizer.json is not the one they were encoded with.
    let swapped = tmp.path().join("swapped");
    std::fs::create_dir_all(&swapped).expect("dir");
    for f in std::fs::read_dir(&tokens).expect("ls").flatten() {
        std::fs::copy(f.path(), swapped.join(f.file_name())).expect("copy");
    }
    let tj = swapped.join("tokenizer.json");
    let text = std::fs::read_to_string(&tj).expect("read");
    std::fs::write(&tj, text.replacen("<|url|>", "<|link|>", 1)).expect("write");
    let e = err(train(
        &swapped,
        &tmp.path().join("d"),
        &cfg(2),
        &never,
        &mut |_| {},
    ));
    assert!(e.contains("tokenizer.json") && e.contains("sha256"), "{e}");

    // A shard whose header says another dtype than the manifest.
    let manifest = swapped.join("manifest.json");
    std::fs::copy(tokens.join("tokenizer.json"), &tj).expect("restore");
    let m = std::fs::read_to_string(&manifest).expect("manifest");
    std::fs::write(
        &manifest,
        m.replace("\"dtype\": \"u16\"", "\"dtype\": \"u32\""),
    )
    .expect("write");
    let e = err(train(
        &swapped,
        &tmp.path().join("e"),
        &cfg(2),
        &never,
        &mut |_| {},
    ));
    assert!(
        e.contains(".bin: stores U16 ids") && e.contains("U32"),
        "{e}"
    );

    // A preset that cannot fit: refused before any allocation, with the numbers.
    let mut huge = cfg(2);
    huge.preset = "llama-1b".into();
    huge.ctx = None;
    huge.batch = 512;
    let e = err(train(
        &tokens,
        &tmp.path().join("f"),
        &huge,
        &never,
        &mut |_| {},
    ));
    assert!(
        e.contains("needs about") && e.contains("GiB is available"),
        "{e}"
    );

    // A loss that blows up: stopped with the step, batch and the last good checkpoint named.
    let mut nan = cfg(6);
    nan.optim.lr = 1e30;
    nan.optim.warmup = 0;
    nan.ckpt_every = 1;
    let e = err(train(
        &tokens,
        &tmp.path().join("g"),
        &nan,
        &never,
        &mut |_| {},
    ));
    assert!(
        e.contains("non-finite loss") && e.contains("batch") && e.contains("ckpt-0000000"),
        "{e}"
    );
}

/// A run written by this checkpoint version (committed, a 3,000-parameter model) still resumes
/// as a model directory; a checkpoint from another version is skipped with its reason.
#[test]
fn committed_v1_checkpoint_opens_and_other_versions_are_skipped() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/run-v1");
    let dir = tempfile::tempdir().expect("tmp");
    starling_artifacts::copy_dir(&fixture, dir.path()).expect("copy");
    let good = latest_good(dir.path()).expect("the committed checkpoint verifies");
    assert!(good.ends_with("ckpt-00000002"));
    let m = starling_train::ModelDir::open(dir.path()).expect("a run is a model directory");
    assert_eq!(m.config().expect("config").hidden_size, 8);
    let (_vs, model) = {
        let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let model = starling_model::Llama::new(&vs.root(), &m.config().expect("config"));
        starling_model::load_weights(&mut vs, &m.weights).expect("weights");
        (vs, model)
    };
    let ids = tch::Tensor::from_slice(&[1i64, 2, 3]).unsqueeze(0);
    let logits = model.forward(&ids);
    assert_eq!(logits.size(), [1, 3, 300]);
    let state = good.join("state.json");
    let text = std::fs::read_to_string(&state).expect("state");
    std::fs::write(&state, text.replace("\"version\": 1", "\"version\": 2")).expect("patch");
    assert!(latest_good(dir.path()).is_none());
    let e = starling_train::ModelDir::open(dir.path()).expect_err("no good checkpoint");
    assert!(e.to_string().contains("neither an exported model"), "{e}");
}

/// No value is read on the host inside a step: with `log_every` 5, 20 steps make one read per
/// interval (4) and one for the closing evaluation; reading every step makes at least 20.
#[test]
fn one_host_sync_per_logging_interval() {
    let (_turn, tmp, tokens) = setup();
    let never = AtomicBool::new(false);
    let mut c = cfg(20);
    c.eval_every = 1000;
    c.ckpt_every = 1000;
    c.plot = false;
    let syncs = |c: &TrainConfig, run: &str| {
        let counter = starling_torch::SyncCounter::install().expect("observer");
        let s = train(&tokens, &tmp.path().join(run), c, &never, &mut |_| {}).expect("train");
        assert_eq!(s.steps, 20);
        assert_eq!(losses(&tmp.path().join(run)).len(), 20, "a line per step");
        counter.count()
    };
    c.log_every = 5;
    let per_interval = syncs(&c, "every5");
    c.log_every = 1;
    let per_step = syncs(&c, "every1");
    starling_torch::SyncCounter::remove();
    eprintln!("host syncs in 20 steps: {per_interval} (log_every 5), {per_step} (log_every 1)");
    assert!(
        per_interval <= 4 + 1,
        "{per_interval} host syncs in 20 steps"
    );
    assert!(per_step >= 20, "the counter sees reads: {per_step}");
}

/// `--profile-step 2` writes the run's profile.md: the step's ops by self time, with no host
/// synchronisation inside the step, and the run's losses are those of an unprofiled run.
#[test]
fn a_profiled_step_is_written_and_changes_nothing() {
    let (_turn, tmp, tokens) = setup();
    let never = AtomicBool::new(false);
    let mut c = cfg(3);
    c.eval_every = 1000;
    c.plot = false;
    c.log_every = 1;
    let plain = tmp.path().join("plain");
    train(&tokens, &plain, &c, &never, &mut |_| {}).expect("train");
    c.profile_step = Some(2);
    let profiled = tmp.path().join("profiled");
    train(&tokens, &profiled, &c, &never, &mut |_| {}).expect("train");
    assert_eq!(losses(&plain), losses(&profiled));
    assert!(!plain
        .join(starling_train::step_profile::PROFILE_FILE)
        .exists());
    let md = std::fs::read_to_string(profiled.join(starling_train::step_profile::PROFILE_FILE))
        .expect("profile.md");
    assert!(md.starts_with("# Step 2 under PyTorch's profiler"), "{md}");
    assert!(
        md.contains("| host synchronisations in the step | 0 |"),
        "{md}"
    );
    assert!(md.contains("| aten::mm |"), "{md}");
    // Which backward ops make the top 30 depends on timing; some always do.
    assert!(
        md.to_lowercase().contains("backward"),
        "the backward is recorded: {md}"
    );
}

#[test]
fn recomputed_blocks_train_the_same_losses() {
    let (_turn, tmp, tokens) = setup();
    let never = AtomicBool::new(false);
    let mut runs = Vec::new();
    for recompute in [Recompute::None, Recompute::Block] {
        let mut c = cfg(12);
        c.recompute = recompute;
        c.log_every = 1;
        // Low enough that every step clips: the norm over recomputed gradients is exercised.
        c.optim.grad_clip = 0.05;
        let run = tmp.path().join(format!("{recompute:?}"));
        train(&tokens, &run, &c, &never, &mut |_| {}).expect("train");
        runs.push(losses(&run));
    }
    assert_eq!(runs[0].len(), 12);
    for ((s, a), (_, b)) in runs[0].iter().zip(&runs[1]) {
        assert!(
            (a - b).abs() <= 1e-5,
            "step {s}: {a} without recomputation, {b} with"
        );
    }
}

/// `--cuda-graphs`: `on` where a step cannot be captured fails at the start, saying why; on a
/// CUDA device, 20 steps replayed from a graph (two micro-batches each, clipping active) give the
/// losses of the eager steps within 1e-5.
#[test]
fn cuda_graphs_train_the_same_losses_or_say_why_not() {
    use starling_train::config::CudaGraphs;
    let (_turn, tmp, tokens) = setup();
    let never = AtomicBool::new(false);
    let mut c = cfg(2);
    c.cuda_graphs = CudaGraphs::On;
    let e = err(train(
        &tokens,
        &tmp.path().join("cpu"),
        &c,
        &never,
        &mut |_| {},
    ));
    assert!(
        e.contains("--cuda-graphs on") && e.contains("not CUDA"),
        "{e}"
    );
    if !tch::Cuda::is_available() {
        eprintln!("skipping the CUDA half: no CUDA device here");
        return;
    }
    let mut runs = Vec::new();
    for graphs in [CudaGraphs::Off, CudaGraphs::On] {
        let mut c = cfg(20);
        c.device = "cuda".into();
        c.dtype = "fp32".into();
        c.accum = 2;
        c.log_every = 1;
        c.optim.grad_clip = 0.05;
        c.cuda_graphs = graphs;
        let run = tmp.path().join(format!("{graphs:?}"));
        train(&tokens, &run, &c, &never, &mut |_| {}).expect("train");
        runs.push(losses(&run));
    }
    assert_eq!(runs[1].len(), 20);
    for ((s, a), (_, b)) in runs[0].iter().zip(&runs[1]) {
        assert!(
            (a - b).abs() <= 1e-5,
            "step {s}: {a} eager, {b} from the graph"
        );
    }
}
