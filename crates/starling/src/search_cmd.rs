//! `starling index build|add|delete`, `starling search`: arguments → starling-search, with the
//! model wired in as the index's `Embedder`.

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use starling_model::{Pooling, PostEmbedder};
use starling_search::{BuildOptions, PostIndex, SearchMode, SearchOrder, SearchRequest};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The default pooling (see docs/ARCHITECTURE.md: chosen by `starling eval search`).
pub const DEFAULT_POOLING: &str = "mean";

/// Index subcommands.
#[derive(clap::Subcommand)]
pub enum IndexCommand {
    /// Index every post of a corpus that is not deleted (BM25; dense vectors too with --model).
    Build {
        /// Corpus directory.
        #[arg(long)]
        corpus: PathBuf,
        /// Index directory to create.
        #[arg(long, short)]
        out: PathBuf,
        /// Model (run or exported directory) whose embeddings go into an ANN graph.
        #[arg(long)]
        model: Option<PathBuf>,
        /// How hidden states become a vector: mean, weighted-mean or last.
        #[arg(long, default_value = DEFAULT_POOLING)]
        pooling: String,
    },
    /// Make posts searchable now: any post file the corpus stage reads (its deletion notices apply too).
    Add {
        /// Index directory.
        #[arg(long)]
        index: PathBuf,
        /// Model, when the index has dense vectors (default: the one it was built with).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Post files (v1.1/v2 JSON, archives, CSV, text).
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
    },
    /// Remove posts now, by id or by a deletion list (the corpus stage's `--deletions` format).
    Delete {
        /// Index directory.
        #[arg(long)]
        index: PathBuf,
        /// Deletion list files (one id per line; `#` comments).
        #[arg(long)]
        list: Vec<PathBuf>,
        /// Post ids.
        ids: Vec<String>,
    },
}

/// Options of `starling search`.
#[derive(clap::Args)]
pub struct SearchArgs {
    /// Index directory.
    #[arg(long)]
    pub index: PathBuf,
    /// bm25, dense (the model's embeddings) or hybrid (both fused by reciprocal rank).
    #[arg(long, default_value = "bm25")]
    pub mode: String,
    /// top (relevance x engagement x recency) or latest.
    #[arg(long, default_value = "top")]
    pub order: String,
    /// Results.
    #[arg(long, default_value_t = 10)]
    pub limit: usize,
    /// Model for dense and hybrid (default: the one the index was built with).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Print JSON lines instead of a timeline.
    #[arg(long)]
    pub json: bool,
    /// The query, e.g. `#rust from:jack -filter:replies since:2024-01-01` (quote it, or put it last).
    #[arg(required = true, num_args = 1.., allow_hyphen_values = true, trailing_var_arg = true)]
    pub query: Vec<String>,
}

/// Loads a model directory (run or export) as an embedder.
pub fn load_embedder(model: &Path, pooling: &str) -> Result<PostEmbedder> {
    load_embedder_replicated(model, pooling, 1)
}

/// [`load_embedder`] with `replicas` model copies, for that many concurrent callers: the trained
/// embedder in `<model>/embedder/` when there is one (`starling embed train`), else the model's
/// own pooled states.
pub fn load_embedder_replicated(
    model: &Path,
    pooling: &str,
    replicas: usize,
) -> Result<PostEmbedder> {
    let pooling = Pooling::parse(pooling)
        .with_context(|| format!("--pooling {pooling}: use mean, weighted-mean or last"))?;
    let starling_train::ModelDir { dir, weights } = starling_train::ModelDir::open(model)?;
    let (dir, weights) = starling_model::trained_embedder(&dir).unwrap_or((dir, weights));
    PostEmbedder::load_replicated(&dir, &weights, pooling, replicas)
        .with_context(|| format!("loading {} as an embedder", dir.display()))
}

/// The language model's own pooled states as the embedder, passing over a trained embedder.
pub fn load_lm_embedder(model: &Path, pooling: &str) -> Result<PostEmbedder> {
    let pooling = Pooling::parse(pooling)
        .with_context(|| format!("--pooling {pooling}: use mean, weighted-mean or last"))?;
    let starling_train::ModelDir { dir, weights } = starling_train::ModelDir::open(model)?;
    PostEmbedder::load(&dir, &weights, pooling)
        .with_context(|| format!("loading {} as an embedder", model.display()))
}

/// The embedder an opened index needs: `--model`, else the model recorded at build time.
fn index_embedder(idx: &PostIndex, model: Option<&Path>) -> Result<Option<PostEmbedder>> {
    let Some(d) = &idx.meta.dense else {
        return Ok(None);
    };
    let pooling = d.embedder.rsplit('/').next().unwrap_or(DEFAULT_POOLING);
    let path = match (model, &d.model) {
        (Some(m), _) => m.to_path_buf(),
        (None, Some(m)) => PathBuf::from(m),
        (None, None) => bail!("the index has dense vectors but records no model: pass --model"),
    };
    Ok(Some(load_embedder(&path, pooling)?))
}

/// A spinner with a message.
pub fn spinner(what: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template(&format!("{{spinner}} {what} {{msg}} [{{elapsed_precise}}]"))
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar
}

/// Runs an index subcommand.
pub fn index(cmd: &IndexCommand) -> Result<()> {
    match cmd {
        IndexCommand::Build {
            corpus,
            out,
            model,
            pooling,
        } => {
            let embedder = match model {
                Some(m) => Some(load_embedder(m, pooling)?),
                None => None,
            };
            let opts = BuildOptions {
                embedder: embedder
                    .as_ref()
                    .map(|e| e as &dyn starling_search::Embedder),
                model: model
                    .as_ref()
                    .map(|m| std::fs::canonicalize(m).unwrap_or_else(|_| m.clone()))
                    .map(|m| m.display().to_string()),
                reproducible: false,
            };
            let t = Instant::now();
            let bar = spinner("index");
            let meta = starling_search::build(corpus, out, &opts, &mut |n| {
                let rate = n as f64 / t.elapsed().as_secs_f64().max(1e-9);
                bar.set_message(format!("{n} posts · {rate:.0} posts/s"));
                bar.tick();
            })
            .with_context(|| format!("indexing {} into {}", corpus.display(), out.display()))?;
            bar.finish_and_clear();
            let secs = t.elapsed().as_secs_f64();
            println!(
                "index: {} posts in {:.1}s ({:.0} posts/s){} → {}",
                meta.posts,
                secs,
                meta.posts as f64 / secs.max(1e-9),
                meta.dense
                    .as_ref()
                    .map(|d| format!(", {}-d vectors ({})", d.dim, d.embedder))
                    .unwrap_or_default(),
                out.display()
            );
            Ok(())
        }
        IndexCommand::Add {
            index,
            model,
            inputs,
        } => add(index, model.as_deref(), inputs),
        IndexCommand::Delete { index, list, ids } => {
            let mut all = ids.clone();
            let mut authors = Vec::new();
            for l in list {
                let (posts, users) = starling_corpus::corpus::read_deletion_list(l)?;
                all.extend(posts);
                authors.extend(users);
            }
            if all.is_empty() && authors.is_empty() {
                bail!("nothing to delete: give post ids or --list FILE");
            }
            let idx = PostIndex::open(index)?;
            let t = Instant::now();
            let n = idx.delete(&all)?;
            let by_author = idx.delete_authors(&authors)?;
            let gone_ms = t.elapsed().as_secs_f64() * 1e3;
            idx.flush()?;
            println!(
                "index delete: {n} of {} ids were indexed, {by_author} posts of {} authors; all gone ({gone_ms:.0} ms to gone); {} posts left",
                all.len(),
                authors.len(),
                idx.len()
            );
            Ok(())
        }
    }
}

fn add(index: &Path, model: Option<&Path>, inputs: &[PathBuf]) -> Result<()> {
    let idx = PostIndex::open(index)?;
    let embedder = index_embedder(&idx, model)?;
    let mut u = starling_search::Updates::default();
    for input in inputs {
        u.read(input)
            .with_context(|| format!("reading {}", input.display()))?;
    }
    for q in &u.quarantined {
        eprintln!("  quarantined {}:{}: {}", q.file, q.line, q.reason);
    }
    let read = u.records();
    let (posts, deletions, user_deletions) = (&u.posts, &u.deletions, &u.user_deletions);
    let (quarantined, other) = (u.quarantined.len(), u.other);
    let t = Instant::now();
    let r = idx.add(
        posts,
        embedder
            .as_ref()
            .map(|e| e as &dyn starling_search::Embedder),
    )?;
    let visible_ms = t.elapsed().as_secs_f64() * 1e3;
    let gone = if deletions.is_empty() {
        0
    } else {
        idx.delete(deletions)?
    };
    let gone_by_author = idx.delete_authors(user_deletions)?;
    idx.flush()?;
    println!(
        "index add: {read} records read = {} posts ({} new, {} replaced, {} repeated in the batch; searchable after {visible_ms:.0} ms) + {} deletions ({gone} were indexed) + {} user deletions ({gone_by_author} posts) + {quarantined} quarantined + {other} other; {} posts in the index",
        posts.len(),
        r.added,
        r.replaced,
        r.repeated,
        deletions.len(),
        user_deletions.len(),
        idx.len()
    );
    Ok(())
}

/// Runs `starling search`.
pub fn search(a: &SearchArgs) -> Result<()> {
    let order = match a.order.as_str() {
        "top" => SearchOrder::Top,
        "latest" => SearchOrder::Latest,
        other => bail!("--order {other}: use top or latest"),
    };
    let mode = SearchMode::parse(&a.mode)
        .with_context(|| format!("--mode {}: use bm25, dense or hybrid", a.mode))?;
    let idx = PostIndex::open(&a.index)?;
    let embedder = if mode == SearchMode::Bm25 {
        None
    } else {
        if !idx.has_dense() {
            bail!(
                "{}: --mode {} needs dense vectors; this index was built without --model",
                a.index.display(),
                a.mode
            );
        }
        index_embedder(&idx, a.model.as_deref())?
    };
    let q = a.query.join(" ");
    let t = Instant::now();
    let hits = idx.search_with(&SearchRequest {
        query: &q,
        mode,
        order,
        limit: a.limit,
        embedder: embedder
            .as_ref()
            .map(|e| e as &dyn starling_search::Embedder),
    })?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    for h in &hits {
        if a.json {
            println!("{}", serde_json::to_string(h)?);
        } else {
            println!(
                "@{} · {} · ♥{} ↻{} 💬{} · {}\n  {}",
                h.author.as_deref().unwrap_or("?"),
                h.created_at.as_deref().unwrap_or("undated"),
                h.engagement[0],
                h.engagement[1],
                h.engagement[2],
                h.id,
                h.text.replace('\n', "\n  ")
            );
        }
    }
    eprintln!(
        "search: {} results in {ms:.1} ms ({} posts indexed, {})",
        hits.len(),
        idx.len(),
        a.mode
    );
    Ok(())
}
