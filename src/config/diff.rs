//! What a new policy file would change compared with the one a node runs: every key that was
//! added, removed or changed, by its path, so ops can review before restarting.

use std::collections::BTreeMap;
use toml::Value;

/// `+ key = value`, `- key = value` and `~ key: old → new` lines, sorted by key.
pub fn diff(old: &str, new: &str) -> Result<Vec<String>, String> {
    let parse = |t: &str| t.parse::<toml::Table>().map_err(|e| e.to_string());
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    flatten("", &Value::Table(parse(old)?), &mut a);
    flatten("", &Value::Table(parse(new)?), &mut b);
    let mut out = Vec::new();
    for (k, v) in &a {
        match b.get(k) {
            None => out.push(format!("- {k} = {v}")),
            Some(w) if w != v => out.push(format!("~ {k}: {v} → {w}")),
            Some(_) => {}
        }
    }
    for (k, w) in &b {
        if !a.contains_key(k) {
            out.push(format!("+ {k} = {w}"));
        }
    }
    out.sort_by(|x, y| x[2..].cmp(&y[2..]));
    Ok(out)
}

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        // Tables in arrays ([[listeners]]) by position; plain arrays as one value.
        Value::Array(items) if items.iter().all(Value::is_table) && !items.is_empty() => {
            for (i, item) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), item, out);
            }
        }
        other => {
            out.insert(prefix.to_owned(), other.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_every_change() {
        let old = "[[listeners]]\nname = \"mx\"\naddress = \"0.0.0.0:25\"\n[policy.spam]\ntag_at = 50\n\
                   [relay.domains.\"a.test\"]\nnext_hop = \"10.0.0.1:25\"\n";
        let new = "[[listeners]]\nname = \"mx\"\naddress = \"0.0.0.0:2525\"\n[policy.spam]\ntag_at = 60\n\
                   [relay.domains.\"b.test\"]\nnext_hop = \"10.0.0.2:25\"\n";
        let d = super::diff(old, new).unwrap();
        assert_eq!(
            d,
            [
                "~ listeners[0].address: \"0.0.0.0:25\" → \"0.0.0.0:2525\"",
                "~ policy.spam.tag_at: 50 → 60",
                "- relay.domains.a.test.next_hop = \"10.0.0.1:25\"",
                "+ relay.domains.b.test.next_hop = \"10.0.0.2:25\"",
            ]
        );
        assert!(super::diff(old, old).unwrap().is_empty());
    }
}
