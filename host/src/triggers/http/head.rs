//! The size of a request's head, which the trigger limits (431 in the API's error envelope).

use http::Request;

/// The size of `request`'s head as sent: request line, header lines and the blank line that
/// ends them, counted from what hyper parsed (so give or take the optional whitespace around
/// header values, which hyper trims).
pub fn head_size<B>(request: &Request<B>) -> usize {
    const CRLF: usize = 2;
    let uri = request.uri();
    // Origin form (`/path?query`), or absolute form (`http://host/path`) from a proxy.
    let target = uri
        .scheme_str()
        .map_or(0, |scheme| scheme.len() + "://".len())
        + uri
            .authority()
            .map_or(0, |authority| authority.as_str().len())
        + uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    let request_line = request.method().as_str().len() + 1 + target + 1 + "HTTP/1.1".len() + CRLF;
    let header_lines: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + ": ".len() + value.len() + CRLF)
        .sum();
    request_line + header_lines + CRLF
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_head_as_sent() {
        let wire = "GET /api/tickets?limit=5 HTTP/1.1\r\nhost: example.com\r\ncookie: a=b\r\n\r\n";
        let request = Request::get("/api/tickets?limit=5")
            .header("host", "example.com")
            .header("cookie", "a=b")
            .body(())
            .unwrap();
        assert_eq!(head_size(&request), wire.len());
    }

    #[test]
    fn counts_an_absolute_target_and_repeated_headers() {
        let wire = "POST http://example.com/x HTTP/1.1\r\nx: 1\r\nx: 22\r\n\r\n";
        let request = Request::post("http://example.com/x")
            .header("x", "1")
            .header("x", "22")
            .body(())
            .unwrap();
        assert_eq!(head_size(&request), wire.len());
    }
}
