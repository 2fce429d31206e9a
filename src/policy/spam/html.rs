//! HTML to plain text for the classifier, and the links for `SUSPICIOUS_LINK`, in one forward pass.
//!
//! Not an HTML parser: tags are dropped, `script`/`style`/comments skipped, a few entities
//! decoded. Inline tags leave no space, so `V<b></b>iagra` reads as one word, as a person sees it.
//! Every search moves forward from where the last one stopped, so the pass is linear.

/// One `<a href>` and the text a reader sees for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Link {
    pub href: String,
    pub text: String,
}

/// Enough for any real message; past it, links add nothing.
const MAX_LINKS: usize = 256;
/// Anchor text kept per link: a URL shown to the reader is short.
const MAX_LINK_TEXT: usize = 256;

/// The text of `html`; its links are appended to `links`.
pub(super) fn to_text(html: &str, links: &mut Vec<Link>) -> String {
    let b = html.as_bytes();
    let mut out = String::with_capacity(html.len() / 2);
    let mut anchor: Option<(String, usize)> = None;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'<' if b[i + 1..].starts_with(b"!--") => {
                i = find(b, i + 4, b"-->").map_or(b.len(), |j| j + 3);
            }
            b'<' => {
                let end = tag_end(b, i + 1);
                // `<` and `>` are ASCII, so these slice boundaries are character boundaries.
                let tag = &html[i + 1..end];
                let (closing, name) = tag_name(tag);
                i = end + 1;
                match name.as_str() {
                    "script" | "style" | "title" | "head" if !closing => {
                        i = skip_element(b, i, name.as_bytes());
                        out.push(' ');
                    }
                    "a" if !closing => {
                        close_anchor(&mut anchor, &out, links);
                        if let Some(href) = attribute(tag, "href") {
                            anchor = Some((href, out.len()));
                        }
                    }
                    "a" => close_anchor(&mut anchor, &out, links),
                    n if is_block(n) => out.push(' '),
                    _ => {}
                }
            }
            b'&' => {
                let (c, len) = entity(&b[i..]);
                out.push(c);
                i += len;
            }
            _ => {
                let j = b[i..]
                    .iter()
                    .position(|&c| c == b'<' || c == b'&')
                    .map_or(b.len(), |p| i + p);
                out.push_str(&html[i..j]);
                i = j;
            }
        }
    }
    close_anchor(&mut anchor, &out, links);
    out
}

fn close_anchor(anchor: &mut Option<(String, usize)>, out: &str, links: &mut Vec<Link>) {
    if let Some((href, start)) = anchor.take()
        && links.len() < MAX_LINKS
    {
        let text: String = out[start..].trim().chars().take(MAX_LINK_TEXT).collect();
        links.push(Link { href, text });
    }
}

/// Tags that separate words on screen.
fn is_block(name: &str) -> bool {
    matches!(
        name,
        "br" | "p"
            | "div"
            | "tr"
            | "td"
            | "th"
            | "li"
            | "ul"
            | "ol"
            | "table"
            | "h1"
            | "h2"
            | "h3"
            | "h4"
            | "h5"
            | "h6"
            | "hr"
            | "body"
            | "html"
            | "center"
            | "blockquote"
            | "img"
    )
}

/// Index of the `>` closing a tag that starts at `from`, quotes respected; the end if none.
fn tag_end(b: &[u8], from: usize) -> usize {
    let mut quote = None;
    for (j, &c) in b.iter().enumerate().skip(from) {
        match (quote, c) {
            (None, b'"' | b'\'') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, b'>') => return j,
            _ => {}
        }
    }
    b.len()
}

/// Whether a tag closes, and its lower-cased name.
fn tag_name(tag: &str) -> (bool, String) {
    let tag = tag.trim_start();
    let (closing, rest) = match tag.strip_prefix('/') {
        Some(rest) => (true, rest),
        None => (false, tag),
    };
    let name = rest
        .split(|c: char| c.is_ascii_whitespace() || c == '/' || c == '>')
        .next()
        .unwrap_or("")
        .chars()
        .take(16)
        .collect::<String>()
        .to_ascii_lowercase();
    (closing, name)
}

/// The value of attribute `name` in a tag's text (after `<`), unquoted.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let b = tag.as_bytes();
    // Skip the tag name.
    let mut i = b
        .iter()
        .position(|c| c.is_ascii_whitespace())
        .unwrap_or(b.len());
    while i < b.len() {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'/') {
            i += 1;
        }
        let start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'=' && b[i] != b'/' {
            i += 1;
        }
        let key = &tag[start..i];
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = None;
        if i < b.len() && b[i] == b'=' {
            i += 1;
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            let (vstart, vend, next) = match b.get(i) {
                Some(&q @ (b'"' | b'\'')) => {
                    let end = b[i + 1..]
                        .iter()
                        .position(|&c| c == q)
                        .map_or(b.len(), |p| i + 1 + p);
                    (i + 1, end, end + 1)
                }
                _ => {
                    let end = b[i..]
                        .iter()
                        .position(|c| c.is_ascii_whitespace())
                        .map_or(b.len(), |p| i + p);
                    (i, end, end)
                }
            };
            value = Some(&tag[vstart..vend]);
            i = next;
        }
        if key.eq_ignore_ascii_case(name) {
            // Entities in attribute values (`&amp;` in query strings) are decoded too.
            return value.map(|v| to_text(v, &mut Vec::new()).trim().to_string());
        }
        if start == i {
            i += 1;
        }
    }
    None
}

/// Skips to just after `</name>` (case-insensitive), or to the end.
fn skip_element(b: &[u8], from: usize, name: &[u8]) -> usize {
    let mut i = from;
    while let Some(j) = find(b, i, b"</") {
        let after = j + 2;
        if b.len() >= after + name.len() && b[after..after + name.len()].eq_ignore_ascii_case(name)
        {
            return tag_end(b, after) + 1;
        }
        i = after;
    }
    b.len()
}

/// First index of `needle` in `b` at or after `from`.
fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut i = from;
    while i < b.len() {
        let j = i + b[i..].iter().position(|&c| c == first)?;
        if b[j..].starts_with(needle) {
            return Some(j);
        }
        i = j + 1;
    }
    None
}

/// Decodes the entity at the start of `b` (which starts with `&`): the character and how many
/// bytes it took. Unknown entities stay as a literal `&`.
fn entity(b: &[u8]) -> (char, usize) {
    let Some(semi) = b.iter().take(12).position(|&c| c == b';') else {
        return ('&', 1);
    };
    let name = &b[1..semi];
    let c = match name {
        b"amp" => Some('&'),
        b"lt" => Some('<'),
        b"gt" => Some('>'),
        b"quot" => Some('"'),
        b"apos" => Some('\''),
        b"nbsp" => Some(' '),
        [b'#', b'x' | b'X', hex @ ..] => std::str::from_utf8(hex)
            .ok()
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .and_then(char::from_u32),
        [b'#', dec @ ..] => std::str::from_utf8(dec)
            .ok()
            .and_then(|d| d.parse::<u32>().ok())
            .and_then(char::from_u32),
        _ => None,
    };
    match c {
        Some(c) => (c, semi + 1),
        None => ('&', 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_links() {
        /// HTML, its text (spaces collapsed, lower-cased), its links (href, text).
        type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);
        let cases: &[Case] = &[
            ("<p>Hello</p><p>world</p>", "hello world", &[]),
            ("V<b></b>iagra &amp; more&nbsp;x", "viagra & more x", &[]),
            (
                "<style>p{}</style><script>var a='<a>';</script>Hi",
                "hi",
                &[],
            ),
            ("<!-- <a href=x>y</a> -->ok", "ok", &[]),
            (
                "<A HREF=\"http://a.test/?x=1&amp;y=2\">Click <b>here</b></A>",
                "click here",
                &[("http://a.test/?x=1&y=2", "Click here")],
            ),
            (
                "<a href='http://b.test' title=\"x > y\">http://c.test</a>",
                "http://c.test",
                &[("http://b.test", "http://c.test")],
            ),
            (
                "<a href=http://d.test>unclosed",
                "unclosed",
                &[("http://d.test", "unclosed")],
            ),
            ("&#72;&#x49; &bogus; &", "hi &bogus; &", &[]),
            ("<<<>>>", ">>", &[]),
            ("<a", "", &[]),
        ];
        for (html, text, want) in cases {
            let mut links = Vec::new();
            let got = to_text(html, &mut links);
            let norm = got.split_whitespace().collect::<Vec<_>>().join(" ");
            assert_eq!(norm.to_lowercase(), *text, "{html}");
            if !want.is_empty() {
                let got: Vec<(&str, &str)> = links
                    .iter()
                    .map(|l| (l.href.as_str(), l.text.as_str()))
                    .collect();
                assert_eq!(got, *want, "{html}");
            }
        }
    }
}
