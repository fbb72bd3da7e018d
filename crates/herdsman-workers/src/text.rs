//! How bytes from a child and system errors are quoted in messages.
//!
//! Messages end up on a terminal and in dead-letter files: this module must never put more
//! than a short, valid UTF-8 excerpt of a child's bytes into one.

use std::io;

/// The start of a line, quoted for a message.
pub(crate) fn quote_start(line: &[u8]) -> String {
    const MAX: usize = 80;
    let text = String::from_utf8_lossy(&line[..line.len().min(MAX * 4)]);
    let mut short: String = text.chars().take(MAX).collect();
    if short.len() < text.len() || line.len() > MAX * 4 {
        short.push('…');
    }
    format!("`{short}`")
}

/// An `io::Error` as a short phrase, without the "(os error N)" suffix.
pub(crate) fn io_phrase(err: &io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error") {
        Some(pos) => text[..pos].to_string(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_phrase_drops_os_error_suffix() {
        let err = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(io_phrase(&err), "No such file or directory");
    }

    #[test]
    fn trim_and_quote() {
        assert_eq!(b"  {\"a\":1}\r".trim_ascii(), b"{\"a\":1}");
        assert_eq!(b"   ".trim_ascii(), b"");
        assert_eq!(quote_start(b"abc"), "`abc`");
        let long = vec![b'z'; 500];
        let q = quote_start(&long);
        assert!(q.ends_with("…`"));
        assert_eq!(q.chars().count(), 80 + 3);
    }
}
