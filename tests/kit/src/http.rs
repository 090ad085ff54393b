//! Raw HTTP/1.1 on a socket, as the proxies and stand-ins in front of (or instead of)
//! Prometheus read it: one head at a time, its Content-Length and its query string.

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Reads up to and including the blank line that ends an HTTP head; `None` when the peer
/// closed the connection first.
pub async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            return Ok(None);
        }
        head.push(byte[0]);
        if head.len() > 64 * 1024 {
            return Err(std::io::Error::other("head too large"));
        }
    }
    Ok(Some(head))
}

/// The Content-Length a head declares, if it declares one that parses.
pub fn content_length(head: &[u8]) -> Option<usize> {
    String::from_utf8_lossy(head).lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    })
}

/// A parameter of the request line's query string, percent-decoded.
pub fn query_param(head: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(head);
    let target = text.lines().next()?.split_whitespace().nth(1)?.to_string();
    let (_, query) = target.split_once('?')?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}
