//! The classifier: tokens, the model file, and Robinson's chi-square combining as SpamBayes and
//! SpamAssassin's Bayes use it.
//!
//! Each token's spam probability is smoothed towards 0.5 by how often it was seen (Robinson's
//! f(w)); the 150 tokens farthest from 0.5 (made up to 20 with neutral ones, so that two words
//! cannot decide) are combined by two chi-square tests, one for "all hammy" and one for "all
//! spammy". When both fail, as with word salad mixing ham and spam words, the answer is near
//! 0.5: unsure, which the points treat as no evidence. That is what makes this robust against
//! padding, unlike a plain naive Bayes product, which is certain of everything.
//!
//! Tokens: the lower-cased words of the Subject (marked as such) and of the text, 3 to 12
//! characters (longer ones summarised by first letter and length, as SpamBayes does); link hosts,
//! domains and path words; address domains; the notes `mime` takes on the structure and headers.
//! At most 5,000 words a message; each token counts once.
//!
//! # Model file, version 1
//!
//! All integers little-endian; `varint` is LEB128 (7 bits a byte, low first).
//!
//! ```text
//! "PSBM"            magic
//! u8                format version (1)
//! u8                tokenizer version: a model is only valid with the tokenizer that made it
//! u16               reserved, 0
//! u32 u32 u32       ham messages, spam messages, token count N
//! N × (varint hash − previous hash, varint ham count, varint spam count)
//! ```
//!
//! Hashes are 32-bit FNV-1a folds of the token text, strictly increasing (the first delta is from
//! 0). Counts are messages containing the token, not occurrences. Loading is a single pass into
//! two sorted vectors; lookups are binary searches.

use super::mime::Content;
use anyhow::{Context, bail, ensure};
use std::collections::HashMap;

const MAGIC: &[u8; 4] = b"PSBM";
const FORMAT_VERSION: u8 = 1;
/// Bump when [`tokens`] changes what it emits: old models must then be retrained.
const TOKENIZER_VERSION: u8 = 1;

/// Words read from the body; past this a message has said what it has to say.
const MAX_WORDS: usize = 5_000;
/// SpamBayes's choices: words longer than this are summarised as `skip:` tokens.
const MAX_WORD_CHARS: usize = 12;
const MIN_WORD_CHARS: usize = 3;

/// Robinson's s and x: how strongly an unknown token is pulled to 0.5.
const UNKNOWN_STRENGTH: f64 = 0.45;
const UNKNOWN_PROB: f64 = 0.5;
/// Tokens nearer 0.5 than this are not evidence.
const MIN_STRENGTH: f64 = 0.1;
const MAX_CLUES: usize = 150;
/// Fewer clues are made up to this many with neutral ones (0.5), so that a short message needs
/// strong words to leave "unsure": without it, `Lunch?` or `hello` scored 0.8 on the strength of
/// two or three words. At the same points it cost 5 of 1,415 spam in cross-validation.
const MIN_CLUES: usize = 20;

/// The hashed, de-duplicated tokens of a message, sorted.
pub(super) fn tokens(c: &Content) -> Vec<u32> {
    let mut out = Vec::new();
    let mut lower = String::new();
    for w in words(&c.subject).take(64) {
        word(w, "s:", &mut out, &mut lower);
    }
    for w in words(&c.text).take(MAX_WORDS) {
        word(w, "", &mut out, &mut lower);
    }
    for m in c.notes.iter().take(256) {
        out.push(hash(&["note:", m]));
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The words of `text` as `split_whitespace` gives them, found by looking at bytes: the text is
/// most of a message, and decoding each of its characters to test it took a fifth of the spam
/// stage's time.
pub(super) fn words(text: &str) -> impl Iterator<Item = &str> {
    let b = text.as_bytes();
    let mut at = 0;
    std::iter::from_fn(move || {
        loop {
            if at >= b.len() {
                return None;
            }
            match space_at(b, at) {
                0 => break,
                n => at += n,
            }
        }
        let start = at;
        loop {
            // To the next byte that may begin whitespace, by table: a tight loop over the word.
            match b[at..]
                .iter()
                .position(|&c| MAY_BEGIN_SPACE[usize::from(c)])
            {
                None => at = b.len(),
                Some(i) => at += i,
            }
            if at >= b.len() || space_at(b, at) > 0 {
                break;
            }
            at += 1;
        }
        // Both ends are next to a whole whitespace character, so on character boundaries.
        Some(&text[start..at])
    })
}

/// The bytes [`space_at`] may find whitespace at: ASCII whitespace and the lead bytes of the
/// others.
const MAY_BEGIN_SPACE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = matches!(i as u8, b'\t'..=b'\r' | b' ' | 0xc2 | 0xe1 | 0xe2 | 0xe3);
        i += 1;
    }
    t
};

/// The length in bytes of the whitespace character (`char::is_whitespace`, Unicode's
/// White_Space) that starts at `b[i]`, or 0. Its first byte is ASCII or a UTF-8 lead byte, so no
/// other character's bytes can match.
#[inline]
fn space_at(b: &[u8], i: usize) -> usize {
    match b[i] {
        b'\t'..=b'\r' | b' ' => 1,
        0x00..=0x7f => 0,
        0xc2 | 0xe1 | 0xe2 | 0xe3 => space_at_beyond_ascii(b, i),
        _ => 0,
    }
}

/// The rest of [`space_at`], kept out of line: a byte scan mostly sees ASCII.
#[inline(never)]
fn space_at_beyond_ascii(b: &[u8], i: usize) -> usize {
    let next = |k: usize| b.get(i + k).copied();
    match b[i] {
        0xc2 if matches!(next(1), Some(0x85 | 0xa0)) => 2,
        0xe1 if next(1) == Some(0x9a) && next(2) == Some(0x80) => 3,
        0xe2 => match (next(1), next(2)) {
            (Some(0x80), Some(0x80..=0x8a | 0xa8 | 0xa9 | 0xaf)) | (Some(0x81), Some(0x9f)) => 3,
            _ => 0,
        },
        0xe3 if next(1) == Some(0x80) && next(2) == Some(0x80) => 3,
        _ => 0,
    }
}

/// One whitespace-separated word: lower-cased, or summarised when it is a URL, an address or long.
/// `lower` is a buffer kept between words: most words are ASCII, lower-cased in it without an
/// allocation each (the same text as `to_lowercase`, which other words still go through).
fn word(w: &str, prefix: &str, out: &mut Vec<u32>, lower: &mut String) {
    // The characters trimmed are ASCII, which in UTF-8 is never part of another character:
    // trimming bytes trims the same characters.
    let trimmed = |b: &u8| {
        matches!(
            b,
            b'"' | b'\''
                | b'('
                | b')'
                | b'['
                | b']'
                | b'<'
                | b'>'
                | b'{'
                | b'}'
                | b','
                | b'.'
                | b';'
                | b':'
                | b'?'
                | b'*'
        )
    };
    let bytes = w.as_bytes();
    let start = bytes
        .iter()
        .position(|b| !trimmed(b))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !trimmed(b))
        .map_or(start, |i| i + 1);
    let w = &w[start..end];
    if let Some(token) = plain_word(w.as_bytes(), prefix) {
        out.push(token);
        return;
    }
    lower.clear();
    if w.is_ascii() {
        lower.push_str(w);
        lower.make_ascii_lowercase();
    } else {
        lower.push_str(&w.to_lowercase());
    }
    let lower = lower.as_str();
    // Only `http://`, `https://` and `www.` words are links: the first byte rules out most words.
    if matches!(lower.as_bytes().first(), Some(b'h' | b'w'))
        && let Some(host) = super::rules::url_host(lower)
    {
        out.push(hash(&["url:", &host]));
        out.push(hash(&["url:", super::rules::org_domain(&host)]));
        let path = lower.splitn(4, '/').nth(3).unwrap_or("");
        for piece in path
            .split(|c: char| !c.is_alphanumeric())
            .filter(|p| p.len() >= 2)
            .take(6)
        {
            out.push(hash(&["url-path:", piece]));
        }
        return;
    }
    // A byte search: words are short, and `rsplit_once`'s searcher cost more than the search.
    if let Some(at) = lower.bytes().rposition(|b| b == b'@')
        && let domain = &lower[at + 1..]
        && domain.contains('.')
    {
        out.push(hash(&["email:", super::rules::org_domain(domain)]));
        return;
    }
    let n = if lower.is_ascii() {
        lower.len()
    } else {
        lower.chars().count()
    };
    if n < MIN_WORD_CHARS {
        return;
    }
    if n > MAX_WORD_CHARS {
        let first = lower.chars().next().unwrap_or(' ').to_string();
        out.push(hash(&["skip:", &first, &(n / 10 * 10).to_string()]));
        return;
    }
    out.push(hash(&[prefix, lower]));
}

/// The token of the most common word — ASCII, 3 to 12 characters, no `@`, not a link — hashed
/// as it is lower-cased, in one pass and without a copy; `None` sends every other word through
/// [`word`]'s general path, which gives such a word the same token. Most of a message's words
/// come here, and the general path's five passes over each were most of the tokens' cost.
fn plain_word(w: &[u8], prefix: &str) -> Option<u32> {
    if !(MIN_WORD_CHARS..=MAX_WORD_CHARS).contains(&w.len()) {
        return None;
    }
    let starts = |p: &[u8]| w.get(..p.len()).is_some_and(|s| s.eq_ignore_ascii_case(p));
    if starts(b"http://") || starts(b"https://") || starts(b"www.") {
        return None;
    }
    let mut h = fnv(FNV_START, prefix.as_bytes());
    for &b in w {
        if !b.is_ascii() || b == b'@' {
            return None;
        }
        h = fnv(h, &[b.to_ascii_lowercase()]);
    }
    Some(fold(h))
}

const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

#[inline]
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn fold(h: u64) -> u32 {
    (h ^ (h >> 32)) as u32
}

/// FNV-1a 64 over the pieces, folded to 32 bits: stable across builds and platforms.
fn hash(pieces: &[&str]) -> u32 {
    fold(pieces.iter().fold(FNV_START, |h, p| fnv(h, p.as_bytes())))
}

/// Token counts being gathered for training.
#[derive(Debug, Default)]
pub(super) struct Counts {
    ham: u32,
    spam: u32,
    tokens: HashMap<u32, (u32, u32)>,
}

impl Counts {
    pub fn add(&mut self, tokens: &[u32], spam: bool) {
        if spam {
            self.spam += 1;
        } else {
            self.ham += 1;
        }
        for t in tokens {
            let e = self.tokens.entry(*t).or_default();
            if spam {
                e.1 += 1;
            } else {
                e.0 += 1;
            }
        }
    }

    /// The model. Every token is kept, those seen once too: they carry much of the evidence
    /// (without them, cross-validation lost 2 points of spam recall at the same ham rate), and
    /// the SpamAssassin corpus makes a model of about 330 KB.
    pub fn into_model(self) -> Model {
        let mut entries: Vec<(u32, (u32, u32))> = self.tokens.into_iter().collect();
        entries.sort_unstable_by_key(|e| e.0);
        Model::new(
            self.ham,
            self.spam,
            entries.iter().map(|e| e.0).collect(),
            entries.iter().map(|e| e.1).collect(),
        )
    }
}

/// A trained model: message counts per class and per token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Model {
    ham: u32,
    spam: u32,
    hashes: Vec<u32>,
    counts: Vec<(u32, u32)>,
    /// `starts[p]`: the index of the first hash whose top 16 bits are `p` or more. A lookup
    /// searches only its hash's run (one or two entries in a model of 70,000): a binary search
    /// of the whole array was 17 steps of cache misses for each of a message's ≈ 700 tokens.
    starts: Vec<u32>,
}

impl Model {
    fn new(ham: u32, spam: u32, hashes: Vec<u32>, counts: Vec<(u32, u32)>) -> Model {
        let mut starts = Vec::with_capacity((1 << 16) + 1);
        let mut i = 0;
        for prefix in 0..=(1u32 << 16) {
            while i < hashes.len() && (hashes[i] >> 16) < prefix {
                i += 1;
            }
            starts.push(i as u32);
        }
        Model {
            ham,
            spam,
            hashes,
            counts,
            starts,
        }
    }

    /// The index of `token`'s counts, if the model has it.
    fn find(&self, token: u32) -> Option<usize> {
        let prefix = (token >> 16) as usize;
        let (from, to) = (
            self.starts[prefix] as usize,
            self.starts[prefix + 1] as usize,
        );
        let at = self.hashes[from..to].binary_search(&token).ok()?;
        Some(from + at)
    }

    pub fn tokens(&self) -> usize {
        self.hashes.len()
    }

    pub fn messages(&self) -> (u32, u32) {
        (self.ham, self.spam)
    }

    pub fn save(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.hashes.len() * 5);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[FORMAT_VERSION, TOKENIZER_VERSION, 0, 0]);
        for n in [self.ham, self.spam, self.hashes.len() as u32] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        let mut prev = 0;
        for (h, (ham, spam)) in self.hashes.iter().zip(&self.counts) {
            varint(&mut out, h - prev);
            varint(&mut out, *ham);
            varint(&mut out, *spam);
            prev = *h;
        }
        out
    }

    pub fn load(b: &[u8]) -> anyhow::Result<Model> {
        ensure!(
            b.len() >= 20 && &b[..4] == MAGIC,
            "not a Passerelle spam model"
        );
        ensure!(
            b[4] == FORMAT_VERSION,
            "model format version {} (this build reads {FORMAT_VERSION})",
            b[4]
        );
        ensure!(
            b[5] == TOKENIZER_VERSION,
            "model made by tokenizer version {} (this build has {TOKENIZER_VERSION}): retrain it",
            b[5]
        );
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let (ham, spam, n) = (u32_at(8), u32_at(12), u32_at(16) as usize);
        // Each entry takes at least 3 bytes: a count that does not fit is a corrupt file.
        ensure!(n <= (b.len() - 20) / 3, "model truncated");
        let mut r = Reader { b, at: 20 };
        let (mut hashes, mut counts) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let mut prev = 0u32;
        for i in 0..n {
            let delta = r.varint().context("model truncated")?;
            if i > 0 && delta == 0 {
                bail!("model corrupt: token hashes not increasing");
            }
            prev = prev
                .checked_add(delta)
                .context("model corrupt: token hash overflow")?;
            hashes.push(prev);
            let ham = r.varint().context("model truncated")?;
            let spam = r.varint().context("model truncated")?;
            counts.push((ham, spam));
        }
        ensure!(r.at == b.len(), "model has trailing bytes");
        Ok(Model::new(ham, spam, hashes, counts))
    }

    /// Spam probability of a message from its tokens: near 0 ham, near 1 spam, near 0.5 unsure.
    /// `None` when the model has not seen both classes.
    pub fn probability(&self, tokens: &[u32]) -> Option<f64> {
        if self.ham == 0 || self.spam == 0 {
            return None;
        }
        let mut clues: Vec<f64> = tokens
            .iter()
            .filter_map(|t| {
                let i = self.find(*t)?;
                let f = self.token_prob(self.counts[i]);
                ((f - 0.5).abs() >= MIN_STRENGTH).then_some(f)
            })
            .collect();
        if clues.len() > MAX_CLUES {
            clues.sort_unstable_by(|a, b| (b - 0.5).abs().total_cmp(&(a - 0.5).abs()));
            clues.truncate(MAX_CLUES);
        }
        if clues.is_empty() {
            return Some(0.5);
        }
        clues.resize(clues.len().max(MIN_CLUES), 0.5);
        let (ln_ham, ln_spam) = clues
            .iter()
            .fold((0.0, 0.0), |(h, s), f| (h + f.ln(), s + (1.0 - f).ln()));
        let dof = 2 * clues.len();
        let h = 1.0 - chi2_q(-2.0 * ln_ham, dof);
        let s = 1.0 - chi2_q(-2.0 * ln_spam, dof);
        Some(((s - h + 1.0) / 2.0).clamp(0.0, 1.0))
    }

    /// Robinson's f(w): the token's spam ratio, smoothed towards 0.5 when it is rare.
    fn token_prob(&self, (ham, spam): (u32, u32)) -> f64 {
        let hr = f64::from(ham) / f64::from(self.ham);
        let sr = f64::from(spam) / f64::from(self.spam);
        let p = sr / (hr + sr);
        let n = f64::from(ham + spam);
        (UNKNOWN_STRENGTH * UNKNOWN_PROB + n * p) / (UNKNOWN_STRENGTH + n)
    }
}

/// P(χ² ≥ x2) for `dof` (even) degrees of freedom, as a Poisson sum.
fn chi2_q(x2: f64, dof: usize) -> f64 {
    let m = x2 / 2.0;
    let mut term = (-m).exp();
    let mut sum = term;
    for i in 1..dof / 2 {
        term *= m / i as f64;
        sum += term;
    }
    sum.min(1.0)
}

fn varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn varint(&mut self) -> Option<u32> {
        let mut v: u32 = 0;
        for shift in (0..35).step_by(7) {
            let byte = *self.b.get(self.at)?;
            self.at += 1;
            let bits = u32::from(byte & 0x7f);
            if shift == 28 && bits > 0x0f {
                return None;
            }
            v |= bits << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(ham: &[&[u32]], spam: &[&[u32]]) -> Model {
        let mut c = Counts::default();
        ham.iter().for_each(|t| c.add(t, false));
        spam.iter().for_each(|t| c.add(t, true));
        c.into_model()
    }

    #[test]
    fn whitespace_by_bytes_is_unicode_whitespace() {
        for c in (0..=0x10_ffff).filter_map(char::from_u32) {
            let mut buf = [0; 4];
            let bytes = c.encode_utf8(&mut buf).as_bytes();
            let expected = if c.is_whitespace() { bytes.len() } else { 0 };
            assert_eq!(space_at(bytes, 0), expected, "U+{:04X}", c as u32);
        }
    }

    /// The tokens of one word of the body.
    fn one(w: &str) -> Vec<u32> {
        let mut out = Vec::new();
        word(w, "", &mut out, &mut String::new());
        out
    }

    #[test]
    fn words_are_trimmed_as_by_characters() {
        // Trimming is idempotent: the word trimmed the old way gives the old tokens.
        let old = |w: &str| one(w.trim_matches(|c: char| "\"'()[]<>{},.;:?*".contains(c)));
        for w in [
            "(Payment):",
            "\"quoted\"",
            "...",
            "",
            "é.",
            ".é",
            "«ok»",
            "[[x]]",
            "?*?",
            "a.b.",
            "(straße)",
            "::日本::",
        ] {
            assert_eq!(one(w), old(w), "{w:?}");
        }
    }

    #[test]
    fn words_split_as_split_whitespace() {
        let pieces = [
            "a",
            "Wort",
            "é",
            "日本",
            "x\u{2009}y",
            " ",
            "\t",
            "\r\n",
            "\u{0b}",
            "\u{85}",
            "\u{a0}",
            "\u{1680}",
            "\u{2000}",
            "\u{200a}",
            "\u{200b}",
            "\u{2028}",
            "\u{202f}",
            "\u{205f}",
            "\u{3000}",
            "\u{e2}\u{80}",
            "\u{c2}",
            "\u{1f600}",
            "",
        ];
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..5_000 {
            let mut text = String::new();
            for _ in 0..rng.random_range(0..12) {
                text.push_str(pieces[rng.random_range(0..pieces.len())]);
            }
            let expected: Vec<&str> = text.split_whitespace().collect();
            assert_eq!(words(&text).collect::<Vec<_>>(), expected, "{text:?}");
        }
    }

    #[test]
    fn lookups_find_what_a_binary_search_finds() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut hashes: Vec<u32> = (0..5_000).map(|_| rng.random()).collect();
        hashes.extend([0, 1, 0xffff, 0x1_0000, u32::MAX - 1, u32::MAX]);
        hashes.sort_unstable();
        hashes.dedup();
        let counts = vec![(1, 1); hashes.len()];
        let m = Model::new(1, 1, hashes.clone(), counts);
        for t in hashes
            .iter()
            .copied()
            .chain((0..5_000).map(|_| rng.random()))
        {
            assert_eq!(m.find(t), hashes.binary_search(&t).ok(), "{t:#x}");
        }
        assert_eq!(Model::new(1, 1, Vec::new(), Vec::new()).find(7), None);
    }

    #[test]
    fn round_trip_and_corruption() {
        let m = model(&[&[1, 2, 300_000], &[2]], &[&[5, u32::MAX]]);
        let bytes = m.save();
        assert_eq!(Model::load(&bytes).unwrap(), m);
        type Corruption<'a> = (&'a dyn Fn(&mut Vec<u8>), &'a str);
        let cases: &[Corruption] = &[
            (&|b| b[0] = b'X', "not a Passerelle"),
            (&|b| b[4] = 2, "format version 2"),
            (&|b| b[5] = 99, "tokenizer version 99"),
            (&|b| b.truncate(b.len() - 1), "truncated"),
            (&|b| b.push(0), "trailing"),
            (&|b| b[16] = 200, "truncated"),
        ];
        for (corrupt, want) in cases {
            let mut b = bytes.clone();
            corrupt(&mut b);
            let err = Model::load(&b).unwrap_err().to_string();
            assert!(err.contains(want), "{err} should contain {want}");
        }
    }

    /// Words the one-pass path takes get the token the general path gives them, and the words
    /// it must leave (links, addresses, other lengths, non-ASCII) are left to it.
    #[test]
    fn plain_words_get_the_general_token() {
        let general = |w: &str, prefix: &str| {
            let mut out = Vec::new();
            let lower = w.to_lowercase();
            if (MIN_WORD_CHARS..=MAX_WORD_CHARS).contains(&lower.chars().count()) {
                out.push(hash(&[prefix, &lower]));
            }
            out
        };
        for w in [
            "Invoice",
            "MEETING",
            "x-ray",
            "a1b2c3",
            "twelve_chars",
            "Www",
            "httpd",
        ] {
            for prefix in ["", "s:"] {
                assert_eq!(
                    plain_word(w.as_bytes(), prefix),
                    general(w, prefix).first().copied(),
                    "{w}"
                );
            }
        }
        for w in [
            "ab",
            "thirteen_char",
            "a@b.test",
            "WWW.x.test",
            "http://a.t",
            "HTTPS://a.t",
            "école",
        ] {
            assert_eq!(plain_word(w.as_bytes(), ""), None, "{w}");
        }
    }

    /// The ASCII fast path lower-cases as `to_lowercase` does, so models stay valid.
    #[test]
    fn words_lower_case_as_before() {
        for w in [
            "Invoice",
            "INVOICE",
            "ÉCOLE",
            "Straße",
            "ΟΔΟΣ",
            "(Payment):",
        ] {
            let lower = w
                .trim_matches(|c: char| "\"'()[]<>{},.;:?*".contains(c))
                .to_lowercase();
            assert_eq!(one(w), vec![hash(&["", &lower])], "{w}");
        }
        assert_eq!(one("Invoice"), one("invoice"));
        assert!(one("no").is_empty());
        assert_eq!(
            one("Supercalifragilistic"),
            vec![hash(&["skip:", "s", "20"])]
        );
    }

    #[test]
    fn probabilities() {
        // Tokens 1..=20 hammy, 21..=40 spammy, each in every message of its class.
        let ham: Vec<u32> = (1..=20).collect();
        let spam: Vec<u32> = (21..=40).collect();
        let m = model(&[&ham[..]; 10], &[&spam[..]; 10]);
        let p = |t: &[u32]| m.probability(t).unwrap();
        assert!(p(&ham) < 0.01, "{}", p(&ham));
        assert!(p(&spam) > 0.99, "{}", p(&spam));
        // Both kinds of evidence at once: unsure, not certain either way.
        let both: Vec<u32> = (1..=40).collect();
        assert!((p(&both) - 0.5).abs() < 0.1, "{}", p(&both));
        assert_eq!(p(&[1000, 1001]), 0.5);
        assert_eq!(model(&[&ham], &[]).probability(&ham), None);
    }

    #[test]
    fn varints() {
        for v in [0, 1, 127, 128, 16_383, 16_384, u32::MAX] {
            let mut b = Vec::new();
            varint(&mut b, v);
            assert_eq!(Reader { b: &b, at: 0 }.varint(), Some(v), "{v}");
        }
        assert_eq!(
            Reader {
                b: &[0xff; 5],
                at: 0
            }
            .varint(),
            None
        );
    }
}
