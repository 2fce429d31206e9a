//! Virus scanning against a real clamd with the repository's EICAR-only signature database
//! (`scripts/clamd.sh` starts one and exports `CLAMD_ADDRESS`, and `CLAMD_SOCKET` for its Unix
//! socket). Without `CLAMD_ADDRESS` the clamd tests are skipped with a note, unless
//! `PASSERELLE_REQUIRE_CLAMD=1`, where a missing clamd is a failure. The error tests need no clamd.

mod support;

use mail_builder::MessageBuilder;
use mail_parser::{MessageParser, MimeHeaders};
use passerelle::policy::virus::{ScanError, Scanner, Verdict, VirusConfig};
use std::io::{Cursor, Write};
use std::time::{Duration, Instant};
use zip::write::SimpleFileOptions;

const EICAR: &[u8] = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
const PDF: &[u8] =
    b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n";

use support::clamd;

fn scanner(address: &str, timeout: Duration) -> Scanner {
    Scanner::new(&VirusConfig {
        clamd: address.to_string(),
        timeout,
        max_parts: 1000,
    })
}

fn zip(files: &[(&str, &[u8])], options: SimpleFileOptions) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, data) in files {
        zip.start_file(*name, options).unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// A text body and two attachments: `name` with `data`, then a clean `report.pdf`.
fn with_attachment(content_type: &str, name: &str, data: &[u8]) -> Vec<u8> {
    MessageBuilder::new()
        .from("ann@example.org")
        .to("bob@example.net")
        .subject("Quarterly figures")
        .message_id("q3@example.org")
        .text_body("Hello Bob,\r\n\r\nthe figures are attached.\r\n")
        .attachment(content_type.to_string(), name.to_string(), data.to_vec())
        .attachment("application/pdf", "report.pdf", PDF)
        .write_to_vec()
        .unwrap()
}

/// The raw bytes (headers and body) of the part with this file name.
fn part_named(raw: &[u8], name: &str) -> Vec<u8> {
    let message = MessageParser::default().parse(raw).unwrap();
    let part = message
        .parts
        .iter()
        .find(|p| p.attachment_name() == Some(name))
        .unwrap_or_else(|| panic!("no part named {name}"));
    raw[part.raw_header_offset() as usize..part.raw_end_offset() as usize].to_vec()
}

#[tokio::test]
async fn ping_answers() {
    let Some(address) = clamd() else { return };
    scanner(&address, Duration::from_secs(5))
        .ping()
        .await
        .unwrap();
}

#[tokio::test]
async fn clean_message_is_clean() {
    let Some(address) = clamd() else { return };
    let raw = with_attachment("application/pdf", "figures.pdf", PDF);
    let report = scanner(&address, Duration::from_secs(10))
        .scan(&raw)
        .await
        .unwrap();
    assert_eq!(report.verdict, Verdict::Clean);
    assert!(report.findings.is_empty(), "{report:?}");
    assert!(report.unscanned_encrypted.is_empty(), "{report:?}");
}

#[tokio::test]
async fn infected_attachment_is_replaced_and_the_rest_kept() {
    let Some(address) = clamd() else { return };
    let raw = with_attachment("application/octet-stream", "invoice.com", EICAR);
    assert!(
        !raw.windows(EICAR.len()).any(|w| w == EICAR),
        "EICAR goes base64"
    );
    let scanner = scanner(&address, Duration::from_secs(10));
    let report = scanner.scan(&raw).await.unwrap();

    assert_eq!(report.findings.len(), 1, "{report:?}");
    let finding = &report.findings[0];
    assert_eq!(finding.part, "2");
    assert_eq!(finding.filename.as_deref(), Some("invoice.com"));
    assert!(finding.virus.contains("EICAR"), "{}", finding.virus);
    let Verdict::Cleaned { message: cleaned } = &report.verdict else {
        panic!("{report:?}")
    };

    let parsed = MessageParser::default().parse(cleaned).unwrap();
    assert_eq!(parsed.subject(), Some("Quarterly figures"));
    let notice = parsed
        .part(parsed.root_part().sub_parts().unwrap()[1])
        .unwrap();
    assert_eq!(
        notice.text_contents().unwrap().replace("\r\n", " "),
        format!(
            "The attachment invoice.com was removed by the mail gateway: it contained the virus {}.",
            finding.virus
        )
    );
    assert!(notice.attachment_name().is_none());
    // The other attachment, the body and the header block are byte-identical.
    assert_eq!(
        part_named(cleaned, "report.pdf"),
        part_named(&raw, "report.pdf")
    );
    let original = MessageParser::default().parse(&raw).unwrap();
    let infected = original
        .part(original.root_part().sub_parts().unwrap()[1])
        .unwrap();
    let start = infected.raw_header_offset() as usize;
    let end = infected.raw_end_offset() as usize;
    assert_eq!(&cleaned[..start], &raw[..start]);
    assert!(cleaned.ends_with(&raw[end..]));
    assert_eq!(
        parsed.body_text(0).as_deref(),
        Some("Hello Bob,\r\n\r\nthe figures are attached.\r\n")
    );

    // The report goes to the event log: no message bytes in it.
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(
        json["verdict"],
        serde_json::json!({ "Cleaned": {} }),
        "{json}"
    );
    assert_eq!(json["findings"][0]["filename"], "invoice.com");

    // What is delivered scans clean.
    let again = scanner.scan(cleaned).await.unwrap();
    assert_eq!(again.verdict, Verdict::Clean, "{again:?}");
}

/// Above 16 KiB the message is parsed on a blocking thread, below on the task's own: both clean.
#[tokio::test]
async fn infected_attachment_is_removed_from_small_and_large_messages() {
    let Some(address) = clamd() else { return };
    let scanner = scanner(&address, Duration::from_secs(10));
    for filler in [0usize, 40 << 10] {
        let raw = MessageBuilder::new()
            .from("ann@example.org")
            .to("bob@example.net")
            .subject("Figures")
            .text_body("See attached.\r\n")
            .attachment("application/octet-stream", "invoice.com", EICAR)
            .attachment("application/pdf", "report.pdf", vec![b'%'; filler + 1])
            .write_to_vec()
            .unwrap();
        assert_eq!(raw.len() > 16 << 10, filler > 0);
        let report = scanner.scan(&raw).await.unwrap();
        let Verdict::Cleaned { message } = &report.verdict else {
            panic!("{} octets: {report:?}", raw.len())
        };
        assert_eq!(report.findings[0].filename.as_deref(), Some("invoice.com"));
        assert_eq!(
            part_named(message, "report.pdf"),
            part_named(&raw, "report.pdf")
        );
    }
}

#[tokio::test]
async fn virus_inside_a_zip_attachment_is_removed() {
    let Some(address) = clamd() else { return };
    let archive = zip(
        &[
            ("readme.txt", b"nothing to see"),
            ("tools/eicar.com", EICAR),
        ],
        SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated),
    );
    let raw = with_attachment("application/zip", "invoice.zip", &archive);
    let report = scanner(&address, Duration::from_secs(10))
        .scan(&raw)
        .await
        .unwrap();
    assert_eq!(report.findings.len(), 1, "{report:?}");
    assert_eq!(report.findings[0].filename.as_deref(), Some("invoice.zip"));
    let Verdict::Cleaned { message: cleaned } = &report.verdict else {
        panic!("{report:?}")
    };
    let text = String::from_utf8_lossy(cleaned).replace("\r\n", " ");
    assert!(
        text.contains("The attachment invoice.zip was removed by the mail gateway"),
        "{text}"
    );
    assert_eq!(
        part_named(cleaned, "report.pdf"),
        part_named(&raw, "report.pdf")
    );
    assert!(report.unscanned_encrypted.is_empty());
}

#[tokio::test]
async fn virus_in_the_text_body_is_uncleanable() {
    let Some(address) = clamd() else { return };
    let scanner = scanner(&address, Duration::from_secs(10));
    let mut body = b"Hello,\r\n".to_vec();
    body.extend_from_slice(EICAR);
    body.extend_from_slice(b"\r\nBye\r\n");
    let body = String::from_utf8(body).unwrap();

    // In a multipart message beside a clean attachment.
    let raw = MessageBuilder::new()
        .from("ann@example.org")
        .to("bob@example.net")
        .subject("hi")
        .text_body(body.clone())
        .attachment("application/pdf", "report.pdf", PDF)
        .write_to_vec()
        .unwrap();
    let report = scanner.scan(&raw).await.unwrap();
    assert_eq!(report.verdict, Verdict::Uncleanable, "{report:?}");
    assert_eq!(report.findings.len(), 1, "{report:?}");
    assert_eq!(report.findings[0].part, "1");
    assert_eq!(report.findings[0].filename, None);

    // In the plain text beside its HTML version, sent as it is: the whole-message scan reads
    // it, and the part is then named; an infected attachment beside it is named too, in
    // message order.
    let alternative = |attachment: &[u8]| {
        format!(
            "From: ann@example.org\r\nSubject: hi\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=\"m\"\r\n\r\n\
             --m\r\nContent-Type: multipart/alternative; boundary=\"a\"\r\n\r\n\
             --a\r\nContent-Type: text/plain\r\n\r\n{body}\r\n\
             --a\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
             <p style=3D\"x\">Hello</p>\r\n--a--\r\n\
             --m\r\nContent-Type: application/octet-stream; name=\"a.bin\"\r\n\r\n{}\r\n--m--\r\n",
            String::from_utf8_lossy(attachment)
        )
    };
    let report = scanner
        .scan(alternative(b"clean").as_bytes())
        .await
        .unwrap();
    assert_eq!(report.verdict, Verdict::Uncleanable, "{report:?}");
    let parts: Vec<&str> = report.findings.iter().map(|f| f.part.as_str()).collect();
    assert_eq!(parts, ["1.1"], "{report:?}");
    let report = scanner.scan(alternative(EICAR).as_bytes()).await.unwrap();
    assert_eq!(report.verdict, Verdict::Uncleanable, "{report:?}");
    let parts: Vec<&str> = report.findings.iter().map(|f| f.part.as_str()).collect();
    assert_eq!(parts, ["1.1", "2"], "{report:?}");
    assert_eq!(report.findings[1].filename.as_deref(), Some("a.bin"));
    // The same message with a clean body is delivered without its infected attachment.
    let clean = alternative(EICAR).replace(&body, "Hello\r\n");
    let report = scanner.scan(clean.as_bytes()).await.unwrap();
    assert!(
        matches!(report.verdict, Verdict::Cleaned { .. }),
        "{report:?}"
    );

    // As the only part of a single-part message, sent as it is: one scan of the whole message
    // reads the body's bytes, and finds it there.
    let raw = format!("From: ann@example.org\r\nTo: bob@example.net\r\nSubject: hi\r\n\r\n{body}");
    let report = scanner.scan(raw.as_bytes()).await.unwrap();
    assert_eq!(report.verdict, Verdict::Uncleanable, "{report:?}");
    assert_eq!(report.findings.len(), 1, "{report:?}");
    assert_eq!(report.findings[0].part, "", "found in the whole message");

    // Too large to be told plain from its header fields, it is parsed: the whole-message scan
    // still reads the body as it stands, and the part is then named.
    let large = format!(
        "From: ann@example.org\r\nSubject: hi\r\n\r\n{}{body}",
        "A line of the quarterly report.\r\n".repeat(10_000)
    );
    assert!(large.len() > 256 << 10);
    let report = scanner.scan(large.as_bytes()).await.unwrap();
    assert_eq!(report.verdict, Verdict::Uncleanable, "{report:?}");
    let parts: Vec<&str> = report.findings.iter().map(|f| f.part.as_str()).collect();
    assert_eq!(parts, ["1"], "{report:?}");

    // Base64-encoded, the body is decoded and scanned on its own.
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(&body);
    let raw = format!(
        "From: ann@example.org\r\nSubject: hi\r\nContent-Type: text/plain\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{encoded}\r\n"
    );
    let report = scanner.scan(raw.as_bytes()).await.unwrap();
    assert_eq!(report.verdict, Verdict::Uncleanable, "{report:?}");
    assert_eq!(report.findings[0].part, "1");
}

#[tokio::test]
async fn virus_outside_any_part_is_uncleanable() {
    let Some(address) = clamd() else { return };
    // In the preamble, where no mail client shows it and no part holds it.
    let mut raw = b"From: ann@example.org\r\nTo: bob@example.net\r\nSubject: hi\r\n\
                    MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
        .to_vec();
    raw.extend_from_slice(EICAR);
    raw.extend_from_slice(
        b"\r\n--b1\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b1\r\n\
          Content-Type: application/pdf; name=\"r.pdf\"\r\n\r\n%PDF-1.4\r\n--b1--\r\n",
    );
    let report = scanner(&address, Duration::from_secs(10))
        .scan(&raw)
        .await
        .unwrap();
    assert_eq!(report.verdict, Verdict::Uncleanable, "{report:?}");
    assert_eq!(report.findings.len(), 1, "{report:?}");
    assert_eq!(report.findings[0].part, "");
}

#[tokio::test]
async fn encrypted_zip_passes_unscanned_and_is_recorded() {
    let Some(address) = clamd() else { return };
    // EICAR inside: encrypted, it cannot be scanned, and it is delivered as it is.
    let archive = zip(
        &[("eicar.com", EICAR)],
        SimpleFileOptions::default().with_aes_encryption(zip::AesMode::Aes256, "s3cret"),
    );
    let raw = with_attachment("application/zip", "secret.zip", &archive);
    let report = scanner(&address, Duration::from_secs(10))
        .scan(&raw)
        .await
        .unwrap();
    assert_eq!(report.verdict, Verdict::Clean, "{report:?}");
    assert!(report.findings.is_empty(), "{report:?}");
    assert_eq!(report.unscanned_encrypted, ["secret.zip"]);
}

/// Over clamd's Unix socket each scan passes the message as a file descriptor (FILDES): clean,
/// infected attachment (in a message above the 1 MiB the memory file is written in at once),
/// infected body, a shorter clean one, virus in a zip, one after the other on the same session.
#[tokio::test]
async fn unix_socket_passes_descriptors() {
    let Some(_) = clamd() else { return };
    let Ok(socket) = std::env::var("CLAMD_SOCKET") else {
        eprintln!("CLAMD_SOCKET is not set: Unix socket test skipped");
        return;
    };
    let scanner = scanner(&socket, Duration::from_secs(10));
    scanner.ping().await.unwrap();
    let log = std::path::Path::new(&socket).with_file_name("clamd.log");
    let found_in_memory_files = |log: &std::path::Path| {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("memfd:passerelle-scan") && l.ends_with(" FOUND"))
            .count()
    };
    let before = found_in_memory_files(&log);

    let clean = with_attachment("application/pdf", "figures.pdf", PDF);
    assert_eq!(scanner.scan(&clean).await.unwrap().verdict, Verdict::Clean);

    let big = MessageBuilder::new()
        .from("ann@example.org")
        .to("bob@example.net")
        .subject("Scans")
        .text_body("See attached.\r\n")
        .attachment("application/pdf", "scan.pdf", vec![b'%'; 3 << 20])
        .attachment("application/octet-stream", "invoice.com", EICAR)
        .write_to_vec()
        .unwrap();
    let report = scanner.scan(&big).await.unwrap();
    let Verdict::Cleaned { message } = &report.verdict else {
        panic!("{report:?}")
    };
    assert_eq!(report.findings[0].filename.as_deref(), Some("invoice.com"));
    assert_eq!(
        part_named(message, "scan.pdf"),
        part_named(&big, "scan.pdf")
    );

    let mut body = b"From: ann@example.org\r\nSubject: hi\r\n\r\nHello,\r\n".to_vec();
    body.extend_from_slice(EICAR);
    body.extend_from_slice(b"\r\n");
    let report = scanner.scan(&body).await.unwrap();
    assert_eq!(report.verdict, Verdict::Uncleanable, "{report:?}");
    // Shorter and clean, right after it: the session's memory file is rewritten in place and
    // cut to the new length, so nothing of the infected message is left in it.
    let short = b"From: ann@example.org\r\nSubject: hi\r\n\r\nHello.\r\n";
    let report = scanner.scan(short).await.unwrap();
    assert_eq!(report.verdict, Verdict::Clean, "{report:?}");

    let archive = zip(&[("eicar.com", EICAR)], SimpleFileOptions::default());
    let raw = with_attachment("application/zip", "invoice.zip", &archive);
    let report = scanner.scan(&raw).await.unwrap();
    assert!(
        matches!(report.verdict, Verdict::Cleaned { .. }),
        "{report:?}"
    );

    // Three findings, each in a file clamd was handed (it logs a descriptor's file by its path).
    assert_eq!(found_in_memory_files(&log) - before, 3);
}

#[tokio::test]
async fn nothing_listening_is_unreachable_at_once() {
    let refused = support::Down::new();
    let scanner = scanner(&refused.addr.to_string(), Duration::from_secs(10));
    let started = Instant::now();
    let raw = with_attachment("application/pdf", "figures.pdf", PDF);
    let err = scanner.scan(&raw).await.unwrap_err();
    assert!(matches!(err, ScanError::Unreachable(_)), "{err:?}");
    assert!(matches!(
        scanner.ping().await.unwrap_err(),
        ScanError::Unreachable(_)
    ));
    let missing = Scanner::new(&VirusConfig {
        clamd: "/nonexistent/clamd.sock".into(),
        ..VirusConfig::default()
    });
    assert!(matches!(
        missing.scan(&raw).await.unwrap_err(),
        ScanError::Unreachable(_)
    ));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn silent_server_times_out() {
    // Accepts, reads nothing, answers nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let scanner = scanner(&address, Duration::from_millis(300));
    let started = Instant::now();
    let raw = with_attachment("application/pdf", "figures.pdf", PDF);
    let err = scanner.scan(&raw).await.unwrap_err();
    assert!(matches!(err, ScanError::Timeout), "{err:?}");
    assert!(matches!(
        scanner.ping().await.unwrap_err(),
        ScanError::Timeout
    ));
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(600) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    holder.abort();
}
