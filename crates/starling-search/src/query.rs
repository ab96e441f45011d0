//! Twitter's advanced-search query language, parsed into a [`Query`] tree.
//!
//! Grammar (as Twitter's search and API v2 evaluate it: adjacent terms are ANDed, and AND binds
//! tighter than `OR`, so `a b OR c` is `(a b) OR c`):
//!
//! ```text
//! query   := or
//! or      := and ("OR" and)*
//! and     := unary+
//! unary   := "-" primary | primary
//! primary := "(" or ")" | "\"" words "\"" | "#tag" | "$cash" | "@user" | name ":" value | word
//! ```
//!
//! Operators: `from:` `to:` `since:` (inclusive date) `until:` (exclusive date) `since_id:` `max_id:`
//! `lang:` `min_faves:` `min_retweets:` `min_replies:` `filter:` / `-filter:` (replies, retweets,
//! nativeretweets, quote, links, media, images, mentions, hashtags) `url:` `conversation_id:`.
//! Errors point at the character where the query went wrong.
//!
//! A query is at most [`MAX_QUERY_CHARS`] characters and nests parentheses at most
//! [`MAX_QUERY_DEPTH`] deep, so no input can drive the parser (or anything that walks the tree)
//! deeper than that.

use chrono::NaiveDate;
use std::fmt;

/// A parsed query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// Every part must match.
    And(Vec<Query>),
    /// Any part may match.
    Or(Vec<Query>),
    /// The part must not match.
    Not(Box<Query>),
    /// A word of the text (lower-cased).
    Term(String),
    /// Words that must appear in this order (lower-cased).
    Phrase(Vec<String>),
    /// `#tag` (without `#`, lower-cased).
    Hashtag(String),
    /// `$CASH` (without `$`, lower-cased).
    Cashtag(String),
    /// `@user` mentioned (without `@`, lower-cased).
    Mention(String),
    /// `from:user`.
    From(String),
    /// `to:user` (a reply to that user).
    To(String),
    /// `since:YYYY-MM-DD`, inclusive.
    Since(NaiveDate),
    /// `until:YYYY-MM-DD`, exclusive.
    Until(NaiveDate),
    /// `since_id:N`: ids greater than N.
    SinceId(u64),
    /// `max_id:N`: ids at most N.
    MaxId(u64),
    /// `lang:xx`.
    Lang(String),
    /// `min_faves:N`.
    MinFaves(u64),
    /// `min_retweets:N`.
    MinRetweets(u64),
    /// `min_replies:N`.
    MinReplies(u64),
    /// `filter:kind` (negate with `-filter:`).
    Filter(Filter),
    /// `url:text`: a linked URL contains this (lower-cased).
    Url(String),
    /// `conversation_id:N`.
    ConversationId(u64),
}

/// What `filter:` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Replies.
    Replies,
    /// Reposts (`retweets`, `nativeretweets`).
    Retweets,
    /// Quote posts.
    Quote,
    /// Posts with links.
    Links,
    /// Posts with media (`media`, `images`).
    Media,
    /// Posts mentioning someone.
    Mentions,
    /// Posts with hashtags.
    Hashtags,
}

impl Filter {
    /// The filter named `s`, if any.
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "replies" => Filter::Replies,
            "retweets" | "nativeretweets" => Filter::Retweets,
            "quote" => Filter::Quote,
            "links" => Filter::Links,
            "media" | "images" => Filter::Media,
            "mentions" => Filter::Mentions,
            "hashtags" => Filter::Hashtags,
            _ => return None,
        })
    }

    /// The canonical name.
    pub fn name(self) -> &'static str {
        match self {
            Filter::Replies => "replies",
            Filter::Retweets => "retweets",
            Filter::Quote => "quote",
            Filter::Links => "links",
            Filter::Media => "media",
            Filter::Mentions => "mentions",
            Filter::Hashtags => "hashtags",
        }
    }
}

/// The longest query accepted, in characters (Twitter's full-archive search allows 1,024).
pub const MAX_QUERY_CHARS: usize = 4096;

/// The deepest nesting of parentheses accepted.
pub const MAX_QUERY_DEPTH: usize = 32;

/// The operators this parser knows, for error messages.
pub const OPERATORS: &[&str] = &[
    "from:",
    "to:",
    "since:",
    "until:",
    "since_id:",
    "max_id:",
    "lang:",
    "min_faves:",
    "min_retweets:",
    "min_replies:",
    "filter:",
    "url:",
    "conversation_id:",
];

/// A query that does not parse: what is wrong and where (0-based character column).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at column {column}\n  {query}\n  {caret}^")]
pub struct QueryError {
    /// What is wrong.
    pub message: String,
    /// 0-based character position in the query.
    pub column: usize,
    /// The query (a window around the column when it is long).
    pub query: String,
    caret: String,
}

impl QueryError {
    /// Characters of a long query shown around the column.
    const WINDOW: usize = 80;

    fn new(query: &str, column: usize, message: impl Into<String>) -> Self {
        // A long query is shown as a window around the column, so errors stay readable.
        let len = query.chars().count();
        let (shown, caret) = if len <= Self::WINDOW {
            (query.to_string(), column)
        } else {
            let start = column.saturating_sub(Self::WINDOW * 3 / 4);
            let end = (start + Self::WINDOW).min(len);
            let mut shown = String::new();
            if start > 0 {
                shown.push('…');
            }
            shown.extend(query.chars().skip(start).take(end - start));
            if end < len {
                shown.push('…');
            }
            (shown, column - start + usize::from(start > 0))
        };
        Self {
            message: message.into(),
            column,
            query: shown,
            caret: " ".repeat(caret),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    Minus,
    Or,
    Quoted(String),
    Word(String),
}

/// Splits the query into tokens with their character columns.
fn lex(q: &str) -> Result<Vec<(Tok, usize)>, QueryError> {
    let chars: Vec<char> = q.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        match c {
            '(' => {
                out.push((Tok::LParen, i));
                i += 1;
            }
            ')' => {
                out.push((Tok::RParen, i));
                i += 1;
            }
            '-' if chars
                .get(i + 1)
                .is_some_and(|n| !n.is_whitespace() && *n != ')') =>
            {
                out.push((Tok::Minus, i));
                i += 1;
            }
            '"' | '“' | '”' => {
                let start = i;
                i += 1;
                let mut s = String::new();
                while i < chars.len() && !matches!(chars[i], '"' | '“' | '”') {
                    s.push(chars[i]);
                    i += 1;
                }
                if i >= chars.len() {
                    return Err(QueryError::new(q, start, "unclosed quote"));
                }
                i += 1;
                out.push((Tok::Quoted(s), start));
            }
            _ => {
                let start = i;
                let mut s = String::new();
                while i < chars.len() && !chars[i].is_whitespace() && !matches!(chars[i], '(' | ')')
                {
                    let operator_value = s.strip_suffix(':').is_some_and(|name| {
                        !name.is_empty()
                            && name.chars().all(|c| c.is_ascii_alphabetic() || c == '_')
                    });
                    // A quote inside an operator value (`url:"a b"`) is read as part of the word;
                    // anywhere else a quote ends the word and starts a phrase.
                    if matches!(chars[i], '"' | '“' | '”') && !operator_value {
                        break;
                    }
                    if chars[i] == '"' && operator_value {
                        let qstart = i;
                        i += 1;
                        while i < chars.len() && chars[i] != '"' {
                            s.push(chars[i]);
                            i += 1;
                        }
                        if i >= chars.len() {
                            return Err(QueryError::new(q, qstart, "unclosed quote"));
                        }
                        i += 1;
                        continue;
                    }
                    s.push(chars[i]);
                    i += 1;
                }
                let tok = if s == "OR" { Tok::Or } else { Tok::Word(s) };
                out.push((tok, start));
            }
        }
    }
    Ok(out)
}

struct Parser<'a> {
    q: &'a str,
    toks: Vec<(Tok, usize)>,
    at: usize,
    len: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at).map(|t| &t.0)
    }

    fn col(&self) -> usize {
        self.toks.get(self.at).map(|t| t.1).unwrap_or(self.len)
    }

    fn err(&self, col: usize, msg: impl Into<String>) -> QueryError {
        QueryError::new(self.q, col, msg)
    }

    fn or(&mut self) -> Result<Query, QueryError> {
        let mut parts = vec![self.and()?];
        while self.peek() == Some(&Tok::Or) {
            let col = self.col();
            self.at += 1;
            if matches!(self.peek(), None | Some(Tok::RParen) | Some(Tok::Or)) {
                return Err(self.err(col, "OR needs a term on both sides"));
            }
            parts.push(self.and()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Query::Or(parts)
        })
    }

    fn and(&mut self) -> Result<Query, QueryError> {
        let mut parts = Vec::new();
        while let Some(t) = self.peek() {
            match t {
                Tok::Or | Tok::RParen => break,
                _ => parts.push(self.unary()?),
            }
        }
        match parts.len() {
            0 => Err(match self.peek() {
                Some(Tok::Or) => self.err(self.col(), "OR needs a term on both sides"),
                Some(Tok::RParen) => self.err(self.col(), "unexpected `)`"),
                _ => self.err(self.col(), "empty query"),
            }),
            1 => Ok(parts.remove(0)),
            _ => Ok(Query::And(parts)),
        }
    }

    fn unary(&mut self) -> Result<Query, QueryError> {
        if self.peek() == Some(&Tok::Minus) {
            self.at += 1;
            let q = self.primary()?;
            return Ok(Query::Not(Box::new(q)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Query, QueryError> {
        let Some((tok, col)) = self.toks.get(self.at).cloned() else {
            return Err(self.err(self.len, "query ends where a term was expected"));
        };
        self.at += 1;
        match tok {
            Tok::LParen => {
                if self.peek() == Some(&Tok::RParen) {
                    return Err(self.err(col, "empty parentheses"));
                }
                if self.depth == MAX_QUERY_DEPTH {
                    return Err(self.err(
                        col,
                        format!("parentheses nest deeper than {MAX_QUERY_DEPTH} levels"),
                    ));
                }
                self.depth += 1;
                let inner = self.or()?;
                self.depth -= 1;
                if self.peek() != Some(&Tok::RParen) {
                    return Err(self.err(col, "unclosed `(`"));
                }
                self.at += 1;
                Ok(inner)
            }
            Tok::RParen => Err(self.err(col, "unexpected `)`")),
            Tok::Or => Err(self.err(col, "OR needs a term on both sides")),
            Tok::Minus => Err(self.err(col, "`-` must be followed by a term")),
            Tok::Quoted(s) => {
                let words: Vec<String> = s.split_whitespace().map(str::to_lowercase).collect();
                if words.is_empty() {
                    return Err(self.err(col, "empty phrase"));
                }
                Ok(Query::Phrase(words))
            }
            Tok::Word(w) => self.word(&w, col),
        }
    }

    fn word(&self, w: &str, col: usize) -> Result<Query, QueryError> {
        let name_of = |sigil: char| {
            let rest = &w[sigil.len_utf8()..];
            if rest.is_empty() {
                Err(self.err(col, format!("`{sigil}` needs a name after it")))
            } else {
                Ok(rest.to_lowercase())
            }
        };
        if w.starts_with('#') || w.starts_with('＃') {
            let c = w.chars().next().unwrap_or('#');
            return name_of(c).map(Query::Hashtag);
        }
        if w.starts_with('@') || w.starts_with('＠') {
            let c = w.chars().next().unwrap_or('@');
            return name_of(c).map(Query::Mention);
        }
        if let Some(rest) = w.strip_prefix('$') {
            if rest.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
                return Ok(Query::Cashtag(rest.to_lowercase()));
            }
        }
        // `name:value` where name is a word of letters and underscores is an operator.
        if let Some((name, value)) = w.split_once(':') {
            if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphabetic() || c == '_') {
                return self.operator(name, value, col);
            }
        }
        Ok(Query::Term(w.to_lowercase()))
    }

    fn operator(&self, name: &str, value: &str, col: usize) -> Result<Query, QueryError> {
        let vcol = col + name.chars().count() + 1;
        let lower = name.to_ascii_lowercase();
        if value.is_empty() {
            return Err(self.err(vcol, format!("`{lower}:` needs a value")));
        }
        let user = |v: &str| v.trim_start_matches('@').to_lowercase();
        let number = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| self.err(vcol, format!("`{lower}:` takes a whole number, not `{v}`")))
        };
        let date = |v: &str| {
            // Twitter also accepts since:2024-01-01_12:00:00_UTC; the date part is what counts here.
            let d = v.split('_').next().unwrap_or(v);
            NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| {
                self.err(
                    vcol,
                    format!("`{lower}:` takes a date YYYY-MM-DD, not `{v}`"),
                )
            })
        };
        Ok(match lower.as_str() {
            "from" => Query::From(user(value)),
            "to" => Query::To(user(value)),
            "since" => Query::Since(date(value)?),
            "until" => Query::Until(date(value)?),
            "since_id" => Query::SinceId(number(value)?),
            "max_id" => Query::MaxId(number(value)?),
            "lang" => {
                if !value.chars().all(|c| c.is_ascii_alphabetic() || c == '-') {
                    return Err(self.err(vcol, format!("`lang:` takes a language code, not `{value}`")));
                }
                Query::Lang(value.to_ascii_lowercase())
            }
            "min_faves" => Query::MinFaves(number(value)?),
            "min_retweets" => Query::MinRetweets(number(value)?),
            "min_replies" => Query::MinReplies(number(value)?),
            "filter" => Query::Filter(Filter::from_name(&value.to_ascii_lowercase()).ok_or_else(|| {
                self.err(
                    vcol,
                    format!(
                        "unknown filter `{value}`; known: replies, retweets, nativeretweets, quote, links, media, images, mentions, hashtags"
                    ),
                )
            })?),
            "url" => Query::Url(value.to_lowercase()),
            "conversation_id" => Query::ConversationId(number(value)?),
            _ => {
                return Err(self.err(
                    col,
                    format!("unknown operator `{name}:`; known: {}", OPERATORS.join(" ")),
                ))
            }
        })
    }
}

/// Parses a query in Twitter's advanced-search language.
pub fn parse(q: &str) -> Result<Query, QueryError> {
    let len = q.chars().count();
    if len > MAX_QUERY_CHARS {
        return Err(QueryError::new(
            q,
            MAX_QUERY_CHARS,
            format!("the query is {len} characters; the limit is {MAX_QUERY_CHARS}"),
        ));
    }
    let toks = lex(q)?;
    let mut p = Parser {
        q,
        toks,
        at: 0,
        len,
        depth: 0,
    };
    let query = p.or()?;
    if p.at < p.toks.len() {
        let col = p.col();
        return Err(p.err(col, "unexpected `)`"));
    }
    Ok(query)
}

/// What dense (embedding) search makes of a query: the words to embed and the operators that
/// still filter the results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenseParts {
    /// Words, phrases, `#tags`, `$cash` and `@users` that the query asks for, joined by spaces.
    pub text: String,
    /// Everything else (operators, exclusions, ORs mixing operators); `None` when nothing is left.
    pub filter: Option<Query>,
}

impl Query {
    /// Splits the query for dense search: positive text parts are embedded, the rest filters.
    pub fn dense_parts(&self) -> DenseParts {
        fn text_of(q: &Query) -> Option<String> {
            match q {
                Query::Term(w) => Some(w.clone()),
                Query::Phrase(ws) => Some(ws.join(" ")),
                Query::Hashtag(t) => Some(format!("#{t}")),
                Query::Cashtag(t) => Some(format!("${t}")),
                Query::Mention(u) => Some(format!("@{u}")),
                Query::Or(parts) => parts
                    .iter()
                    .map(text_of)
                    .collect::<Option<Vec<_>>>()
                    .map(|v| v.join(" ")),
                _ => None,
            }
        }
        let parts: Vec<&Query> = match self {
            Query::And(parts) => parts.iter().collect(),
            other => vec![other],
        };
        let (mut text, mut rest) = (Vec::new(), Vec::new());
        for p in parts {
            match text_of(p) {
                Some(t) => text.push(t),
                None => rest.push(p.clone()),
            }
        }
        let filter = match rest.len() {
            0 => None,
            1 => rest.pop(),
            _ => Some(Query::And(rest)),
        };
        DenseParts {
            text: text.join(" "),
            filter,
        }
    }
}

impl fmt::Display for Query {
    /// The canonical query text, which parses back to the same tree.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |f: &mut fmt::Formatter<'_>, parts: &[Query], sep: &str| -> fmt::Result {
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    f.write_str(sep)?;
                }
                match p {
                    Query::And(_) | Query::Or(_) => write!(f, "({p})")?,
                    _ => write!(f, "{p}")?,
                }
            }
            Ok(())
        };
        match self {
            Query::And(p) => join(f, p, " "),
            Query::Or(p) => join(f, p, " OR "),
            Query::Not(q) => match q.as_ref() {
                Query::And(_) | Query::Or(_) | Query::Not(_) => write!(f, "-({q})"),
                _ => write!(f, "-{q}"),
            },
            Query::Term(t) => f.write_str(t),
            Query::Phrase(w) => write!(f, "\"{}\"", w.join(" ")),
            Query::Hashtag(t) => write!(f, "#{t}"),
            Query::Cashtag(t) => write!(f, "${t}"),
            Query::Mention(u) => write!(f, "@{u}"),
            Query::From(u) => write!(f, "from:{u}"),
            Query::To(u) => write!(f, "to:{u}"),
            Query::Since(d) => write!(f, "since:{d}"),
            Query::Until(d) => write!(f, "until:{d}"),
            Query::SinceId(n) => write!(f, "since_id:{n}"),
            Query::MaxId(n) => write!(f, "max_id:{n}"),
            Query::Lang(l) => write!(f, "lang:{l}"),
            Query::MinFaves(n) => write!(f, "min_faves:{n}"),
            Query::MinRetweets(n) => write!(f, "min_retweets:{n}"),
            Query::MinReplies(n) => write!(f, "min_replies:{n}"),
            Query::Filter(k) => write!(f, "filter:{}", k.name()),
            Query::Url(u) => write!(f, "url:{u}"),
            Query::ConversationId(n) => write!(f, "conversation_id:{n}"),
        }
    }
}

#[cfg(test)]
mod tests;
