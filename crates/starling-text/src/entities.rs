//! Entity extraction and weighted length by the twitter-text rules.

use serde::{Deserialize, Serialize};
use twitter_text::entity::Type;
use twitter_text::extractor::{Extract, Extractor};
use twitter_text::validator::Validator;
use twitter_text_parser::twitter_text::Rule;

/// What kind of entity a span of post text is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntityKind {
    /// `@screen_name`.
    Mention,
    /// `@screen_name/list-slug`.
    List,
    /// `#hashtag`.
    Hashtag,
    /// `$CASH`.
    Cashtag,
    /// A URL, with or without a scheme.
    Url,
}

/// One entity: its kind, its text (without the sigil; lists as `user/slug`) and code-point span.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entity {
    /// What the span is.
    pub kind: EntityKind,
    /// The entity text without its `@`, `#` or `$` (a URL as written).
    pub text: String,
    /// Start index in code points, inclusive (including the sigil).
    pub start: usize,
    /// End index in code points, exclusive.
    pub end: usize,
}

/// The entities of one post, each list in text order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entities {
    /// Mentions and lists.
    pub mentions: Vec<Entity>,
    /// Hashtags.
    pub hashtags: Vec<Entity>,
    /// Cashtags.
    pub cashtags: Vec<Entity>,
    /// URLs.
    pub urls: Vec<Entity>,
}

impl Entities {
    /// True when no entity of any kind was found.
    pub fn is_empty(&self) -> bool {
        self.mentions.is_empty()
            && self.hashtags.is_empty()
            && self.cashtags.is_empty()
            && self.urls.is_empty()
    }

    /// Adds the platform's entities (by name, as `entities.user_mentions` etc. give them) that
    /// extraction missed, each at the first place `text` spells it with its sigil outside the
    /// spans already found; names the text does not spell are left out.
    pub fn merge_named(&mut self, text: &str, platform: &Entities) {
        let lower = text.to_lowercase();
        // Lower-casing can change byte lengths; only merge when it did not, so spans stay true.
        if lower.len() != text.len() {
            return;
        }
        for (theirs, kind, sigils) in [
            (&platform.mentions, EntityKind::Mention, &['@', '＠'][..]),
            (&platform.hashtags, EntityKind::Hashtag, &['#', '＃'][..]),
            (&platform.cashtags, EntityKind::Cashtag, &['$'][..]),
        ] {
            for p in theirs {
                let name = p.text.to_lowercase();
                let ours = match kind {
                    EntityKind::Mention => &self.mentions,
                    EntityKind::Hashtag => &self.hashtags,
                    _ => &self.cashtags,
                };
                if ours.iter().any(|e| e.text.to_lowercase() == name) {
                    continue;
                }
                let taken: Vec<(usize, usize)> =
                    self.all().iter().map(|e| (e.start, e.end)).collect();
                let found = sigils.iter().find_map(|sigil| {
                    let needle = format!("{sigil}{name}");
                    lower.match_indices(&needle).find_map(|(at, _)| {
                        let after = lower[at + needle.len()..].chars().next();
                        if after.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                            return None;
                        }
                        let start = text[..at].chars().count();
                        let end = start + needle.chars().count();
                        let free = taken.iter().all(|&(s, e)| end <= s || start >= e);
                        free.then_some((start, end, at, needle.len()))
                    })
                });
                if let Some((start, end, at, len)) = found {
                    let sigil_len = text[at..].chars().next().map_or(1, char::len_utf8);
                    let e = Entity {
                        kind,
                        text: text[at + sigil_len..at + len].to_string(),
                        start,
                        end,
                    };
                    let list = match kind {
                        EntityKind::Mention => &mut self.mentions,
                        EntityKind::Hashtag => &mut self.hashtags,
                        _ => &mut self.cashtags,
                    };
                    list.push(e);
                    list.sort_by_key(|e| e.start);
                }
            }
        }
    }

    /// All entities in text order.
    pub fn all(&self) -> Vec<&Entity> {
        let mut v: Vec<&Entity> = self
            .mentions
            .iter()
            .chain(&self.hashtags)
            .chain(&self.cashtags)
            .chain(&self.urls)
            .collect();
        v.sort_by_key(|e| e.start);
        v
    }
}

/// [`extract_entities`], with a panic inside the third-party parser returned as its message.
///
/// A record that trips a parser bug must cost that record, not the run: corpus building,
/// `index add` and the server quarantine it with this message.
pub fn try_extract_entities(text: &str) -> Result<Entities, String> {
    std::panic::catch_unwind(|| extract_entities(text)).map_err(|p| panic_message(p.as_ref()))
}

/// The message of a caught panic (`"unknown panic"` when it is not a string).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Longest piece of text handed to the twitter-text parser at once, in characters.
///
/// The parser's cost grows with the square of an unbroken run's length (it tries entities at
/// every position). Longer texts are cut at whitespace into pieces of at most this many
/// characters, and a run without whitespace longer than this is cut after a non-alphanumeric
/// character near the limit (or at it): entities are at most a few hundred characters apart
/// from such cuts in real text, so only a URL longer than this inside such a run could be cut.
pub const ENTITY_PIECE_CHARS: usize = 2048;

/// Extracts mentions, lists, hashtags, cashtags and URLs from `text` by the twitter-text rules,
/// in time linear in its length.
pub fn extract_entities(text: &str) -> Entities {
    if text.len() <= ENTITY_PIECE_CHARS {
        return extract_piece(text);
    }
    let mut out = Entities::default();
    let mut chars_before = 0;
    for piece in pieces(text, ENTITY_PIECE_CHARS) {
        let mut e = extract_piece(piece);
        for list in [
            &mut e.mentions,
            &mut e.hashtags,
            &mut e.cashtags,
            &mut e.urls,
        ] {
            for x in list.iter_mut() {
                x.start += chars_before;
                x.end += chars_before;
            }
        }
        out.mentions.append(&mut e.mentions);
        out.hashtags.append(&mut e.hashtags);
        out.cashtags.append(&mut e.cashtags);
        out.urls.append(&mut e.urls);
        chars_before += piece.chars().count();
    }
    out
}

/// `text` cut into consecutive pieces of at most `max` characters: after whitespace where a
/// piece can end there, else after a non-alphanumeric character, else at the limit.
fn pieces(text: &str, max: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        // Byte offset after `max` characters (or the end).
        let limit = rest.char_indices().nth(max).map_or(rest.len(), |(b, _)| b);
        if limit == rest.len() {
            out.push(rest);
            break;
        }
        let head = &rest[..limit];
        let cut = head
            .rfind(char::is_whitespace)
            .or_else(|| head.rfind(|c: char| !c.is_alphanumeric() && c != '_'))
            .map(|b| b + head[b..].chars().next().map_or(1, char::len_utf8))
            .filter(|&b| b > 0)
            .unwrap_or(limit);
        out.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    out
}

/// twitter-text's extraction of one piece, indices in code points.
fn extract_piece(text: &str) -> Entities {
    let extractor = Extractor::new();
    let mut out = Entities::default();
    // `extract_entities_with_indices` leaves out scheme-less URLs (`example.com/path`), which
    // twitter-text's own extractEntitiesWithIndices includes; name the rules explicitly.
    let entities = extractor.extract(text, |r| {
        matches!(
            r,
            Rule::url
                | Rule::url_without_protocol
                | Rule::hashtag
                | Rule::cashtag
                | Rule::list
                | Rule::username
        )
    });
    // twitter-text counts UTF-16 code units (an emoji is two); entities count code points.
    let astral = text.chars().any(|c| c.len_utf16() == 2);
    let to_code_points: Vec<usize> = if astral {
        let mut map = Vec::with_capacity(text.len() + 1);
        for (i, c) in text.chars().enumerate() {
            map.extend(std::iter::repeat_n(i, c.len_utf16()));
        }
        map.push(text.chars().count());
        map
    } else {
        Vec::new()
    };
    let code_point = |u: i32| -> usize {
        let u = u.max(0) as usize;
        if astral {
            to_code_points
                .get(u)
                .copied()
                .unwrap_or(to_code_points.len() - 1)
        } else {
            u
        }
    };
    for e in entities {
        let (start, end) = (code_point(e.get_start()), code_point(e.get_end()));
        let entity = |kind, text: String| Entity {
            kind,
            text,
            start,
            end,
        };
        match e.get_type() {
            Type::MENTION => {
                let slug = e.get_list_slug();
                if slug.is_empty() {
                    out.mentions
                        .push(entity(EntityKind::Mention, e.get_value().to_string()));
                } else {
                    out.mentions.push(entity(
                        EntityKind::List,
                        format!("{}{}", e.get_value(), slug),
                    ));
                }
            }
            Type::HASHTAG => out
                .hashtags
                .push(entity(EntityKind::Hashtag, e.get_value().to_string())),
            Type::CASHTAG => out
                .cashtags
                .push(entity(EntityKind::Cashtag, e.get_value().to_string())),
            Type::URL => out
                .urls
                .push(entity(EntityKind::Url, e.get_value().to_string())),
            _ => {}
        }
    }
    out
}

/// A twitter-text length configuration (v1, v2 or v3 JSON).
#[derive(Debug, Clone)]
pub struct LengthConfig(twitter_text_config::Configuration);

impl LengthConfig {
    /// The v3 configuration (emoji sequences count as one weighted character; the current rules).
    pub fn v3() -> Self {
        Self::from_json(twitter_text_config::V3_JSON)
    }

    /// The v2 configuration (280 weighted characters, every code point weighed).
    pub fn v2() -> Self {
        Self::from_json(twitter_text_config::V2_JSON)
    }

    /// A configuration parsed from twitter-text's JSON format.
    pub fn from_json(json: &str) -> Self {
        Self(twitter_text_config::Configuration::configuration_from_json(
            json,
        ))
    }
}

impl Default for LengthConfig {
    fn default() -> Self {
        Self::v3()
    }
}

/// The weighted length of a post and whether it is a valid post.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightedLength {
    /// Weighted length (URLs count as the transformed URL length).
    pub weighted_length: i32,
    /// Weighted length per mille of the limit.
    pub permillage: i32,
    /// Non-empty, within the limit and free of invalid characters.
    pub valid: bool,
    /// Displayed range in UTF-16 units, inclusive.
    pub display_range: (i32, i32),
    /// Part of the displayed range within the limit, in UTF-16 units, inclusive.
    pub valid_range: (i32, i32),
}

/// Weighted length of `text` under the v3 configuration.
pub fn weighted_length(text: &str) -> WeightedLength {
    weighted_length_with(text, &LengthConfig::v3())
}

/// Weighted length of `text` under `config`.
pub fn weighted_length_with(text: &str, config: &LengthConfig) -> WeightedLength {
    let r = twitter_text::parse(text, &config.0, true);
    WeightedLength {
        weighted_length: r.weighted_length,
        permillage: r.permillage,
        valid: r.is_valid,
        display_range: (r.display_text_range.start(), r.display_text_range.end()),
        valid_range: (r.valid_text_range.start(), r.valid_text_range.end()),
    }
}

/// The screen name a post replies to: the mention that opens it, if any.
pub fn reply_to(text: &str) -> Option<String> {
    Extractor::new()
        .extract_reply_username(text)
        .map(|e| e.get_value().to_string())
}

/// True when `s` is a valid `@screen_name` (with its `@`).
pub fn is_valid_username(s: &str) -> bool {
    Validator::new().is_valid_username(s)
}

/// True when `s` is a valid `@user/list` reference.
pub fn is_valid_list(s: &str) -> bool {
    Validator::new().is_valid_list(s)
}

/// True when `s` is a valid `#hashtag`.
pub fn is_valid_hashtag(s: &str) -> bool {
    Validator::new().is_valid_hashtag(s)
}

/// True when `s` is a valid URL; `require_protocol` false also accepts `example.com/path`.
pub fn is_valid_url(s: &str, require_protocol: bool) -> bool {
    let v = Validator::new();
    if require_protocol {
        v.is_valid_url(s)
    } else {
        v.is_valid_url_without_protocol(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_are_extracted_in_pieces_with_the_same_entities() {
        let mut text = String::new();
        let mut i = 0;
        while text.chars().count() < 30_000 {
            text.push_str(&format!(
                "word{i} “quoted” #tag{i} @user{i} $ABC https://x.co/{i} café… ,#t{i} 😀 "
            ));
            i += 1;
        }
        let chunked = extract_entities(&text);
        let whole = extract_piece(&text);
        assert!(whole.hashtags.len() > 800 && whole.urls.len() > 400);
        assert_eq!(chunked, whole);
        // A run without whitespace is cut into pieces that rebuild it, none over the limit.
        let run: String = "ab,c“d".repeat(10_000);
        let p = pieces(&run, ENTITY_PIECE_CHARS);
        assert_eq!(p.concat(), run);
        assert!(p.iter().all(|x| x.chars().count() <= ENTITY_PIECE_CHARS));
        assert!(p.len() > 25);
        let word = "a".repeat(100_000);
        assert!(extract_entities(&word).all().is_empty());
        let tagged = format!("{word},#late");
        assert_eq!(extract_entities(&tagged).hashtags[0].start, 100_001);
    }

    #[test]
    fn indices_are_code_points() {
        let e = extract_entities("の@usernameに #タグ");
        assert_eq!(e.mentions[0].start, 1);
        assert_eq!(e.mentions[0].end, 10);
        assert_eq!(e.hashtags[0].text, "タグ");
    }

    #[test]
    fn lists_keep_their_slug() {
        let e = extract_entities("see @user/my-list now");
        assert_eq!(e.mentions[0].kind, EntityKind::List);
        assert_eq!(e.mentions[0].text, "user/my-list");
    }

    #[test]
    fn urls_weigh_23() {
        assert_eq!(weighted_length("http://test.co").weighted_length, 23);
        assert!(!weighted_length("").valid);
    }
}

#[cfg(test)]
mod merge_tests {
    use super::*;

    fn named(kind: EntityKind, text: &str) -> Entity {
        Entity {
            kind,
            text: text.into(),
            start: 0,
            end: 0,
        }
    }

    #[test]
    fn platform_entities_fill_what_extraction_missed() {
        let text = "Café talk with @Jack and x@BarackObama_ and #Rust";
        let mut e = extract_entities(text);
        let platform = Entities {
            mentions: vec![
                named(EntityKind::Mention, "jack"),
                named(EntityKind::Mention, "barackobama"),
                named(EntityKind::Mention, "nobody"),
            ],
            hashtags: vec![named(EntityKind::Hashtag, "rust")],
            ..Default::default()
        };
        let before = e.clone();
        e.merge_named(text, &platform);
        // `@BarackObama_` spells another name; `nobody` is not in the text; the rest was found.
        assert_eq!(e, before);

        let text = "so x@Jack said";
        let mut e = extract_entities(text);
        assert!(e.mentions.is_empty());
        e.merge_named(
            text,
            &Entities {
                mentions: vec![named(EntityKind::Mention, "jack")],
                ..Default::default()
            },
        );
        assert_eq!(e.mentions.len(), 1);
        assert_eq!(
            (
                e.mentions[0].text.as_str(),
                e.mentions[0].start,
                e.mentions[0].end
            ),
            ("Jack", 4, 9)
        );
        assert_eq!(try_extract_entities(text), Ok(extract_entities(text)));
    }

    #[test]
    fn indices_count_code_points_after_emoji() {
        let text = "😂😂 #tag and https://t.co/abc";
        let e = extract_entities(text);
        assert_eq!((e.hashtags[0].start, e.hashtags[0].end), (3, 7));
        assert_eq!((e.urls[0].start, e.urls[0].end), (12, 28));
        assert_eq!(text.chars().count(), 28);
        let n = crate::Normalizer::new(crate::NormalizeConfig::default());
        assert_eq!(n.normalize_display(text, &e).text, "😂😂 #tag and <|url|>");
    }
}
