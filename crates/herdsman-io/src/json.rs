//! Small, fast JSON text helpers used on the hot path: string escaping, number recognition,
//! and whitespace removal for already-validated JSON.
//!
//! These helpers never validate JSON themselves (serde_json does that); they must never emit
//! invalid JSON for valid UTF-8 input.

/// For each byte: 0 = copy as is, otherwise the escape letter (`u` = `\u00XX`).
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[b'\n' as usize] = b'n';
    t[b'\r' as usize] = b'r';
    t[b'\t' as usize] = b't';
    t[0x08] = b'b';
    t[0x0c] = b'f';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `s` (valid UTF-8) as a quoted JSON string.
#[inline]
pub(crate) fn write_str(out: &mut Vec<u8>, s: &[u8]) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in s.iter().enumerate() {
        let esc = ESCAPE[b as usize];
        if esc == 0 {
            continue;
        }
        out.extend_from_slice(&s[start..i]);
        out.push(b'\\');
        out.push(esc);
        if esc == b'u' {
            out.extend_from_slice(b"00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xf) as usize]);
        }
        start = i + 1;
    }
    out.extend_from_slice(&s[start..]);
    out.push(b'"');
}

/// True when `s` is exactly a JSON number (RFC 8259 grammar: no leading `+`, no leading
/// zeros, digits on both sides of a `.`).
pub(crate) fn is_json_number(s: &[u8]) -> bool {
    let mut i = 0;
    let n = s.len();
    if i < n && s[i] == b'-' {
        i += 1;
    }
    if i >= n {
        return false;
    }
    if s[i] == b'0' {
        i += 1;
    } else if s[i].is_ascii_digit() {
        while i < n && s[i].is_ascii_digit() {
            i += 1;
        }
    } else {
        return false;
    }
    if i < n && s[i] == b'.' {
        i += 1;
        let d = i;
        while i < n && s[i].is_ascii_digit() {
            i += 1;
        }
        if i == d {
            return false;
        }
    }
    if i < n && (s[i] == b'e' || s[i] == b'E') {
        i += 1;
        if i < n && (s[i] == b'+' || s[i] == b'-') {
            i += 1;
        }
        let d = i;
        while i < n && s[i].is_ascii_digit() {
            i += 1;
        }
        if i == d {
            return false;
        }
    }
    i == n
}

/// Appends a CSV field value with type inference: empty → `null`, `true`/`false` → booleans,
/// text that is exactly a JSON number → that number, anything else → a string. Numbers are
/// kept verbatim, so `007` (not a JSON number) stays the string `"007"`.
#[inline]
pub(crate) fn write_inferred(out: &mut Vec<u8>, s: &[u8]) {
    if s.is_empty() {
        out.extend_from_slice(b"null");
    } else if s == b"true" || s == b"false" || is_json_number(s) {
        out.extend_from_slice(s);
    } else {
        write_str(out, s);
    }
}

/// Appends `json` (already validated JSON text) without insignificant whitespace.
pub(crate) fn write_compact(out: &mut Vec<u8>, json: &[u8]) {
    let mut in_str = false;
    let mut escaped = false;
    for &b in json {
        if in_str {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_str = false;
            }
        } else {
            match b {
                b' ' | b'\t' | b'\n' | b'\r' => {}
                b'"' => {
                    in_str = true;
                    out.push(b);
                }
                _ => out.push(b),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_roundtrip_through_serde() {
        let s = "a\"b\\c\n\t\r\u{1}\u{1f} é ☃ 😀";
        let mut out = Vec::new();
        write_str(&mut out, s.as_bytes());
        let back: String = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn numbers_follow_json_grammar() {
        for ok in [
            "0",
            "-0",
            "12",
            "1.5",
            "-1e10",
            "2E+3",
            "0.0e-1",
            "123456789012345678901234",
        ] {
            assert!(is_json_number(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "", "-", "01", "1.", ".5", "+1", "1e", "NaN", "inf", "1_000", " 1", "0x10",
        ] {
            assert!(!is_json_number(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn inference() {
        let cases = [
            ("", "null"),
            ("true", "true"),
            ("False", "\"False\""),
            ("007", "\"007\""),
            ("-2.5", "-2.5"),
        ];
        for (input, want) in cases {
            let mut out = Vec::new();
            write_inferred(&mut out, input.as_bytes());
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }

    #[test]
    fn compacts_outside_strings_only() {
        let mut out = Vec::new();
        write_compact(&mut out, br#" { "a b" : [ 1 , "x\" y" ] ,"c":"\\" } "#);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a b":[1,"x\" y"],"c":"\\"}"#
        );
    }
}
