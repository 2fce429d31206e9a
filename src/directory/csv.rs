//! The CSV file `passerelle directory import` reads, as an HR or LDAP export writes it:
//!
//! ```text
//! address,name,delegates
//! dr.martin@example.org,"Martin, Claire",secretariat@example.org;a.durand@example.org
//! a.durand@example.org,Alice Durand,
//! ```
//!
//! A header line names the columns, in any order, case-insensitive: `address` (required), `name`
//! and `delegates` (optional; delegates separated by `;`). Fields may be quoted with `"` (a
//! doubled `""` inside stands for one); a quoted field cannot span lines. Empty lines, a UTF-8
//! byte-order mark and CRLF line ends are accepted. Every address must be in one of our domains.
//! Every bad line is reported with its number, and then nothing is imported.

use super::check_address;
use std::collections::HashMap;
use std::fmt;

/// A file that parsed: its lines, and which optional columns it has.
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    pub lines: Vec<Line>,
    pub has_names: bool,
    pub has_delegates: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// From 1, counting the header.
    pub number: usize,
    /// Normalised (lower case).
    pub address: String,
    pub name: String,
    pub delegates: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Parses the whole file; `ours` says whether a domain is one of ours.
pub fn parse(text: &str, ours: impl Fn(&str) -> bool) -> Result<Parsed, Vec<LineError>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.trim().is_empty());
    let err = |line, message: String| vec![LineError { line, message }];
    let Some((header_line, header)) = lines.next() else {
        return Err(err(
            1,
            "empty file: expected a header line address,name,delegates".into(),
        ));
    };
    let columns = fields(header).map_err(|m| err(header_line, m))?;
    let mut index: HashMap<&'static str, usize> = HashMap::new();
    for (i, c) in columns.iter().enumerate() {
        let known = match c.trim().to_ascii_lowercase().as_str() {
            "address" => "address",
            "name" => "name",
            "delegates" => "delegates",
            other => {
                return Err(err(
                    header_line,
                    format!("unknown column \"{other}\" (expected address, name, delegates)"),
                ));
            }
        };
        if index.insert(known, i).is_some() {
            return Err(err(
                header_line,
                format!("column \"{known}\" appears twice"),
            ));
        }
    }
    let Some(&address_col) = index.get("address") else {
        return Err(err(
            header_line,
            "no \"address\" column in the header (expected address,name,delegates)".into(),
        ));
    };
    let name_col = index.get("name").copied();
    let delegates_col = index.get("delegates").copied();

    let mut parsed = Parsed {
        lines: Vec::new(),
        has_names: name_col.is_some(),
        has_delegates: delegates_col.is_some(),
    };
    let mut errors = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (number, text) in lines {
        match line(
            number,
            text,
            columns.len(),
            address_col,
            name_col,
            delegates_col,
            &ours,
        ) {
            Ok(l) => {
                if let Some(first) = seen.insert(l.address.clone(), number) {
                    errors.push(LineError {
                        line: number,
                        message: format!("{} is already on line {first}", l.address),
                    });
                } else {
                    parsed.lines.push(l);
                }
            }
            Err(message) => errors.push(LineError {
                line: number,
                message,
            }),
        }
    }
    if errors.is_empty() {
        Ok(parsed)
    } else {
        Err(errors)
    }
}

fn line(
    number: usize,
    text: &str,
    width: usize,
    address_col: usize,
    name_col: Option<usize>,
    delegates_col: Option<usize>,
    ours: &impl Fn(&str) -> bool,
) -> Result<Line, String> {
    let f = fields(text)?;
    if f.len() > width {
        return Err(format!(
            "{} fields, but the header names {width} columns",
            f.len()
        ));
    }
    // Trailing empty fields may be left out.
    let get = |col: Option<usize>| col.and_then(|c| f.get(c)).map_or("", |s| s.trim());
    let in_ours = |raw: &str| -> Result<String, String> {
        let address = check_address(raw)?;
        let domain = address.rsplit_once('@').map_or("", |(_, d)| d);
        if ours(domain) {
            Ok(address)
        } else {
            Err(format!(
                "{address} is not in one of our domains (relay.domains)"
            ))
        }
    };
    let raw = get(Some(address_col));
    if raw.is_empty() {
        return Err("no address".into());
    }
    let address = in_ours(raw)?;
    let mut delegates: Vec<String> = Vec::new();
    for d in get(delegates_col)
        .split(';')
        .map(str::trim)
        .filter(|d| !d.is_empty())
    {
        let d = in_ours(d).map_err(|e| format!("delegate: {e}"))?;
        if d == address {
            return Err(format!("{address} cannot be its own delegate"));
        }
        if !delegates.contains(&d) {
            delegates.push(d);
        }
    }
    Ok(Line {
        number,
        address,
        name: get(name_col).to_owned(),
        delegates,
    })
}

/// Splits one line into fields (RFC 4180 quoting, within one line).
fn fields(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.trim().is_empty() && !was_quoted => {
                field.clear();
                quoted = true;
                was_quoted = true;
            }
            (false, '"') => return Err("a quote inside an unquoted field".into()),
            (false, ',') => {
                out.push(std::mem::take(&mut field));
                was_quoted = false;
            }
            (false, c) if was_quoted && !c.is_whitespace() => {
                return Err("text after a closing quote".into());
            }
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return Err("a quoted field is not closed (fields cannot span lines)".into());
    }
    out.push(field);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(d: &str) -> bool {
        d == "example.org"
    }

    #[test]
    fn fields_with_quotes() {
        let cases: &[(&str, Result<Vec<&str>, ()>)] = &[
            ("a,b,c", Ok(vec!["a", "b", "c"])),
            ("a,,", Ok(vec!["a", "", ""])),
            ("\"Martin, Claire\",x", Ok(vec!["Martin, Claire", "x"])),
            ("\"say \"\"hi\"\"\"", Ok(vec!["say \"hi\""])),
            ("a, \"b\" ,c", Ok(vec!["a", "b", "c"])),
            ("\"open", Err(())),
            ("a\"b", Err(())),
            ("\"a\"b", Err(())),
        ];
        for (text, want) in cases {
            let got = fields(text).map_err(|_| ());
            let want = want
                .clone()
                .map(|v| v.iter().map(|s| s.trim().to_string()).collect());
            let got = got.map(|v| v.iter().map(|s| s.trim().to_string()).collect::<Vec<_>>());
            assert_eq!(got, want, "{text}");
        }
    }

    #[test]
    fn a_good_file() {
        let text = "\u{feff}Address,Name,Delegates\r\n\
                    Dr.Martin@Example.org,\"Martin, Claire\",secretariat@example.org; a@example.org\r\n\
                    \r\n\
                    a@example.org,Alice,\n\
                    b@example.org\n";
        let p = parse(text, ours).unwrap();
        assert!(p.has_names && p.has_delegates);
        assert_eq!(
            p.lines,
            vec![
                Line {
                    number: 2,
                    address: "dr.martin@example.org".into(),
                    name: "Martin, Claire".into(),
                    delegates: vec!["secretariat@example.org".into(), "a@example.org".into()],
                },
                Line {
                    number: 4,
                    address: "a@example.org".into(),
                    name: "Alice".into(),
                    delegates: vec![],
                },
                Line {
                    number: 5,
                    address: "b@example.org".into(),
                    name: "".into(),
                    delegates: vec![],
                },
            ]
        );
        let p = parse("address\nx@example.org\n", ours).unwrap();
        assert!(!p.has_names && !p.has_delegates);
    }

    #[test]
    fn every_bad_line_is_named() {
        let text = "address,name,delegates\n\
                    ok@example.org,Ok,\n\
                    not-an-address,Bad,\n\
                    x@elsewhere.test,Elsewhere,\n\
                    ok@example.org,Twice,\n\
                    y@example.org,Y,y@example.org\n\
                    z@example.org,Z,w@elsewhere.test\n\
                    q@example.org,\"open\n\
                    r@example.org,R,,extra\n";
        let errors = parse(text, ours).unwrap_err();
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![3, 4, 5, 6, 7, 8, 9], "{errors:?}");
        assert!(errors[1].to_string().contains("not in one of our domains"));
        assert!(errors[2].to_string().contains("already on line 2"));
    }

    #[test]
    fn bad_headers() {
        for (text, want) in [
            ("", "empty file"),
            ("name\nx@example.org", "no \"address\" column"),
            ("address,mail\nx@example.org", "unknown column \"mail\""),
            ("address,address\n", "appears twice"),
        ] {
            let e = parse(text, ours).unwrap_err();
            assert!(e[0].message.contains(want), "{text}: {e:?}");
        }
    }
}
