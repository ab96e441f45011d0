//! Continuous batching: one worker thread owns the model and decodes every running sequence in
//! one batch per step; a sequence joins after its prefill and leaves at any step.

use crate::metrics::Metrics;
use rand::{rngs::StdRng, SeedableRng};
use starling_model::{sample, Llama, SamplingConfig};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokenizers::Tokenizer;
use tokio::sync::mpsc::UnboundedSender;

/// How the engine batches.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Most sequences decoding together (decode slots).
    pub max_batch: usize,
    /// Most sequences waiting for a slot; beyond it requests are refused (HTTP 429).
    pub max_queue: usize,
    /// Prompt tokens read per step before the running batch decodes again (bounds inter-token
    /// latency while new requests arrive); at least one prompt is always read.
    pub prefill_tokens_per_step: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_batch: 32,
            max_queue: 256,
            prefill_tokens_per_step: 1024,
        }
    }
}

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// An end token or a stop string.
    Stop,
    /// Its token limit or the context length.
    Length,
    /// Its deadline passed.
    Timeout,
}

impl Finish {
    /// OpenAI's `finish_reason` (a timeout reads as `length`).
    pub fn reason(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length | Finish::Timeout => "length",
        }
    }
}

/// The log-probability of a generated token and its most likely alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// The token's text.
    pub token: String,
    /// Its natural log-probability under the model (before temperature and truncation).
    pub logprob: f32,
    /// The most likely tokens at this position with theirs, best first.
    pub top: Vec<(String, f32)>,
}

/// What a running sequence reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A new token: its printable text (may be empty while a character or stop string is incomplete).
    Token {
        /// Which of the request's sequences (`n`) this is.
        index: usize,
        /// Text to append.
        text: String,
        /// Log-probabilities, when asked for.
        logprob: Option<TokenLogprob>,
    },
    /// The sequence ended.
    Done {
        /// Which of the request's sequences.
        index: usize,
        /// Why.
        finish: Finish,
        /// Tokens generated.
        completion_tokens: usize,
    },
}

/// One sequence to generate.
#[derive(Debug)]
pub struct Job {
    /// Index among the request's sequences.
    pub index: usize,
    /// Prompt token ids (shorter than the context).
    pub prompt: Vec<i64>,
    /// Sampling; `max_tokens` is cut to what the context leaves.
    pub sampling: SamplingConfig,
    /// Token ids that end the sequence (not emitted).
    pub stop_ids: Vec<i64>,
    /// Report log-probabilities with this many alternatives.
    pub logprobs: Option<usize>,
    /// Ends with [`Finish::Timeout`] after this instant.
    pub deadline: Instant,
    /// Where events go; when the receiver is dropped the sequence is cancelled.
    pub events: UnboundedSender<Event>,
}

/// The request queue was full.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the queue is full ({0} waiting)")]
pub struct QueueFull(pub usize);

struct Shared {
    queue: Mutex<VecDeque<(Job, Instant)>>,
    wake: Condvar,
    stop: AtomicBool,
    active: AtomicUsize,
    config: EngineConfig,
    metrics: Arc<Metrics>,
}

/// The generation engine: a queue in front of a worker thread that owns the model.
pub struct Engine {
    shared: Arc<Shared>,
    worker: Option<std::thread::JoinHandle<()>>,
    context: usize,
}

impl Engine {
    /// Starts the worker thread with `model` (and the `VarStore` holding its weights).
    pub fn start(
        model: Llama,
        vs: tch::nn::VarStore,
        tokenizer: Tokenizer,
        config: EngineConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        let context = model.config.max_position_embeddings;
        let shared = Arc::new(Shared {
            queue: Mutex::new(VecDeque::new()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            config,
            metrics,
        });
        let s = shared.clone();
        let worker = std::thread::Builder::new()
            .name("starling-decode".into())
            .spawn(move || {
                let _vs = vs;
                Worker::new(model, tokenizer, s).run();
            })
            .ok();
        Self {
            shared,
            worker,
            context,
        }
    }

    /// The model's context length in tokens.
    pub fn context(&self) -> usize {
        self.context
    }

    /// Queues all of `jobs` or none (429 when the queue cannot take them).
    pub fn submit(&self, jobs: Vec<Job>) -> Result<(), QueueFull> {
        let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() + jobs.len() > self.shared.config.max_queue {
            self.shared.metrics.rejected.inc();
            return Err(QueueFull(q.len()));
        }
        let now = Instant::now();
        q.extend(jobs.into_iter().map(|j| (j, now)));
        self.shared.metrics.queue_depth.set(q.len() as i64);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Sequences waiting for a slot.
    pub fn queued(&self) -> usize {
        self.shared
            .queue
            .lock()
            .map(|q| q.len())
            .unwrap_or_default()
    }

    /// Sequences decoding now.
    pub fn active(&self) -> usize {
        self.shared.active.load(Ordering::Relaxed)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.wake.notify_all();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// A sequence in a decode slot.
struct Seq {
    job: Job,
    ids: Vec<i64>,
    history: Vec<i64>,
    text: String,
    rng: StdRng,
    last_token_at: Instant,
}

struct Worker {
    model: Llama,
    tokenizer: Tokenizer,
    shared: Arc<Shared>,
    context: usize,
    vocab: usize,
}

impl Worker {
    fn new(model: Llama, tokenizer: Tokenizer, shared: Arc<Shared>) -> Self {
        Self {
            context: model.config.max_position_embeddings,
            vocab: model.config.vocab_size,
            model,
            tokenizer,
            shared,
        }
    }

    fn decode_text(&self, ids: &[i64]) -> String {
        let u: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        self.tokenizer.decode(&u, false).unwrap_or_default()
    }

    /// Jobs to admit now, waiting while there is nothing to do.
    fn admit(&self, running: usize) -> Option<Vec<(Job, Instant)>> {
        let s = &self.shared;
        let mut q = s.queue.lock().unwrap_or_else(|e| e.into_inner());
        while running == 0 && q.is_empty() {
            if s.stop.load(Ordering::Relaxed) {
                return None;
            }
            q = s
                .wake
                .wait_timeout(q, Duration::from_millis(200))
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        if s.stop.load(Ordering::Relaxed) {
            return None;
        }
        let mut out = Vec::new();
        let mut budget = s.config.prefill_tokens_per_step;
        while running + out.len() < s.config.max_batch {
            match q.front() {
                Some((j, _)) if out.is_empty() || j.prompt.len() <= budget => {
                    budget = budget.saturating_sub(j.prompt.len());
                    out.extend(q.pop_front());
                }
                _ => break,
            }
        }
        s.metrics.queue_depth.set(q.len() as i64);
        Some(out)
    }

    fn run(self) {
        let _guard = tch::no_grad_guard();
        let mut cache = self.model.slot_cache(self.shared.config.max_batch);
        let mut seqs: Vec<Seq> = Vec::new();
        while let Some(admitted) = self.admit(seqs.len()) {
            // Admitted jobs count as active from here: they left the queue.
            self.shared
                .active
                .store(seqs.len() + admitted.len(), Ordering::Relaxed);
            let mut fresh = Vec::new();
            for (job, queued_at) in admitted {
                if job.events.is_closed() {
                    self.shared.metrics.cancelled.inc();
                    continue;
                }
                self.shared
                    .metrics
                    .queue_wait
                    .observe(queued_at.elapsed().as_secs_f64());
                fresh.push((job, queued_at));
            }
            // Every admitted prompt in one forward pass, each into the slot after the running ones.
            let first_slot = seqs.len();
            let prompts: Vec<(&[i64], usize)> = fresh
                .iter()
                .enumerate()
                .map(|(i, (job, _))| (job.prompt.as_slice(), first_slot + i))
                .collect();
            // Passes of similar lengths whose padded size stays within the prefill budget, so
            // one long prompt never pads many short ones to its length.
            let lens: Vec<usize> = prompts.iter().map(|(p, _)| p.len()).collect();
            let mut rows: Vec<Vec<f32>> = vec![Vec::new(); prompts.len()];
            for group in prefill_groups(&lens, self.shared.config.prefill_tokens_per_step) {
                let pass: Vec<(&[i64], usize)> = group.iter().map(|&i| prompts[i]).collect();
                let logits = self.model.prefill_batch(&pass, &mut cache);
                for (&i, l) in group.iter().zip(&logits) {
                    rows[i] = to_vec(l);
                }
            }
            for (((job, queued_at), row), slot) in fresh.into_iter().zip(rows).zip(first_slot..) {
                self.shared
                    .metrics
                    .prompt_tokens
                    .inc_by(job.prompt.len() as u64);
                let seed = job.sampling.seed;
                let mut seq = Seq {
                    history: job.prompt.clone(),
                    job,
                    ids: Vec::new(),
                    text: String::new(),
                    rng: StdRng::seed_from_u64(seed),
                    last_token_at: queued_at,
                };
                if !self.step_seq(&mut seq, &row, true) {
                    // Running sequences stay in the first slots: one that ended at its first
                    // token leaves a gap the next one moves into.
                    cache.move_slot(slot, seqs.len());
                    seqs.push(seq);
                }
            }
            self.shared.active.store(seqs.len(), Ordering::Relaxed);
            self.shared.metrics.batch_size.set(seqs.len() as i64);
            if seqs.is_empty() {
                continue;
            }
            let t0 = Instant::now();
            let tokens: Vec<i64> = seqs.iter().map(|s| s.ids[s.ids.len() - 1]).collect();
            let positions: Vec<i64> = seqs
                .iter()
                .map(|s| (s.job.prompt.len() + s.ids.len() - 1) as i64)
                .collect();
            let logits = self.model.decode(&tokens, &positions, &mut cache);
            let all = to_vec(&logits);
            let mut finished = Vec::new();
            for (i, seq) in seqs.iter_mut().enumerate() {
                let row = all.get(i * self.vocab..(i + 1) * self.vocab).unwrap_or(&[]);
                if self.step_seq(seq, row, false) {
                    finished.push(i);
                }
            }
            let secs = t0.elapsed().as_secs_f64();
            let m = &self.shared.metrics;
            m.step_seconds.observe(secs);
            m.step_batch.observe(seqs.len() as f64);
            m.tokens_per_second.set(seqs.len() as f64 / secs.max(1e-9));
            for &i in finished.iter().rev() {
                let last = seqs.len() - 1;
                seqs.swap_remove(i);
                cache.move_slot(last, i);
            }
            self.shared.active.store(seqs.len(), Ordering::Relaxed);
            self.shared.metrics.batch_size.set(seqs.len() as i64);
        }
        self.shared.active.store(0, Ordering::Relaxed);
    }

    /// Samples the next token of `seq` from `row`, reports it; true when the sequence ended.
    fn step_seq(&self, seq: &mut Seq, row: &[f32], first: bool) -> bool {
        let m = &self.shared.metrics;
        let job = &seq.job;
        if row.len() != self.vocab {
            return self.finish(seq, Finish::Stop);
        }
        if Instant::now() > job.deadline {
            m.timeouts.inc();
            return self.finish(seq, Finish::Timeout);
        }
        let token = sample(row, &seq.history, &job.sampling, &mut seq.rng);
        let now = Instant::now();
        if first {
            m.ttft
                .observe(now.duration_since(seq.last_token_at).as_secs_f64());
        } else {
            m.inter_token
                .observe(now.duration_since(seq.last_token_at).as_secs_f64());
        }
        seq.last_token_at = now;
        if job.stop_ids.contains(&token) {
            return self.finish(seq, Finish::Stop);
        }
        m.generated_tokens.inc();
        seq.ids.push(token);
        seq.history.push(token);
        let logprob = job.logprobs.map(|k| self.logprob(row, token, k));
        let full = self.decode_text(&seq.ids);
        let stop_at = job
            .sampling
            .stop
            .iter()
            .filter_map(|s| full.find(s.as_str()))
            .min();
        let (end, finish) = match stop_at {
            Some(cut) => (cut, Some(Finish::Stop)),
            None => {
                let hold = held_back(&full, &job.sampling.stop);
                let limit = seq.ids.len() >= job.sampling.max_tokens
                    || job.prompt.len() + seq.ids.len() >= self.context;
                if limit {
                    (full.len(), Some(Finish::Length))
                } else {
                    (full.len() - hold, None)
                }
            }
        };
        let piece =
            if full.starts_with(&seq.text) && end >= seq.text.len() && full.is_char_boundary(end) {
                let p = full[seq.text.len()..end].to_string();
                seq.text = full[..end].to_string();
                p
            } else {
                String::new()
            };
        let sent = seq
            .job
            .events
            .send(Event::Token {
                index: seq.job.index,
                text: piece,
                logprob,
            })
            .is_ok();
        if !sent {
            m.cancelled.inc();
            return true;
        }
        match finish {
            Some(f) => self.finish(seq, f),
            None => false,
        }
    }

    fn finish(&self, seq: &mut Seq, finish: Finish) -> bool {
        let _ = seq.job.events.send(Event::Done {
            index: seq.job.index,
            finish,
            completion_tokens: seq.ids.len(),
        });
        true
    }

    fn logprob(&self, row: &[f32], token: i64, k: usize) -> TokenLogprob {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let lse = max + row.iter().map(|&v| (v - max).exp()).sum::<f32>().ln();
        let mut idx: Vec<usize> = (0..row.len()).collect();
        let by = |a: &usize, b: &usize| row[*b].total_cmp(&row[*a]);
        if k > 0 && k < idx.len() {
            idx.select_nth_unstable_by(k - 1, by);
        }
        idx.truncate(k);
        idx.sort_unstable_by(by);
        TokenLogprob {
            token: self.decode_text(&[token]),
            logprob: row
                .get(token as usize)
                .map_or(f32::NEG_INFINITY, |v| v - lse),
            top: idx
                .into_iter()
                .map(|i| (self.decode_text(&[i as i64]), row[i] - lse))
                .collect(),
        }
    }
}

/// Groups prompts (by index into `lens`) into prefill passes: shortest first, each pass as many
/// as keep `count x longest` (its padded size) within `budget`; a prompt longer than the budget
/// gets a pass of its own.
fn prefill_groups(lens: &[usize], budget: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lens.len()).collect();
    order.sort_by_key(|&i| lens[i]);
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for i in order {
        match groups.last_mut() {
            // Sorted ascending: with i added, i is the longest of the pass.
            Some(g) if (g.len() + 1) * lens[i] <= budget => g.push(i),
            _ => groups.push(vec![i]),
        }
    }
    groups
}

/// Bytes at the end of `text` not to show yet: an incomplete character, or the start of a stop string.
fn held_back(text: &str, stop: &[String]) -> usize {
    if text.ends_with('\u{FFFD}') {
        // A byte-level token split a character; wait for the rest.
        return text.len() - text.trim_end_matches('\u{FFFD}').len();
    }
    let mut hold = 0;
    for s in stop {
        for (i, _) in s.char_indices().skip(1) {
            if text.ends_with(&s[..i]) {
                hold = hold.max(i);
            }
        }
    }
    hold
}

fn to_vec(t: &tch::Tensor) -> Vec<f32> {
    let t = t
        .to_kind(tch::Kind::Float)
        .to_device(tch::Device::Cpu)
        .reshape([-1]);
    Vec::<f32>::try_from(&t).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::{held_back, prefill_groups};

    #[test]
    fn prefill_passes_keep_padding_within_the_budget() {
        // One long prompt among short ones reads alone; the short ones read together.
        let mut lens = vec![16; 63];
        lens.insert(5, 1000);
        let groups = prefill_groups(&lens, 1024);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[1], vec![5]);
        assert_eq!(groups[0].len(), 63);
        for g in &groups {
            let longest = g.iter().map(|&i| lens[i]).max().unwrap_or(0);
            assert!(g.len() == 1 || g.len() * longest <= 1024);
        }
        // Every prompt is read exactly once; a prompt over the budget still reads.
        let lens = [3000, 10, 700, 400, 5];
        let mut all: Vec<usize> = prefill_groups(&lens, 1024).concat();
        all.sort_unstable();
        assert_eq!(all, vec![0, 1, 2, 3, 4]);
        assert!(prefill_groups(&lens, 1024).contains(&vec![0]));
    }

    #[test]
    fn holds_back_partial_stop_strings_and_characters() {
        let stop = vec!["\n\n".to_string(), "END".to_string()];
        assert_eq!(held_back("hello\n", &stop), 1);
        assert_eq!(held_back("hello EN", &stop), 2);
        assert_eq!(held_back("hello", &stop), 0);
        assert_eq!(held_back("caf\u{FFFD}", &stop), 3);
    }
}
