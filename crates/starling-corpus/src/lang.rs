//! Language identification for posts whose source gives no language.
//!
//! whatlang: pure Rust, no model files, builds in seconds, trigram profiles for 69 languages and
//! microseconds per post. It is weaker than fastText/lingua on very short texts, so it is used only
//! when the platform gave no `lang`, and only its *reliable* answers are taken ("und" otherwise).

/// ISO 639-1 code (or 639-3 where none exists) of `text`'s language, `None` when not reliable.
pub fn detect(text: &str) -> Option<&'static str> {
    let info = whatlang::detect(text)?;
    if !info.is_reliable() {
        return None;
    }
    Some(iso639_1(info.lang()))
}

fn iso639_1(lang: whatlang::Lang) -> &'static str {
    use whatlang::Lang::*;
    match lang {
        Eng => "en",
        Spa => "es",
        Por => "pt",
        Fra => "fr",
        Deu => "de",
        Ita => "it",
        Nld => "nl",
        Rus => "ru",
        Ukr => "uk",
        Pol => "pl",
        Tur => "tr",
        Ara => "ar",
        Heb => "he",
        Pes => "fa",
        Hin => "hi",
        Ben => "bn",
        Urd => "ur",
        Jpn => "ja",
        Kor => "ko",
        Cmn => "zh",
        Tha => "th",
        Vie => "vi",
        Ind => "id",
        Swe => "sv",
        Dan => "da",
        Nob => "no",
        Fin => "fi",
        Ces => "cs",
        Ron => "ro",
        Hun => "hu",
        Ell => "el",
        Bul => "bg",
        Cat => "ca",
        Tgl => "tl",
        Tam => "ta",
        Tel => "te",
        Mar => "mr",
        other => other.code(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn detects_clear_cases() {
        assert_eq!(
            super::detect("This is clearly an English sentence about the weather today."),
            Some("en")
        );
        assert_eq!(
            super::detect("Esta es claramente una frase en español sobre el tiempo de hoy."),
            Some("es")
        );
    }
}
