//! The local client's way to a running monitor: the HTTP API on its unix socket `processes_{id}.sock`.
//!
//! Faster than a registry transaction plus polling, and no port needed. When no monitor listens (the socket is
//! absent or refuses), every call falls back to the registry, as before.

use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::remote::status_error;
use crate::Error;

/// The socket of one monitor.
#[derive(Debug, Clone)]
pub(crate) struct Socket {
    pub(crate) path: PathBuf,
}

impl Socket {
    /// One call: `None` when no monitor listens on the socket, or it went away before answering (use the
    /// registry), else the
    /// parsed 2xx answer or the error its status maps to. `id` names the process concerned, if any; `timeout`
    /// bounds each read and write (a monitor that accepts but never answers costs at most that).
    pub(crate) fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        id: Option<&str>,
        timeout: Duration,
    ) -> Option<Result<T, Error>> {
        let stream = pm_http::connect_unix(&self.path).ok()?;
        let body = body.map(|value| value.to_string().into_bytes());
        let transport = |err: std::io::Error| Error::Transport {
            url: format!("unix:{}{path}", self.path.display()),
            message: err.to_string(),
        };
        let res = match pm_http::blocking_exchange(stream, method, path, body.as_deref(), timeout) {
            Ok(res) => res,
            // Closed or reset before any answer: the monitor is going away (killed or stopping) or gone. The
            // registry is then the way, as with no monitor; the registry path does the right thing either way.
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::BrokenPipe
                ) =>
            {
                return None;
            }
            Err(err) => return Some(Err(transport(err))),
        };
        if !(200..300).contains(&res.status) {
            return Some(Err(status_error(res.status, &res.body, id)));
        }
        Some(serde_json::from_slice(&res.body).map_err(|err| Error::Server {
            status: res.status,
            message: format!("unexpected answer to {path}: {err}"),
        }))
    }
}
