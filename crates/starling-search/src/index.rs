//! The post index on tantivy: schema, the post-aware analyzer, building from a corpus, and BM25
//! search in Twitter's query language, ranked `top` (relevance × engagement × recency) or `latest`.

use crate::dense::{self, DenseIndex, DENSE_FILE};
use crate::query::{self, Filter, Query};
use serde::{Deserialize, Serialize};
use starling_corpus::{Corpus, Post};
use starling_embed::Embedder;
use std::collections::{HashMap, HashSet};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering as AtomicOrdering};
use std::sync::{Mutex, RwLock};
use tantivy::collector::DocSetCollector;
use tantivy::collector::TopDocs;
use tantivy::query::TermSetQuery;
use tantivy::query::{
    AllQuery, BooleanQuery, EmptyQuery, Occur, PhraseQuery, Query as TQuery, RangeQuery, TermQuery,
};
use tantivy::schema::{
    Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions, Value, FAST,
    INDEXED, STORED, STRING,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, LowerCaser, RemoveLongFilter, TextAnalyzer, Token, TokenStream, Tokenizer,
};
use tantivy::{
    DateTime, DocAddress, Index, IndexReader, IndexWriter, Order as SortOrder, TantivyDocument,
    Term,
};

/// Version of the index directory layout and schema.
pub const INDEX_VERSION: u32 = 3;
/// File beside tantivy's own that says what built the index.
pub const META_FILE: &str = "starling-index.json";
/// Name under which the post analyzer is registered.
pub const POST_ANALYZER: &str = "post";
/// Name under which the URL analyzer is registered.
pub const URL_ANALYZER: &str = "url";

/// Errors of the search stage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The query does not parse.
    #[error(transparent)]
    Query(#[from] query::QueryError),
    /// A file could not be read or written.
    #[error(transparent)]
    Io(#[from] starling_artifacts::IoError),
    /// The index (or its input) is not what this build can use.
    #[error("{0}")]
    Format(String),
    /// The corpus could not be read.
    #[error(transparent)]
    Corpus(#[from] starling_corpus::Error),
    /// tantivy failed.
    #[error("tantivy: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    /// The embedder failed.
    #[error(transparent)]
    Embed(#[from] starling_embed::EmbedError),
}

impl Error {
    /// An I/O error about `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io(starling_artifacts::IoError::new(path.as_ref(), source))
    }
}

/// Result alias of the search stage.
pub type Result<T> = std::result::Result<T, Error>;

/// `starling-index.json`: what built the index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexMeta {
    /// Layout version ([`INDEX_VERSION`]).
    pub version: u32,
    /// The starling version that built it.
    pub starling: String,
    /// Posts indexed.
    pub posts: u64,
    /// Newest post time (Unix seconds): "now" for the recency decay of an archive.
    pub newest: Option<i64>,
    /// SHA-256 of the corpus manifest it was built from.
    pub corpus_manifest_sha256: String,
    /// The dense vectors, when the index was built with a model.
    #[serde(default)]
    pub dense: Option<DenseMeta>,
}

/// What made an index's dense vectors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DenseMeta {
    /// [`Embedder::id`] of the embedder: queries must be embedded by the same one.
    pub embedder: String,
    /// Vector dimension.
    pub dim: usize,
    /// The model directory it was given as (for commands that load it again).
    pub model: Option<String>,
    /// The ANN structure and its parameters.
    pub ann: String,
}

/// How an index is built.
#[derive(Default)]
pub struct BuildOptions<'a> {
    /// Embeds every post into the dense index when given.
    pub embedder: Option<&'a dyn Embedder>,
    /// The model directory behind `embedder`, recorded in the index.
    pub model: Option<String>,
}

/// Which retrieval answers a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchMode {
    /// BM25 over the post-aware analyzer, with every operator.
    Bm25,
    /// Nearest neighbours of the query's embedding, filtered by its operators.
    Dense,
    /// BM25 and dense fused by reciprocal rank ([`crate::dense::rrf`]).
    Hybrid,
}

impl SearchMode {
    /// Parses `bm25`, `dense` or `hybrid`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "bm25" => Some(Self::Bm25),
            "dense" => Some(Self::Dense),
            "hybrid" => Some(Self::Hybrid),
            _ => None,
        }
    }
}

/// A search: query text, mode, order and how many results.
#[derive(Clone, Copy)]
pub struct SearchRequest<'a> {
    /// Query in Twitter's advanced-search language.
    pub query: &'a str,
    /// Retrieval mode.
    pub mode: SearchMode,
    /// Result order.
    pub order: SearchOrder,
    /// Most results.
    pub limit: usize,
    /// Embeds the query (dense and hybrid modes); must be the index's embedder.
    pub embedder: Option<&'a dyn Embedder>,
}

/// Candidates each ranked list contributes to hybrid fusion (and dense search with a filter).
pub const FUSION_DEPTH: usize = 100;

/// How results are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchOrder {
    /// Relevance × engagement × recency ([`top_score`]).
    Top,
    /// Newest first.
    Latest,
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    /// Post id.
    pub id: String,
    /// Final score (`top`) or Unix seconds (`latest`).
    pub score: f64,
    /// Author handle.
    pub author: Option<String>,
    /// Creation time, RFC 3339.
    pub created_at: Option<String>,
    /// The post's text.
    pub text: String,
    /// Likes, reposts, replies, quotes.
    pub engagement: [u64; 4],
}

/// The schema's fields.
#[derive(Debug, Clone, Copy)]
struct Fields {
    id: Field,
    id_num: Field,
    key: Field,
    text: Field,
    author: Field,
    author_id: Field,
    created_at: Field,
    lang: Field,
    likes: Field,
    reposts: Field,
    replies: Field,
    quotes: Field,
    flags: Field,
    hashtags: Field,
    mentions: Field,
    cashtags: Field,
    urls: Field,
    domains: Field,
    reply_to: Field,
    reply_to_user: Field,
    quote_of: Field,
    repost_of: Field,
    conversation: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text_opts = |analyzer: &str| {
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(analyzer)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        )
    };
    let num = || {
        NumericOptions::default()
            .set_indexed()
            .set_fast()
            .set_stored()
    };
    let f = Fields {
        id: b.add_text_field("id", STRING | STORED),
        id_num: b.add_u64_field("id_num", INDEXED | FAST),
        key: b.add_u64_field("key", INDEXED | FAST),
        text: b.add_text_field("text", text_opts(POST_ANALYZER).set_stored()),
        author: b.add_text_field("author", STRING | STORED),
        author_id: b.add_text_field("author_id", STRING | STORED),
        created_at: b.add_date_field("created_at", INDEXED | FAST | STORED),
        lang: b.add_text_field("lang", STRING | STORED),
        likes: b.add_u64_field("likes", num()),
        reposts: b.add_u64_field("reposts", num()),
        replies: b.add_u64_field("replies", num()),
        quotes: b.add_u64_field("quotes", num()),
        flags: b.add_text_field("flags", STRING),
        hashtags: b.add_text_field("hashtags", STRING | STORED),
        mentions: b.add_text_field("mentions", STRING | STORED),
        cashtags: b.add_text_field("cashtags", STRING | STORED),
        urls: b.add_text_field("urls", text_opts(URL_ANALYZER).set_stored()),
        domains: b.add_text_field("domains", STRING | STORED),
        reply_to: b.add_text_field("reply_to", STRING | STORED),
        reply_to_user: b.add_text_field("reply_to_user", STRING | STORED),
        quote_of: b.add_text_field("quote_of", STRING | STORED),
        repost_of: b.add_text_field("repost_of", STRING | STORED),
        conversation: b.add_text_field("conversation_id", STRING | STORED),
    };
    (b.build(), f)
}

/// Splits post text into words, keeping `#tags`, `@mentions`, `$CASH` and URLs whole.
#[derive(Clone, Default)]
pub struct PostTokenizer {
    token: Token,
    url_parts: bool,
}

impl PostTokenizer {
    /// The URL variant: splits on every non-alphanumeric, so `url:example.com` matches its parts.
    pub fn for_urls() -> Self {
        Self {
            token: Token::default(),
            url_parts: true,
        }
    }
}

/// Byte spans of the tokens of `text`.
fn spans(text: &str, url_parts: bool) -> Vec<(usize, usize)> {
    let word = |c: char| (c.is_alphanumeric() || c == '_') && !is_apostrophe(c);
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let end_of = |i: usize| chars.get(i).map(|c| c.0).unwrap_or(text.len());
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        if url_parts {
            if c.is_alphanumeric() {
                let s = i;
                while i < chars.len() && chars[i].1.is_alphanumeric() {
                    i += 1;
                }
                out.push((chars[s].0, end_of(i)));
            } else {
                i += 1;
            }
            continue;
        }
        let rest = &text[at..];
        let lower_start: String = rest.chars().take(8).collect::<String>().to_lowercase();
        if lower_start.starts_with("http://") || lower_start.starts_with("https://") {
            let s = i;
            while i < chars.len() && !chars[i].1.is_whitespace() {
                i += 1;
            }
            let mut e = i;
            while e > s + 1
                && matches!(
                    chars[e - 1].1,
                    '.' | ',' | '!' | '?' | ';' | ':' | ')' | '"' | '\''
                )
            {
                e -= 1;
            }
            out.push((chars[s].0, end_of(e)));
            continue;
        }
        let sigil = matches!(c, '#' | '@' | '$' | '＃' | '＠');
        let next_ok = chars.get(i + 1).is_some_and(|n| {
            if c == '$' {
                n.1.is_ascii_alphabetic()
            } else {
                word(n.1)
            }
        });
        if (sigil && next_ok) || word(c) {
            let s = i;
            i += 1;
            while i < chars.len() {
                let ch = chars[i].1;
                // An apostrophe inside a word ("don't") stays in it.
                let inner_apostrophe = is_apostrophe(ch)
                    && !sigil
                    && chars.get(i + 1).is_some_and(|n| n.1.is_alphabetic());
                if word(ch) || inner_apostrophe {
                    i += 1;
                } else {
                    break;
                }
            }
            out.push((chars[s].0, end_of(i)));
            // `@CNN's`, `#Tag’s`: the possessive is no word of its own.
            let possessive = chars.get(i).is_some_and(|c| is_apostrophe(c.1))
                && chars.get(i + 1).is_some_and(|c| matches!(c.1, 's' | 'S'))
                && !chars.get(i + 2).is_some_and(|c| word(c.1));
            if sigil && possessive {
                i += 2;
            }
            continue;
        }
        i += 1;
    }
    out
}

/// Apostrophes as typed: ASCII, typographic (’ ‘), modifier letter (ʼ), full-width, grave, acute.
fn is_apostrophe(c: char) -> bool {
    matches!(c, '\'' | '’' | '‘' | 'ʼ' | '＇' | '`' | '´')
}

/// The token stream of [`PostTokenizer`].
pub struct PostTokenStream<'a> {
    text: &'a str,
    spans: Vec<(usize, usize)>,
    next: usize,
    token: &'a mut Token,
}

impl Tokenizer for PostTokenizer {
    type TokenStream<'a> = PostTokenStream<'a>;
    fn token_stream<'a>(&'a mut self, text: &'a str) -> PostTokenStream<'a> {
        self.token.reset();
        PostTokenStream {
            text,
            spans: spans(text, self.url_parts),
            next: 0,
            token: &mut self.token,
        }
    }
}

impl TokenStream for PostTokenStream<'_> {
    fn advance(&mut self) -> bool {
        let Some(&(from, to)) = self.spans.get(self.next) else {
            return false;
        };
        self.next += 1;
        self.token.text.clear();
        // Fold apostrophe variants and full-width sigils to their ASCII forms.
        for c in self.text[from..to].chars() {
            self.token.text.push(match c {
                c if is_apostrophe(c) => '\'',
                '＃' => '#',
                '＠' => '@',
                other => other,
            });
        }
        // English possessives: `Hillary's` is found by `hillary` (and `China’s` by `china`).
        let t = &self.token.text;
        let plain = !t.starts_with(['#', '@', '$']) && !t.contains("://");
        if plain && t.len() > 2 && (t.ends_with("'s") || t.ends_with("'S")) {
            let keep = t.len() - 2;
            self.token.text.truncate(keep);
        }
        self.token.offset_from = from;
        self.token.offset_to = to;
        self.token.position = self.next - 1;
        true
    }

    fn token(&self) -> &Token {
        self.token
    }

    fn token_mut(&mut self) -> &mut Token {
        self.token
    }
}

/// The analyzer of post text: [`PostTokenizer`], lower-casing, ASCII folding, tokens ≤ 100 bytes.
pub fn post_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(PostTokenizer::default())
        .filter(RemoveLongFilter::limit(100))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

fn url_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(PostTokenizer::for_urls())
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

/// The analysed tokens of `text`.
pub fn analyze(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut s = analyzer.token_stream(text);
    let mut out = Vec::new();
    while s.advance() {
        out.push(s.token().text.clone());
    }
    out
}

fn register(index: &Index) {
    index.tokenizers().register(POST_ANALYZER, post_analyzer());
    index.tokenizers().register(URL_ANALYZER, url_analyzer());
}

/// The host of a URL as written (`https://www.Example.com/x` → `example.com`).
fn domain(url: &str) -> Option<String> {
    let rest = url.split_once("://").map(|x| x.1).unwrap_or(url);
    let host = rest.split(['/', '?', '#']).next()?.split('@').next_back()?;
    let host = host.split(':').next()?.to_lowercase();
    let host = host.strip_prefix("www.").unwrap_or(&host).to_string();
    (!host.is_empty()).then_some(host)
}

fn document(f: &Fields, p: &Post) -> TantivyDocument {
    let mut d = TantivyDocument::new();
    d.add_text(f.id, &p.id);
    d.add_u64(f.key, dense::key(&p.id));
    if let Ok(n) = p.id.parse::<u64>() {
        d.add_u64(f.id_num, n);
    }
    d.add_text(f.text, &p.text);
    if let Some(h) = &p.author_handle {
        d.add_text(f.author, h.to_lowercase());
    }
    if let Some(a) = &p.author_id {
        d.add_text(f.author_id, a);
    }
    if let Some(t) = p.created_at {
        d.add_date(f.created_at, DateTime::from_timestamp_secs(t.timestamp()));
    }
    d.add_text(f.lang, p.lang.to_lowercase());
    let e = p.engagement;
    d.add_u64(f.likes, e.likes);
    d.add_u64(f.reposts, e.reposts);
    d.add_u64(f.replies, e.replies);
    d.add_u64(f.quotes, e.quotes);
    let ents = &p.entities;
    let flags = [
        // The platform's definition: a reply to a post, or to a user (a post that starts with
        // a mention carries `in_reply_to_user_id` without a status id).
        (
            p.refs.reply_to.is_some() || p.refs.reply_to_user.is_some(),
            Filter::Replies,
        ),
        (p.refs.repost_of.is_some(), Filter::Retweets),
        (p.refs.quote_of.is_some(), Filter::Quote),
        (!ents.urls.is_empty(), Filter::Links),
        (p.has_media, Filter::Media),
        (!ents.mentions.is_empty(), Filter::Mentions),
        (!ents.hashtags.is_empty(), Filter::Hashtags),
    ];
    for (on, k) in flags {
        if on {
            d.add_text(f.flags, k.name());
        }
    }
    for h in &ents.hashtags {
        d.add_text(f.hashtags, h.text.to_lowercase());
    }
    for m in &ents.mentions {
        d.add_text(f.mentions, m.text.to_lowercase());
    }
    for c in &ents.cashtags {
        d.add_text(f.cashtags, c.text.to_lowercase());
    }
    for u in &ents.urls {
        d.add_text(f.urls, &u.text);
        if let Some(dom) = domain(&u.text) {
            d.add_text(f.domains, dom);
        }
    }
    let r = &p.refs;
    for (field, v) in [
        (f.reply_to, &r.reply_to),
        (f.quote_of, &r.quote_of),
        (f.repost_of, &r.repost_of),
        (f.conversation, &r.conversation_id),
    ] {
        if let Some(v) = v {
            d.add_text(field, v);
        }
    }
    if let Some(u) = &r.reply_to_handle {
        d.add_text(f.reply_to_user, u.to_lowercase());
    }
    d
}

/// Builds the index of every written post of the corpus at `corpus` into `out`, through a
/// temporary directory renamed at the end (a failed build leaves nothing at `out`).
pub fn build(
    corpus: &Path,
    out: &Path,
    opts: &BuildOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<IndexMeta> {
    let c = Corpus::open(corpus)?;
    let (sha, _) = starling_artifacts::sha256_file(&corpus.join("manifest.json"))?;
    build_from(
        &mut |sink: &mut dyn FnMut(Post)| Ok(c.for_each_post(sink)?),
        &sha,
        out,
        opts,
        progress,
    )
}

/// A source of posts for [`build_from`]: calls the sink once per post.
pub type PostSource<'a> = dyn FnMut(&mut dyn FnMut(Post)) -> Result<()> + 'a;

/// Builds an index of the posts `source` yields (see [`build`]); `source_sha256` identifies them.
pub fn build_from(
    source: &mut PostSource,
    source_sha256: &str,
    out: &Path,
    opts: &BuildOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<IndexMeta> {
    if out.exists() {
        return Err(Error::Format(format!(
            "{}: already exists; remove it or choose another --out",
            out.display()
        )));
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "index".into());
    let tmp = parent.join(format!(".{name}.building"));
    let _ = std::fs::remove_dir_all(&tmp);
    let r = build_into(source, source_sha256, &tmp, opts, progress);
    match r {
        Ok(meta) => {
            std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))?;
            Ok(meta)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

/// Builds an index of posts held in memory (see [`build_from`]).
pub fn build_posts(
    posts: &[Post],
    source_sha256: &str,
    out: &Path,
    opts: &BuildOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<IndexMeta> {
    build_from(
        &mut |sink: &mut dyn FnMut(Post)| {
            posts.iter().cloned().for_each(&mut *sink);
            Ok(())
        },
        source_sha256,
        out,
        opts,
        progress,
    )
}

/// Posts embedded per call while building.
const EMBED_CHUNK: usize = 256;

fn build_into(
    source: &mut PostSource,
    source_sha256: &str,
    dir: &Path,
    opts: &BuildOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<IndexMeta> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let (schema, f) = schema();
    let index = Index::create_in_dir(dir, schema)?;
    register(&index);
    let mut writer = index.writer::<TantivyDocument>(200_000_000)?;
    let mut dense = match opts.embedder {
        Some(e) => Some(DenseIndex::new(e.dim())?),
        None => None,
    };
    let mut pending: Vec<(String, String)> = Vec::new();
    let embed_pending =
        |pending: &mut Vec<(String, String)>, dense: &mut Option<DenseIndex>| -> Result<()> {
            if let (Some(e), Some(d)) = (opts.embedder, dense.as_mut()) {
                let texts: Vec<&str> = pending.iter().map(|(_, t)| t.as_str()).collect();
                let vecs = e.embed(&texts)?;
                let items: Vec<(u64, Vec<f32>)> = pending
                    .iter()
                    .zip(vecs)
                    .map(|((id, _), v)| (dense::key(id), v))
                    .collect();
                d.add(&items)?;
            }
            pending.clear();
            Ok(())
        };
    let mut posts = 0u64;
    let mut newest: Option<i64> = None;
    let mut failed: Option<Error> = None;
    source(&mut |p: Post| {
        if failed.is_some() {
            return;
        }
        if let Some(t) = p.created_at {
            newest = Some(newest.map_or(t.timestamp(), |n| n.max(t.timestamp())));
        }
        if let Err(e) = writer.add_document(document(&f, &p)) {
            failed = Some(e.into());
            return;
        }
        if dense.is_some() {
            pending.push((p.id.clone(), p.text.clone()));
            if pending.len() >= EMBED_CHUNK {
                if let Err(e) = embed_pending(&mut pending, &mut dense) {
                    failed = Some(e);
                    return;
                }
            }
        }
        posts += 1;
        if posts.is_multiple_of(if dense.is_some() { 1_000 } else { 10_000 }) {
            progress(posts);
        }
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    embed_pending(&mut pending, &mut dense)?;
    if posts == 0 {
        return Err(Error::Format(
            "the corpus has no posts to index".to_string(),
        ));
    }
    writer.commit()?;
    writer.wait_merging_threads()?;
    progress(posts);
    let dense_meta = match (opts.embedder, &dense) {
        (Some(e), Some(d)) => {
            d.save(&dir.join(DENSE_FILE))?;
            Some(DenseMeta {
                embedder: e.id().to_string(),
                dim: e.dim(),
                model: opts.model.clone(),
                ann: format!(
                    "usearch {} HNSW, cosine, f32, M={}, efConstruction={}, ef={}",
                    usearch::version(),
                    dense::CONNECTIVITY,
                    dense::EXPANSION_ADD,
                    dense::EXPANSION_SEARCH
                ),
            })
        }
        _ => None,
    };
    let meta = IndexMeta {
        version: INDEX_VERSION,
        starling: env!("CARGO_PKG_VERSION").to_string(),
        posts,
        newest,
        corpus_manifest_sha256: source_sha256.to_string(),
        dense: dense_meta,
    };
    write_meta(dir, &meta)?;
    Ok(meta)
}

fn write_meta(dir: &Path, meta: &IndexMeta) -> Result<()> {
    let json = serde_json::to_vec_pretty(meta).map_err(|e| Error::Format(e.to_string()))?;
    Ok(starling_artifacts::write_atomic(
        &dir.join(META_FILE),
        &json,
    )?)
}

/// An opened index: searched by any number of threads while posts are added and deleted.
pub struct PostIndex {
    index: Index,
    reader: IndexReader,
    fields: Fields,
    dir: PathBuf,
    dense: Option<RwLock<DenseIndex>>,
    writer: Mutex<Option<IndexWriter>>,
    newest: AtomicI64,
    /// What built it.
    pub meta: IndexMeta,
}

/// What [`PostIndex::add`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddReport {
    /// Posts new to the index.
    pub added: usize,
    /// Posts that were already there and were replaced.
    pub replaced: usize,
    /// Copies of an id that a later copy in the same batch superseded
    /// (`added + replaced + repeated` = posts given; the index grows by `added`).
    pub repeated: usize,
}

impl PostIndex {
    /// Opens an index directory, checking that this build can read it.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join(META_FILE);
        let bytes = std::fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::Format(format!(
                    "{}: not a starling index (no {META_FILE}); build one with `starling index build`",
                    dir.display()
                ))
            } else {
                Error::io(&path, e)
            }
        })?;
        let meta: IndexMeta = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Format(format!("{}: {e}", path.display())))?;
        if meta.version != INDEX_VERSION {
            return Err(Error::Format(format!(
                "{}: index version {} (built by starling {}); this build reads version {INDEX_VERSION}: rebuild it",
                dir.display(),
                meta.version,
                meta.starling
            )));
        }
        let index = Index::open_in_dir(dir)?;
        register(&index);
        let (_, fields) = schema();
        let reader = index.reader()?;
        let dense = match &meta.dense {
            Some(d) => Some(RwLock::new(DenseIndex::load(&dir.join(DENSE_FILE), d.dim)?)),
            None => None,
        };
        Ok(Self {
            index,
            reader,
            fields,
            dir: dir.to_path_buf(),
            dense,
            writer: Mutex::new(None),
            newest: AtomicI64::new(meta.newest.unwrap_or(i64::MIN)),
            meta,
        })
    }

    /// Posts in the index.
    pub fn len(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// True when the index holds no posts.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when the index has dense vectors (dense and hybrid modes work).
    pub fn has_dense(&self) -> bool {
        self.dense.is_some()
    }

    /// The tantivy query for a parsed query.
    pub fn to_tantivy(&self, q: &Query) -> Box<dyn TQuery> {
        let mut post = post_analyzer();
        let mut url = url_analyzer();
        translate(&self.fields, q, &mut post, &mut url).unwrap_or_else(|| Box::new(AllQuery))
    }

    /// Searches with a query in Twitter's language by BM25; `limit` results in `order`.
    pub fn search(&self, text: &str, order: SearchOrder, limit: usize) -> Result<Vec<Hit>> {
        self.search_with(&SearchRequest {
            query: text,
            mode: SearchMode::Bm25,
            order,
            limit,
            embedder: None,
        })
    }

    /// Searches in any mode: BM25, dense (the query's words embedded, its operators filtering)
    /// or hybrid (both fused by reciprocal rank). `latest` orders the mode's best `limit` by time.
    pub fn search_with(&self, r: &SearchRequest) -> Result<Vec<Hit>> {
        let q = query::parse(r.query)?;
        let limit = r.limit.max(1);
        if r.mode == SearchMode::Bm25 {
            return self.bm25(&q, r.order, limit);
        }
        let depth = if r.mode == SearchMode::Hybrid {
            limit.max(FUSION_DEPTH)
        } else {
            limit
        };
        let dense = self.dense_search(&q, r.embedder, depth)?;
        let mut hits = match r.mode {
            SearchMode::Dense => dense,
            _ => {
                let bm25 = self.bm25(&q, SearchOrder::Top, depth)?;
                let lists = [
                    bm25.iter().map(|h| dense::key(&h.id)).collect::<Vec<_>>(),
                    dense.iter().map(|h| dense::key(&h.id)).collect(),
                ];
                let mut by_key: std::collections::HashMap<u64, Hit> = bm25
                    .into_iter()
                    .chain(dense)
                    .map(|h| (dense::key(&h.id), h))
                    .collect();
                dense::rrf(&lists)
                    .into_iter()
                    .take(limit)
                    .filter_map(|(k, score)| {
                        by_key.remove(&k).map(|mut h| {
                            h.score = score;
                            h
                        })
                    })
                    .collect()
            }
        };
        hits.truncate(limit);
        if r.order == SearchOrder::Latest {
            hits.sort_by(|a, b| b.created_at.cmp(&a.created_at));
        }
        Ok(hits)
    }

    fn check_embedder<'e>(&self, e: Option<&'e dyn Embedder>) -> Result<Option<&'e dyn Embedder>> {
        let Some(meta) = &self.meta.dense else {
            return Ok(None);
        };
        let e = e.ok_or_else(|| {
            Error::Format(format!(
                "{}: the index has dense vectors from embedder {}; this needs that model to embed with",
                self.dir.display(),
                meta.embedder
            ))
        })?;
        if e.id() != meta.embedder || e.dim() != meta.dim {
            return Err(Error::Format(format!(
                "{}: the index was built from another model (embedder {}, {} dimensions); the model given is {} ({} dimensions): use the model it was built with, or rebuild",
                self.dir.display(),
                meta.embedder,
                meta.dim,
                e.id(),
                e.dim()
            )));
        }
        Ok(Some(e))
    }

    fn dense_search(
        &self,
        q: &Query,
        embedder: Option<&dyn Embedder>,
        depth: usize,
    ) -> Result<Vec<Hit>> {
        let Some(dense) = &self.dense else {
            return Err(Error::Format(format!(
                "{}: the index has no dense vectors (built without --model): use --mode bm25 or rebuild with --model",
                self.dir.display()
            )));
        };
        let e = self
            .check_embedder(embedder)?
            .ok_or_else(|| Error::Format("dense search needs the index's model".to_string()))?;
        let parts = q.dense_parts();
        if parts.text.trim().is_empty() {
            // Nothing to embed (only operators): BM25 answers exactly the same set.
            return self.bm25(q, SearchOrder::Top, depth);
        }
        let searcher = self.reader.searcher();
        let allowed = match &parts.filter {
            None => None,
            Some(f) => {
                let tq = self.to_tantivy(f);
                let docs = searcher.search(&tq, &DocSetCollector)?;
                let mut keys = HashSet::with_capacity(docs.len());
                let mut cols = std::collections::HashMap::new();
                for a in docs {
                    let col = match cols.entry(a.segment_ord) {
                        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::hash_map::Entry::Vacant(e) => e.insert(
                            searcher
                                .segment_reader(a.segment_ord)
                                .fast_fields()
                                .u64("key")?
                                .first_or_default_col(0),
                        ),
                    };
                    keys.insert(col.get_val(a.doc_id));
                }
                Some(keys)
            }
        };
        let v = e
            .embed(&[parts.text.as_str()])?
            .pop()
            .ok_or_else(|| Error::Format("the embedder returned no vector".into()))?;
        let found = {
            let d = dense
                .read()
                .map_err(|_| Error::Format("the dense index lock is poisoned".into()))?;
            d.search(&v, depth, allowed.as_ref())?
        };
        if found.is_empty() {
            return Ok(Vec::new());
        }
        let terms: Vec<Term> = found
            .iter()
            .map(|(k, _)| Term::from_field_u64(self.fields.key, *k))
            .collect();
        let addrs = searcher.search(&TermSetQuery::new(terms), &DocSetCollector)?;
        let mut by_key = std::collections::HashMap::with_capacity(addrs.len());
        for a in addrs {
            let d: TantivyDocument = searcher.doc(a)?;
            let h = self.hit(&d, 0.0);
            by_key.insert(dense::key(&h.id), h);
        }
        Ok(found
            .into_iter()
            .filter_map(|(k, sim)| {
                by_key.remove(&k).map(|mut h| {
                    h.score = f64::from(sim);
                    h
                })
            })
            .collect())
    }

    fn bm25(&self, q: &Query, order: SearchOrder, limit: usize) -> Result<Vec<Hit>> {
        let tq = self.to_tantivy(q);
        let searcher = self.reader.searcher();
        let now = self.newest.load(AtomicOrdering::Relaxed);
        let now = (now != i64::MIN).then_some(now);
        let addrs: Vec<(f64, DocAddress)> = match order {
            SearchOrder::Latest => {
                let by_time = |query: &dyn TQuery| -> Result<Vec<(f64, DocAddress)>> {
                    Ok(searcher
                        .search(
                            query,
                            &TopDocs::with_limit(limit)
                                .order_by_fast_field::<DateTime>("created_at", SortOrder::Desc),
                        )?
                        .into_iter()
                        .map(|(t, a)| {
                            (
                                t.map(|t| t.into_timestamp_secs() as f64)
                                    .unwrap_or(f64::NAN),
                                a,
                            )
                        })
                        .collect())
                };
                // The newest matches are found in a recent window first (as Earlybird searches
                // its newest segment first); when a window holds `limit` of them, nothing older
                // can be among the newest `limit`.
                let mut found = None;
                if let Some(now) = now {
                    for window in LATEST_WINDOWS_S {
                        let since = Term::from_field_date_for_search(
                            self.fields.created_at,
                            DateTime::from_timestamp_secs(now - window),
                        );
                        let windowed = BooleanQuery::new(vec![
                            (Occur::Must, tq.box_clone()),
                            (
                                Occur::Must,
                                Box::new(RangeQuery::new(Bound::Included(since), Bound::Unbounded)),
                            ),
                        ]);
                        let r = by_time(&windowed)?;
                        if r.len() >= limit {
                            found = Some(r);
                            break;
                        }
                    }
                }
                match found {
                    Some(r) => r,
                    None => by_time(tq.as_ref())?,
                }
            }
            SearchOrder::Top if !q.dense_parts().text.trim().is_empty() => {
                // Words to score: BM25's best TOP_RERANK_DEPTH (block-max WAND skips the rest)
                // re-ranked by engagement and recency.
                let cands = searcher.search(
                    &tq,
                    &TopDocs::with_limit(TOP_RERANK_DEPTH.max(limit)).order_by_score(),
                )?;
                let mut scorers: std::collections::HashMap<
                    u32,
                    Box<dyn Fn(tantivy::DocId, f32) -> f64>,
                > = std::collections::HashMap::new();
                let mut ranked: Vec<(f64, DocAddress)> = Vec::with_capacity(cands.len());
                for (bm25, a) in cands {
                    let f = scorers.entry(a.segment_ord).or_insert_with(|| {
                        Box::new(top_scorer(searcher.segment_reader(a.segment_ord), now))
                    });
                    ranked.push((f(a.doc_id, bm25), a));
                }
                ranked.sort_by(|x, y| y.0.total_cmp(&x.0));
                ranked.truncate(limit);
                ranked
            }
            SearchOrder::Top => searcher.search(
                &tq,
                &TopDocs::with_limit(limit)
                    .tweak_score(move |seg: &tantivy::SegmentReader| top_scorer(seg, now)),
            )?,
        };
        let mut hits = Vec::with_capacity(addrs.len());
        for (score, addr) in addrs {
            let d: TantivyDocument = searcher.doc(addr)?;
            hits.push(self.hit(&d, score));
        }
        Ok(hits)
    }

    fn with_writer<T>(&self, f: impl FnOnce(&mut IndexWriter) -> Result<T>) -> Result<T> {
        let mut guard = self
            .writer
            .lock()
            .map_err(|_| Error::Format("the index writer lock is poisoned".into()))?;
        if guard.is_none() {
            let w = self
                .index
                .writer::<TantivyDocument>(50_000_000)
                .map_err(|e| match e {
                    tantivy::TantivyError::LockFailure(..) => Error::Format(format!(
                        "{}: another process is writing to this index; try again when it is done",
                        self.dir.display()
                    )),
                    e => e.into(),
                })?;
            *guard = Some(w);
        }
        match guard.as_mut() {
            Some(w) => f(w),
            None => Err(Error::Format("no index writer".into())),
        }
    }

    fn contains_id(&self, id: &str) -> Result<bool> {
        let searcher = self.reader.searcher();
        Ok(searcher.doc_freq(&Term::from_field_text(self.fields.id, id))? > 0)
    }

    /// Makes posts searchable now (a post already there is replaced; an id repeated within
    /// `posts` counts once, its last copy kept); `embedder` is required when the index has dense
    /// vectors. Returns when a query would find them.
    pub fn add(&self, posts: &[Post], embedder: Option<&dyn Embedder>) -> Result<AddReport> {
        let embedder = self.check_embedder(embedder)?;
        let given = posts.len();
        // The last copy of each id, in first-seen order.
        let mut last: HashMap<&str, usize> = HashMap::with_capacity(posts.len());
        for (i, p) in posts.iter().enumerate() {
            last.insert(p.id.as_str(), i);
        }
        let posts: Vec<&Post> = posts
            .iter()
            .enumerate()
            .filter(|(i, p)| last.get(p.id.as_str()) == Some(i))
            .map(|(_, p)| p)
            .collect();
        let mut report = AddReport {
            repeated: given - posts.len(),
            ..AddReport::default()
        };
        let vectors = match embedder {
            Some(e) => {
                let texts: Vec<&str> = posts.iter().map(|p| p.text.as_str()).collect();
                Some(e.embed(&texts)?)
            }
            None => None,
        };
        self.with_writer(|w| {
            // Counted under the writer lock, so concurrent adds of one id count it new once.
            for p in &posts {
                if self.contains_id(&p.id)? {
                    report.replaced += 1;
                } else {
                    report.added += 1;
                }
            }
            for p in &posts {
                w.delete_term(Term::from_field_text(self.fields.id, &p.id));
                w.add_document(document(&self.fields, p))?;
            }
            w.commit()?;
            self.reader.reload()?;
            Ok(())
        })?;
        if let (Some(dense), Some(vectors)) = (&self.dense, vectors) {
            let items: Vec<(u64, Vec<f32>)> = posts
                .iter()
                .zip(vectors)
                .map(|(p, v)| (dense::key(&p.id), v))
                .collect();
            dense
                .write()
                .map_err(|_| Error::Format("the dense index lock is poisoned".into()))?
                .add(&items)?;
        }
        for t in posts.iter().filter_map(|p| p.created_at) {
            self.newest
                .fetch_max(t.timestamp(), AtomicOrdering::Relaxed);
        }
        Ok(report)
    }

    /// Removes posts by id at once; returns how many were in the index (an id given twice
    /// counts once).
    pub fn delete(&self, ids: &[String]) -> Result<usize> {
        let mut seen = HashSet::with_capacity(ids.len());
        let ids: Vec<&String> = ids.iter().filter(|id| seen.insert(id.as_str())).collect();
        let present = self.with_writer(|w| {
            let mut present = 0;
            for id in &ids {
                if self.contains_id(id)? {
                    present += 1;
                }
            }
            for id in &ids {
                w.delete_term(Term::from_field_text(self.fields.id, id));
            }
            w.commit()?;
            self.reader.reload()?;
            Ok(present)
        })?;
        if let Some(dense) = &self.dense {
            let mut d = dense
                .write()
                .map_err(|_| Error::Format("the dense index lock is poisoned".into()))?;
            for id in ids {
                d.remove(dense::key(id))?;
            }
        }
        Ok(present)
    }

    /// Removes every post of these authors (by author id, as deletion lists' `user:ID` lines give
    /// them); returns how many posts went.
    pub fn delete_authors(&self, author_ids: &[String]) -> Result<usize> {
        let searcher = self.reader.searcher();
        let terms: Vec<Term> = author_ids
            .iter()
            .map(|a| Term::from_field_text(self.fields.author_id, a))
            .collect();
        let docs = searcher.search(&TermSetQuery::new(terms), &DocSetCollector)?;
        let mut ids = Vec::with_capacity(docs.len());
        for a in docs {
            let d: TantivyDocument = searcher.doc(a)?;
            if let Some(id) = d.get_first(self.fields.id).and_then(|v| v.as_str()) {
                ids.push(id.to_string());
            }
        }
        if ids.is_empty() {
            return Ok(0);
        }
        self.delete(&ids)
    }

    /// The stored vectors of the posts `ids` that have one (in the order given; missing ids are skipped).
    pub fn post_vectors(&self, ids: &[String]) -> Result<Vec<Vec<f32>>> {
        let Some(dense) = &self.dense else {
            return Ok(Vec::new());
        };
        let d = dense
            .read()
            .map_err(|_| Error::Format("the vector index lock is poisoned".into()))?;
        let mut out = Vec::new();
        for id in ids {
            if let Some(v) = d.vector(dense::key(id))? {
                out.push(v);
            }
        }
        Ok(out)
    }
    /// Writes what lives only in memory (the ANN graph, the post count, the newest time) to the
    /// index directory, atomically; the text index is already durable after each add and delete.
    pub fn flush(&self) -> Result<IndexMeta> {
        if let Some(dense) = &self.dense {
            dense
                .read()
                .map_err(|_| Error::Format("the dense index lock is poisoned".into()))?
                .save(&self.dir.join(DENSE_FILE))?;
        }
        let mut meta = self.meta.clone();
        meta.posts = self.len();
        let n = self.newest.load(AtomicOrdering::Relaxed);
        meta.newest = (n != i64::MIN).then_some(n);
        write_meta(&self.dir, &meta)?;
        Ok(meta)
    }

    /// Recall@k of the ANN graph against exact search, over the given query vectors.
    pub fn ann_recall(&self, queries: &[Vec<f32>], k: usize) -> Result<f64> {
        let Some(dense) = &self.dense else {
            return Err(Error::Format("the index has no dense vectors".into()));
        };
        let d = dense
            .read()
            .map_err(|_| Error::Format("the dense index lock is poisoned".into()))?;
        let (mut hit, mut total) = (0usize, 0usize);
        for q in queries {
            let exact: HashSet<u64> = d.exact_search(q, k)?.into_iter().map(|x| x.0).collect();
            let approx = d.search(q, k, None)?;
            hit += approx.iter().filter(|x| exact.contains(&x.0)).count();
            total += exact.len();
        }
        Ok(if total == 0 {
            1.0
        } else {
            hit as f64 / total as f64
        })
    }

    fn hit(&self, d: &TantivyDocument, score: f64) -> Hit {
        let f = &self.fields;
        let text = |field: Field| {
            d.get_first(field)
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let num = |field: Field| d.get_first(field).and_then(|v| v.as_u64()).unwrap_or(0);
        Hit {
            id: text(f.id).unwrap_or_default(),
            score,
            author: text(f.author),
            created_at: d
                .get_first(f.created_at)
                .and_then(|v| v.as_datetime())
                .and_then(|t| chrono::DateTime::from_timestamp(t.into_timestamp_secs(), 0))
                .map(|t| t.to_rfc3339()),
            text: text(f.text).unwrap_or_default(),
            engagement: [num(f.likes), num(f.reposts), num(f.replies), num(f.quotes)],
        }
    }

    /// The underlying tantivy index.
    pub fn tantivy(&self) -> &Index {
        &self.index
    }
}

/// `top` ranking's score of a segment's documents from their BM25 score and fast fields.
fn top_scorer(
    seg: &tantivy::SegmentReader,
    now: Option<i64>,
) -> impl Fn(tantivy::DocId, f32) -> f64 {
    let ff = seg.fast_fields();
    let col = |name: &str| ff.u64(name).ok().map(|c| c.first_or_default_col(0));
    let (likes, reposts, replies, quotes) =
        (col("likes"), col("reposts"), col("replies"), col("quotes"));
    let created = ff
        .date("created_at")
        .ok()
        .map(|c| c.first_or_default_col(DateTime::from_timestamp_secs(0)));
    move |doc: tantivy::DocId, bm25: tantivy::Score| {
        let engagement = likes.as_ref().map_or(0, |c| c.get_val(doc))
            + 2 * reposts.as_ref().map_or(0, |c| c.get_val(doc))
            + 2 * quotes.as_ref().map_or(0, |c| c.get_val(doc))
            + replies.as_ref().map_or(0, |c| c.get_val(doc));
        let age_s = match (&created, now) {
            (Some(c), Some(now)) => (now - c.get_val(doc).into_timestamp_secs()).max(0) as f64,
            _ => 0.0,
        };
        top_score(bm25 as f64, engagement, age_s)
    }
}

/// How many of BM25's best a `top` query with words re-ranks by engagement and recency.
pub const TOP_RERANK_DEPTH: usize = 1000;
/// Windows (seconds back from the newest post) that `latest` tries before the whole index.
pub const LATEST_WINDOWS_S: [i64; 2] = [86_400, 16 * 86_400];

/// Half-life of the recency decay of `top` ranking: 7 days.
pub const RECENCY_HALF_LIFE_S: f64 = 7.0 * 86_400.0;

/// `top` ranking: `bm25 × (1 + 0.2·ln(1 + engagement)) × 2^(−age / 7 days)`, where engagement is
/// likes + 2·reposts + 2·quotes + replies and age is counted from the index's newest post (so an
/// archive ranks as it would have on its last day).
pub fn top_score(bm25: f64, engagement: u64, age_s: f64) -> f64 {
    bm25 * (1.0 + 0.2 * (1.0 + engagement as f64).ln()) * (-age_s / RECENCY_HALF_LIFE_S).exp2()
}

/// A tantivy query for `q`; `None` means "matches everything" (a term with no searchable characters).
fn translate(
    f: &Fields,
    q: &Query,
    post: &mut TextAnalyzer,
    url: &mut TextAnalyzer,
) -> Option<Box<dyn TQuery>> {
    let term = |field: Field, s: &str| -> Box<dyn TQuery> {
        Box::new(TermQuery::new(
            Term::from_field_text(field, s),
            IndexRecordOption::WithFreqs,
        ))
    };
    let words = |field: Field, toks: Vec<String>| -> Option<Box<dyn TQuery>> {
        match toks.len() {
            0 => None,
            1 => Some(term(field, &toks[0])),
            _ => Some(Box::new(PhraseQuery::new(
                toks.iter()
                    .map(|t| Term::from_field_text(field, t))
                    .collect(),
            ))),
        }
    };
    let at_least = |field: Field, n: u64| -> Box<dyn TQuery> {
        Box::new(RangeQuery::new(
            Bound::Included(Term::from_field_u64(field, n)),
            Bound::Unbounded,
        ))
    };
    let date = |d: &chrono::NaiveDate| {
        let secs = d
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp())
            .unwrap_or(0);
        Term::from_field_date_for_search(f.created_at, DateTime::from_timestamp_secs(secs))
    };
    Some(match q {
        Query::And(parts) => {
            let mut clauses: Vec<(Occur, Box<dyn TQuery>)> = Vec::new();
            let mut positive = false;
            for p in parts {
                match p {
                    Query::Not(inner) => match translate(f, inner, post, url) {
                        Some(t) => clauses.push((Occur::MustNot, t)),
                        None => return Some(Box::new(EmptyQuery)),
                    },
                    other => {
                        if let Some(t) = translate(f, other, post, url) {
                            clauses.push((Occur::Must, t));
                            positive = true;
                        }
                    }
                }
            }
            if clauses.is_empty() {
                return None;
            }
            if !positive {
                clauses.push((Occur::Must, Box::new(AllQuery)));
            }
            Box::new(BooleanQuery::new(clauses))
        }
        Query::Or(parts) => {
            let mut clauses: Vec<(Occur, Box<dyn TQuery>)> = Vec::new();
            for p in parts {
                clauses.push((Occur::Should, translate(f, p, post, url)?));
            }
            Box::new(BooleanQuery::new(clauses))
        }
        Query::Not(inner) => match translate(f, inner, post, url) {
            Some(t) => Box::new(BooleanQuery::new(vec![
                (Occur::Must, Box::new(AllQuery) as Box<dyn TQuery>),
                (Occur::MustNot, t),
            ])),
            None => Box::new(EmptyQuery),
        },
        Query::Term(w) => return words(f.text, analyze(post, w)),
        Query::Phrase(ws) => return words(f.text, analyze(post, &ws.join(" "))),
        Query::Hashtag(t) => term(f.hashtags, t),
        Query::Cashtag(t) => term(f.cashtags, t),
        Query::Mention(u) => term(f.mentions, u),
        Query::From(u) => term(f.author, u),
        Query::To(u) => term(f.reply_to_user, u),
        Query::Since(d) => Box::new(RangeQuery::new(Bound::Included(date(d)), Bound::Unbounded)),
        Query::Until(d) => Box::new(RangeQuery::new(Bound::Unbounded, Bound::Excluded(date(d)))),
        Query::SinceId(n) => Box::new(RangeQuery::new(
            Bound::Excluded(Term::from_field_u64(f.id_num, *n)),
            Bound::Unbounded,
        )),
        Query::MaxId(n) => Box::new(RangeQuery::new(
            Bound::Unbounded,
            Bound::Included(Term::from_field_u64(f.id_num, *n)),
        )),
        Query::Lang(l) => term(f.lang, l),
        Query::MinFaves(n) => at_least(f.likes, *n),
        Query::MinRetweets(n) => at_least(f.reposts, *n),
        Query::MinReplies(n) => at_least(f.replies, *n),
        Query::Filter(k) => term(f.flags, k.name()),
        Query::Url(u) => {
            return words(f.urls, analyze(url, u)).or_else(|| Some(Box::new(EmptyQuery)))
        }
        Query::ConversationId(n) => term(f.conversation, &n.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_analyzer_keeps_entities_whole_and_folds() {
        let mut a = post_analyzer();
        assert_eq!(
            analyze(
                &mut a,
                "Café time! #NBAFinals @Jack $TSLA don’t https://t.co/AbC?x=1. $5 ＃Tag"
            ),
            vec![
                "cafe",
                "time",
                "#nbafinals",
                "@jack",
                "$tsla",
                "don't",
                "https://t.co/abc?x=1",
                "5",
                "#tag"
            ]
        );
        let mut u = url_analyzer();
        assert_eq!(
            analyze(&mut u, "https://www.Example.com/a-b"),
            vec!["https", "www", "example", "com", "a", "b"]
        );
        assert_eq!(
            domain("https://www.Example.com:8080/x?y").as_deref(),
            Some("example.com")
        );
    }

    #[test]
    fn the_analyzer_splits_punctuation_and_folds_possessives() {
        let mut a = post_analyzer();
        assert_eq!(
            analyze(
                &mut a,
                "@BarackObama--he can't… Crooked Hillary's and China’s/India‘s ʼem ok`s"
            ),
            vec![
                "@barackobama",
                "he",
                "can't",
                "crooked",
                "hillary",
                "and",
                "china",
                "india",
                "em",
                "ok"
            ]
        );
        assert_eq!(
            analyze(&mut a, ".@user-Hood's #Tag's it's"),
            vec!["@user", "hood", "#tag", "it"]
        );
    }

    #[test]
    fn top_score_rewards_engagement_and_decays_with_age() {
        assert!(top_score(1.0, 100, 0.0) > top_score(1.0, 0, 0.0));
        assert!((top_score(2.0, 0, RECENCY_HALF_LIFE_S) - 1.0).abs() < 1e-12);
    }
}
