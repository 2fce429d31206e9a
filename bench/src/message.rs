//! The messages the load generator sends, in three shapes of everyday mail. Each message is its
//! own: its number is in the headers and in every part, so that no scanner can answer a part
//! from a cache of contents it has already seen (clamd keeps the hashes of clean files), as no
//! gateway can on real mail.
//!
//! - `text`: one `text/plain` part, sent as it is (7bit): the cheapest shape to scan.
//! - `alternative`: `multipart/alternative`, a plain text part and its HTML version in
//!   quoted-printable, as most mail clients send a message someone typed.
//! - `attachment`: `multipart/mixed`, a short plain text note and a PDF document in base64, as a
//!   referral or a lab report travels.
//!
//! Sizes count every octet the server receives before the final dot, headers included.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    Text,
    Alternative,
    Attachment,
}

/// Everything of a shape that does not change from one message to the next.
pub struct Template {
    shape: Shape,
    /// The prose of the text parts, in lines of at most 76 octets.
    text: String,
    /// The HTML part's paragraphs, already quoted-printable.
    html: String,
    /// The attachment, with a place for the message's number at `pdf_number`.
    pdf: Vec<u8>,
    pdf_number: usize,
}

const PROSE: &str = "Hello team, please find below the notes from this week's planning \
    meeting. The delivery schedule for the northern warehouse moves to Tuesday, and the new \
    invoices will be sent to the accounting office before the end of the month. Maria will \
    share the updated spreadsheet with the regional managers tomorrow. If you have questions \
    about the budget, contact the finance desk. Thank you for your work. ";

/// The envelope the sizes are worked out with (the load generator's defaults).
const FROM: &str = "sender@bench.test";
const TO: &str = "rcpt@example.test";

/// The boundary of the multipart shapes.
const BOUNDARY: &str = "=_bench_0123456789abcdef";

impl Template {
    pub fn new(shape: Shape, size: usize) -> Template {
        let mut t = Template {
            shape,
            text: String::new(),
            html: String::new(),
            pdf: Vec::new(),
            pdf_number: 0,
        };
        let overhead = t.render(0, FROM, TO).len();
        let room = size.saturating_sub(overhead);
        match shape {
            Shape::Text => t.text = prose_lines(room),
            // The HTML version, with its markup and quoted-printable, is the larger of the two.
            Shape::Alternative => {
                t.text = prose_lines(room * 2 / 5);
                t.html = quoted_printable(&html_of(&prose_lines(room * 2 / 5)));
                let left = size.saturating_sub(t.render(0, FROM, TO).len());
                t.text.push_str(&prose_lines(left));
            }
            // base64 makes four octets of three, in lines of 76.
            Shape::Attachment => {
                t.text = prose_lines(600.min(room));
                let overhead = t.render(0, FROM, TO).len();
                let raw = size.saturating_sub(overhead) * 57 / 78;
                // The page's markup grows with its text: scale the text down to fit, a few
                // passes at most, so that even a 50 MB message is sized at once.
                let mut text = raw;
                loop {
                    let len = pdf(&prose_lines(text)).0.len();
                    if len <= raw || text == 0 {
                        break;
                    }
                    text = (text * raw / len).saturating_sub(64);
                }
                (t.pdf, t.pdf_number) = pdf(&prose_lines(text));
            }
        }
        t
    }

    /// Message number `n`, without the final dot.
    pub fn render(&self, n: u64, from: &str, to: &str) -> Vec<u8> {
        let mut m = format!(
            "From: Bench Sender <{from}>\r\nTo: <{to}>\r\nSubject: Quarterly figures, part {n}\r\n\
             Date: Thu, 01 Jan 2026 12:00:00 +0000\r\nMessage-ID: <bench-{n}@bench.test>\r\n\
             MIME-Version: 1.0\r\n"
        );
        let note = format!("Reference {n}.\r\n");
        match self.shape {
            Shape::Text => {
                m.push_str("Content-Type: text/plain; charset=us-ascii\r\n\r\n");
                m.push_str(&note);
                m.push_str(&self.text);
            }
            Shape::Alternative => {
                m.push_str(&format!(
                    "Content-Type: multipart/alternative; boundary=\"{BOUNDARY}\"\r\n\r\n\
                     --{BOUNDARY}\r\nContent-Type: text/plain; charset=us-ascii\r\n\
                     Content-Transfer-Encoding: 7bit\r\n\r\n{note}{}\r\n\
                     --{BOUNDARY}\r\nContent-Type: text/html; charset=us-ascii\r\n\
                     Content-Transfer-Encoding: quoted-printable\r\n\r\n\
                     <html><body><p>Reference {n}.</p>=\r\n{}\r\n</body></html>\r\n\
                     --{BOUNDARY}--\r\n",
                    self.text, self.html
                ));
            }
            Shape::Attachment => {
                let mut pdf = self.pdf.clone();
                let number = format!("{n:020}");
                // Empty while the template is being sized.
                if let Some(place) = pdf.get_mut(self.pdf_number..self.pdf_number + 20) {
                    place.copy_from_slice(number.as_bytes());
                }
                let pdf = STANDARD.encode(pdf);
                m.push_str(&format!(
                    "Content-Type: multipart/mixed; boundary=\"{BOUNDARY}\"\r\n\r\n\
                     --{BOUNDARY}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n\
                     {note}{}\r\n\
                     --{BOUNDARY}\r\nContent-Type: application/pdf; name=\"report-{n}.pdf\"\r\n\
                     Content-Disposition: attachment; filename=\"report-{n}.pdf\"\r\n\
                     Content-Transfer-Encoding: base64\r\n\r\n",
                    self.text
                ));
                for line in pdf.as_bytes().chunks(76) {
                    m.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
                    m.push_str("\r\n");
                }
                m.push_str(&format!("--{BOUNDARY}--\r\n"));
            }
        }
        m.into_bytes()
    }
}

#[derive(clap::Args)]
pub struct SampleArgs {
    /// What the message looks like (as `load --shape`).
    #[arg(long, value_enum, default_value_t = Shape::Text)]
    pub shape: Shape,
    /// Message size in octets, headers included (as `load --size`).
    #[arg(long, default_value_t = 10 * 1024)]
    pub size: usize,
    /// The message's number (each message the load sends has its own).
    #[arg(long, default_value_t = 1)]
    pub number: u64,
}

/// Writes one message to standard output: to read what a load sends, or to time a stage on it.
pub fn sample(args: SampleArgs) -> anyhow::Result<()> {
    use std::io::Write as _;
    let message = Template::new(args.shape, args.size).render(args.number, FROM, TO);
    std::io::stdout().write_all(&message)?;
    Ok(())
}

/// Business prose in CRLF lines of at most 76 octets, about `size` octets long.
fn prose_lines(size: usize) -> String {
    let mut out = String::with_capacity(size + 80);
    let mut line = String::new();
    for w in PROSE.split_whitespace().cycle() {
        if out.len() + line.len() >= size {
            break;
        }
        if line.len() + w.len() + 1 > 76 {
            out.push_str(&line);
            out.push_str("\r\n");
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(w);
    }
    if !line.is_empty() {
        out.push_str(&line);
        out.push_str("\r\n");
    }
    out
}

/// The prose as HTML paragraphs of six lines each, one long line per paragraph.
fn html_of(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines
        .chunks(6)
        .map(|p| format!("<p style=\"margin:0 0 1em 0\">{}</p>\n", p.join(" ")))
        .collect()
}

/// Quoted-printable (RFC 2045) for ASCII text: `=` escaped, soft line breaks before 76 octets,
/// and a dot that would start a line escaped too, so that no line needs SMTP's dot-stuffing.
fn quoted_printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 11 / 10);
    for line in text.lines() {
        let mut width = 0;
        for c in line.chars() {
            let piece = match c {
                '=' => "=3D".to_owned(),
                '.' if width == 0 || width + 1 > 75 => "=2E".to_owned(),
                c => c.to_string(),
            };
            if width + piece.len() > 75 {
                out.push_str("=\r\n");
                width = 0;
            }
            out.push_str(&piece);
            width += piece.len();
        }
        out.push_str("\r\n");
    }
    out
}

/// A one-page PDF whose page shows `text` under a reference number, with a correct
/// cross-reference table, so that a scanner's PDF parser reads it as a real document. Returns
/// it with where the number's 20 digits are: each message writes its own there, which changes
/// no length or offset.
fn pdf(text: &str) -> (Vec<u8>, usize) {
    const REFERENCE: &str = "BT /F1 10 Tf 50 780 Td 12 TL (Reference ";
    let mut content = format!("{REFERENCE}{:020}) Tj T*\n", 0);
    for line in text.lines() {
        content.push_str(&format!(
            "({}) Tj T*\n",
            line.replace(['(', ')', '\\'], " ")
        ));
    }
    content.push_str("ET\n");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R \
         /Resources << /Font << /F1 5 0 R >> >> >>"
            .to_owned(),
        format!(
            "<< /Length {} >>\nstream\n{content}endstream",
            content.len()
        ),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_owned(),
    ];
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    let mut number = 0;
    for (i, o) in objects.iter().enumerate() {
        offsets.push(out.len());
        let object = format!("{} 0 obj\n{o}\nendobj\n", i + 1);
        if let Some(at) = object.find(REFERENCE) {
            number = out.len() + at + REFERENCE.len();
        }
        out.extend_from_slice(object.as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for o in offsets {
        out.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    (out, number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_shape_comes_to_the_size_asked_for_and_each_message_is_its_own() {
        for shape in [Shape::Text, Shape::Alternative, Shape::Attachment] {
            let t = Template::new(shape, 10 * 1024);
            let (a, b) = (
                t.render(1, "a@b.test", "c@d.test"),
                t.render(2, "a@b.test", "c@d.test"),
            );
            assert!(
                (9 * 1024..=11 * 1024).contains(&a.len()),
                "{shape:?}: {} octets",
                a.len()
            );
            assert_ne!(a, b);
            assert!(
                a.windows(2).all(|w| w[1] != b'\n' || w[0] == b'\r'),
                "{shape:?}: bare LF"
            );
            assert!(
                a.split(|&c| c == b'\n').all(|l| l.len() <= 998),
                "{shape:?}: long line"
            );
            // Sent after DATA as they are: a line starting with a dot would need stuffing.
            assert!(
                a.split(|&c| c == b'\n').all(|l| !l.starts_with(b".")),
                "{shape:?}: a line starts with a dot"
            );
        }
    }

    #[test]
    fn the_attachment_is_a_pdf_whose_xref_points_at_its_objects() {
        let (doc, number) = pdf(&prose_lines(2000));
        let text = String::from_utf8(doc).unwrap();
        assert_eq!(&text[number..number + 21], "00000000000000000000)");
        let xref: usize = text
            .rsplit("startxref\n")
            .next()
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(text[xref..].starts_with("xref\n"));
        for (i, entry) in text[xref..].lines().skip(3).take(5).enumerate() {
            let at: usize = entry[..10].parse().unwrap();
            assert!(
                text[at..].starts_with(&format!("{} 0 obj", i + 1)),
                "object {}",
                i + 1
            );
        }
    }
}
