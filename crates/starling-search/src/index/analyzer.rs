//! The post analyzer: words split on punctuation, possessives and apostrophes folded,
//! `#tags`, `@mentions`, `$CASH` and URLs kept whole.

use super::*;
use tantivy::tokenizer::{
    AsciiFoldingFilter, LowerCaser, RemoveLongFilter, TextAnalyzer, Token, TokenStream, Tokenizer,
};
use tantivy::Index;

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
pub(crate) fn spans(text: &str, url_parts: bool) -> Vec<(usize, usize)> {
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
pub(crate) fn is_apostrophe(c: char) -> bool {
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

pub(crate) fn url_analyzer() -> TextAnalyzer {
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

pub(crate) fn register(index: &Index) {
    index.tokenizers().register(POST_ANALYZER, post_analyzer());
    index.tokenizers().register(URL_ANALYZER, url_analyzer());
}
