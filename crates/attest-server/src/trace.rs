//! W3C Trace Context for requests.
//!
//! A valid incoming `traceparent` keeps its trace id; the server starts its own span (a new
//! parent id) under it. An absent or invalid header (per the W3C rules: version `ff`, all-zero
//! ids, wrong lengths or non-lowercase-hex) starts a new trace. The resulting `traceparent` is
//! put in the request extensions as [`TraceContext`], passed to the lending service (so it lands
//! in the event metadata) and returned in the response's `traceparent` header.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use rand::RngCore;

/// The trace context of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// This server's span id, 16 lowercase hex digits.
    pub span_id: String,
    /// Trace flags (bit 0 = sampled).
    pub flags: u8,
}

impl TraceContext {
    /// The `traceparent` header value for this context (version 00).
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-{:02x}", self.trace_id, self.span_id, self.flags)
    }

    /// Continues `incoming` (a `traceparent` value) if valid, else starts a new sampled trace.
    pub fn continue_or_start(incoming: Option<&str>) -> TraceContext {
        let span_id = random_hex::<8>();
        match incoming.and_then(parse_traceparent) {
            Some((trace_id, flags)) => TraceContext {
                trace_id,
                span_id,
                flags,
            },
            None => TraceContext {
                trace_id: random_hex::<16>(),
                span_id,
                flags: 1,
            },
        }
    }
}

fn random_hex<const N: usize>() -> String {
    let mut b = [0u8; N];
    loop {
        rand::thread_rng().fill_bytes(&mut b);
        if b.iter().any(|&x| x != 0) {
            break;
        }
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Parses a `traceparent` value: `Some((trace_id, flags))` when valid per W3C Trace Context.
/// Future versions (not `00`, not `ff`) are accepted by their first four fields.
pub fn parse_traceparent(value: &str) -> Option<(String, u8)> {
    let value = value.trim();
    let mut parts = value.split('-');
    let version = parts.next()?;
    let trace_id = parts.next()?;
    let parent_id = parts.next()?;
    let flags = parts.next()?;
    let rest = parts.next();
    if !is_lower_hex(version, 2) || version == "ff" {
        return None;
    }
    if version == "00" && rest.is_some() {
        return None;
    }
    if !is_lower_hex(trace_id, 32) || trace_id.bytes().all(|b| b == b'0') {
        return None;
    }
    if !is_lower_hex(parent_id, 16) || parent_id.bytes().all(|b| b == b'0') {
        return None;
    }
    if !is_lower_hex(flags, 2) {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some((trace_id.to_string(), flags))
}

/// Middleware: resolves the trace context, stores it in the request extensions, opens a
/// tracing span with the trace id and sets the response's `traceparent` header.
pub async fn trace_context(mut req: Request, next: Next) -> Response {
    let incoming = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok());
    let ctx = TraceContext::continue_or_start(incoming);
    let header = ctx.traceparent();
    let span = tracing::info_span!(
        "http",
        method = %req.method(),
        path = %req.uri().path(),
        trace_id = %ctx.trace_id,
    );
    req.extensions_mut().insert(ctx);
    let mut res = tracing::Instrument::instrument(next.run(req), span).await;
    if let Ok(v) = HeaderValue::from_str(&header) {
        res.headers_mut().insert("traceparent", v);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_traceparent_is_continued() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ctx = TraceContext::continue_or_start(Some(tp));
        assert_eq!(ctx.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(ctx.span_id, "00f067aa0ba902b7");
        assert_eq!(ctx.flags, 1);
        assert!(parse_traceparent(&ctx.traceparent()).is_some());
    }

    #[test]
    fn invalid_traceparents_start_a_new_trace() {
        for bad in [
            "",
            "garbage",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
            let ctx = TraceContext::continue_or_start(Some(bad));
            assert_ne!(ctx.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
            assert!(parse_traceparent(&ctx.traceparent()).is_some());
        }
        // A future version may carry more fields.
        assert!(
            parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more")
                .is_some()
        );
    }
}
