//! The one error type of this crate: what the client, the helper and the listeners can fail with.

use std::net::SocketAddr;
use std::time::Duration;

/// Why an HTTP call, a bind or a server start failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL is not an absolute `http://host:port/...` URL.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it is refused.
        reason: String,
    },
    /// The request could not be sent or no response head came back (connection refused, reset, ...).
    #[error("request to {url} failed: {reason}")]
    Request {
        /// The URL requested.
        url: String,
        /// The underlying cause, with its source chain.
        reason: String,
    },
    /// No complete response arrived within the time allowed.
    #[error("request to {url} timed out after {timeout:?}")]
    Timeout {
        /// The URL requested.
        url: String,
        /// The time allowed.
        timeout: Duration,
    },
    /// The response body could not be read, or was larger than the client accepts.
    #[error("cannot read the response body of {url}: {reason}")]
    Body {
        /// The URL requested.
        url: String,
        /// Why the body was not read.
        reason: String,
    },
    /// A listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Any other I/O failure, such as starting a server on an already bound socket.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Formats an error and its whole source chain on one line (`outer: inner: root`).
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut res = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !res.ends_with(&text) {
            res.push_str(": ");
            res.push_str(&text);
        }
        source = cause.source();
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_joins_sources() {
        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let outer = Error::Io(inner);
        assert_eq!(chain(&outer), "refused");
        let bind = Error::Bind {
            addr: "127.0.0.1:1".parse().unwrap(),
            source: std::io::Error::new(std::io::ErrorKind::AddrInUse, "in use"),
        };
        assert_eq!(chain(&bind), "cannot listen on 127.0.0.1:1: in use");
    }
}
